"""The one stage object: typed options from the signature, one printer whose text the
spec parser reads back to an equal stage, refused double registration, stable keys."""
from __future__ import annotations

import re
from typing import Literal, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stages
from pipeline import Pipeline, SpecError
from stages.base import REGISTRY, Option, Stage, StageError, stage
from stages.compression.numeric.palettize import GRANULARITIES, NBITS

_JSON = (bool, int, float, str, list, tuple, dict)


def _plain(program, *, n: Optional[Literal[1, 2, 4]] = None, factor=1.5, name="w", flag=False,
           axes=(0, 1), context=None):
    return program


PLAIN = Stage("plain_test_stage", _plain, "1")


def test_options_come_from_the_keyword_signature_and_annotations():
    assert PLAIN.options == (Option("n", None, int, (1, 2, 4)), Option("factor", 1.5, float),
                             Option("name", "w", str), Option("flag", False, bool), Option("axes", (0, 1), tuple))
    nbits = stages.get("palettize_weights").option("nbits")
    assert nbits.choices == NBITS and nbits.type is int
    assert stages.get("affine_quantize_weights").option("dtype").choices == ("int8", "uint8", "int4", "uint4")


@pytest.mark.parametrize("params, words", [
    ({"n": 3}, "3 is not one of [1, 2, 4]"),
    ({"factor": "big"}, "expected float, got str"),
    ({"flag": 1}, "expected bool, got int"),
    ({"n": True}, "expected int, got bool"),
    ({"nme": "x"}, "unknown parameter 'nme'"),
])
def test_bind_refuses_a_wrong_option_naming_it(params, words):
    with pytest.raises(StageError, match=re.escape(words)):
        PLAIN.bind(**params)


def test_bind_accepts_ints_for_floats_and_makes_a_list_a_tuple():
    bound = PLAIN.bind(factor=2, axes=[1, 0])
    assert bound.params["factor"] == 2 and bound.params["axes"] == (1, 0)
    assert bound == PLAIN.bind(factor=2, axes=(1, 0))


def test_a_spec_with_a_wrongly_typed_value_names_stage_and_parameter():
    with pytest.raises(SpecError, match="parameter 'nbits' of stage 'palettize_weights': expected int, got str"):
        Pipeline.from_spec('palettize_weights{nbits="4"}')
    with pytest.raises(SpecError, match="5 is not one of"):
        Pipeline.from_spec("palettize_weights{nbits=5}")


def test_registering_a_stage_name_twice_is_refused():
    before = REGISTRY["dead_code_elimination"]
    with pytest.raises(StageError, match="'dead_code_elimination' is already registered"):
        stage("dead_code_elimination")(_plain)
    assert REGISTRY["dead_code_elimination"] is before


def _defaults_bound(st: Stage) -> Stage:
    return st.bind(**{o.name: o.default for o in st.options
                      if o.default is not None and isinstance(o.default, _JSON)})


@pytest.mark.parametrize("name", stages.names())
def test_every_registered_stage_spec_round_trips(name):
    st = _defaults_bound(stages.get(name))
    (back,) = Pipeline.from_spec(st.spec()).stages
    assert back == st and back.key() == st.key() and back.spec() == st.spec()


@settings(max_examples=60, deadline=None)
@given(nbits=st.sampled_from(NBITS), mode=st.sampled_from(("kmeans", "uniform")),
       granularity=st.sampled_from(GRANULARITIES), group_size=st.integers(1, 256),
       per_channel_scale=st.booleans())
def test_palettize_spec_print_parse_equal(nbits, mode, granularity, group_size, per_channel_scale):
    st_ = stages.get("palettize_weights")(nbits=nbits, mode=mode, granularity=granularity, group_size=group_size,
                                          enable_per_channel_scale=per_channel_scale)
    (back,) = Pipeline.from_spec(st_.spec()).stages
    assert back == st_ and back.key() == st_.key()


def test_cache_keys_did_not_move():
    """Keys computed by the stage object before the redesign: DiskCache entries stay valid."""
    assert stages.get("palettize_weights")(nbits=4).key() == \
        "f6551b432d6f3ecd6df1b4f06ced654e239c51f4a5c414c9f4707b87b825ed0b"
    assert stages.get("affine_quantize_weights")(dtype="int4", granularity="per_block").key() == \
        "18693561b8af66eb50305334a1f1f93eed79a608d41b7dc88264012198331f7f"
    assert stages.get("dead_code_elimination").key() == \
        "0614db20e712a7ebdb66ea485d036bc37b7b42198a72377378531d935071dd79"


def test_one_printer_for_stages_and_pipelines():
    st_ = stages.get("palettize_weights")(nbits=4, mode="uniform")
    assert st_.spec() == 'palettize_weights{mode="uniform",nbits=4}'
    assert Pipeline([st_]).spec() == st_.spec()


def test_cli_choices_are_the_stage_choices():
    from pipeline.cli import build_parser

    actions = {a.dest: a for a in build_parser()._subparsers._group_actions[0].choices["compress"]._actions}
    assert tuple(actions["palettize"].choices) == stages.get("palettize_weights").option("nbits").choices
    assert tuple(actions["quantize"].choices) == stages.get("affine_quantize_weights").option("dtype").choices


def test_contract_is_a_field_and_a_decorator_keyword():
    from stages.compression.checked import compression_stage

    contract = object()
    try:
        plain = stage("contract_test_stage", contract=contract)(_plain)
        checked = compression_stage("contract_test_stage_checked", lambda params: None, contract=contract)(_plain)
        assert plain.bind(n=2).contract is contract and checked.bind(n=2).contract is contract
    finally:
        REGISTRY.pop("contract_test_stage", None)
        REGISTRY.pop("contract_test_stage_checked", None)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_affine_spec_print_parse_equal(data):
    affine = stages.get("affine_quantize_weights")
    params = {name: data.draw(st.sampled_from(affine.option(name).choices)) for name in ("mode", "dtype", "granularity")}
    params["block_size"] = data.draw(st.integers(1, 512))
    bound = affine(**params)
    (back,) = Pipeline.from_spec(bound.spec()).stages
    assert back == bound and back.key() == bound.key()
