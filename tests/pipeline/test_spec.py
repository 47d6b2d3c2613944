import json

import pytest
from hypothesis import given, strategies as st

from pipeline import Pipeline, PresetError, SpecError, presets, repeat_until_fixed_point
from pipeline.spec import format_step, parse
from tests.pipeline import pipeline_helpers as h


def test_parse_hand_written_spec():
    steps = parse(' a , b{n=4,mode=linear,xs=[1,2],s="x,y}"}, c{}')
    assert [s.name for s in steps] == ["a", "b", "c"]
    assert steps[1].params == {"n": 4, "mode": "linear", "xs": [1, 2], "s": "x,y}"}
    assert steps[2].params == {}


def test_spec_prints_back_and_round_trips():
    p = Pipeline([h.scale_const(name="w1", factor=3.0), h.identity, h.round_const(decimals=1)])
    text = p.spec()
    assert text == 'test_scale_const{factor=3.0,name="w1"},test_identity,test_round_const{decimals=1}'
    assert Pipeline.from_spec(text) == p
    assert Pipeline.from_spec(text).spec() == text


json_values = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6)
                           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3), max_leaves=6)


@given(st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True), json_values, max_size=4))
def test_any_json_params_round_trip_through_text(params):
    text = format_step("some_stage", params)
    [step] = parse(text)
    assert step.name == "some_stage"
    assert json.dumps(step.params, sort_keys=True) == json.dumps(params, sort_keys=True)


def test_composition_is_immutable_concatenation():
    a = Pipeline([h.identity])
    b = Pipeline.from_spec("test_scale_const{factor=2.0}")
    c = a + b
    assert len(a) == 1 and len(b) == 1 and len(c) == 2
    assert c.then(h.round_const).spec().endswith(",test_round_const")
    assert (a + h.round_const).stages[-1] is h.round_const
    assert c[1:].spec() == b.spec()
    with pytest.raises(AttributeError):
        c.foo = 1


@pytest.mark.parametrize("text, needle", [
    ("test_scale_const{factr=2.0}", "'factr'"),
    ("test_scale_const{factor=\"big\"}", "'factor'"),
    ("test_scale_const{factor=true}", "got bool"),
    ("no_such_stage", "'no_such_stage'"),
    ("test_scale_const{factor=}", "'factor'"),
    ("test_scale_const{factor=2.0", "'}'"),
    ("a,,b", "empty stage name"),
    ("test_identity{tag=[1,2}", "unbalanced"),
])
def test_spec_errors_name_the_problem(text, needle):
    with pytest.raises(SpecError) as e:
        Pipeline.from_spec(text)
    assert needle in str(e.value)
    assert isinstance(e.value, ValueError)


def test_fixed_point_combinator_in_text_and_code():
    p = Pipeline([repeat_until_fixed_point(Pipeline([h.identity]), max_rounds=3)])
    assert p.spec() == 'repeat_until_fixed_point{max_rounds=3,steps="test_identity"}'
    assert Pipeline.from_spec(p.spec()) == p


def test_presets_table_lists_the_required_names():
    for name in ["canonicalize_quantization", "int8", "int4-block32", "palettize-4bit",
                 "palettize-4bit-grouped", "sparse-50", "sparse+palettize"]:
        assert name in presets.names()
        assert parse(presets.spec_of(name))


def test_unknown_preset_and_missing_stage_errors(monkeypatch):
    with pytest.raises(PresetError, match="'nope'"):
        Pipeline.preset("nope")
    import pipeline.presets as table

    monkeypatch.setattr(table, "PRESETS", {**table.PRESETS, "ghost": "test_identity,ghost_stage{n=1}"})
    with pytest.raises(PresetError) as e:
        Pipeline.preset("ghost")
    assert "'ghost'" in str(e.value) and "ghost_stage" in str(e.value)


def test_preset_name_expands_inside_a_spec(monkeypatch):
    import pipeline.presets as table

    monkeypatch.setattr(table, "PRESETS", {**table.PRESETS, "twice": "test_identity,test_round_const"})
    p = Pipeline.from_spec("test_scale_const,twice")
    assert [s.name for s in p] == ["test_scale_const", "test_identity", "test_round_const"]


def test_real_presets_resolve_when_their_stages_exist():
    import stages

    have = set(stages.names())
    for name in presets.names():
        needed = {s.name for s in parse(presets.spec_of(name))}
        if needed <= have:
            assert len(Pipeline.preset(name)) == len(parse(presets.spec_of(name)))
        else:
            with pytest.raises(PresetError, match=name.replace("+", r"\+")):
                Pipeline.preset(name)


def test_seed_preset_follows_the_seed_pass_order():
    from stages.quantization import SEED_PASS_ORDER

    assert [s.name for s in parse(presets.spec_of("canonicalize_quantization"))] == list(SEED_PASS_ORDER)
