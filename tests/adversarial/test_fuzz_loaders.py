"""Hypothesis fuzzing of every loader on mutated bytes of valid files: the .wpz reader (raw
bytes, and graph.json rewritten inside a well-formed zip), a DiskCache's graph, entry and
tensor files, the text form, ONNX through load_model, TOML / JSON recipes and pipeline
specs. Each either reads back something valid or raises its documented ValueError
subclass: nothing else escapes, nothing outside the cache is touched, and no hostile
declaration gets to allocate (the address space is capped while they run)."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from ir.validate import validate
from tests.adversarial import generators as gen
from tests.adversarial.conftest import address_space_cap, linux_only

CAP = 1 << 30  # a loader may map at most 1 GiB more while a mutated file is read
FUZZ = settings(suppress_health_check=list(HealthCheck), deadline=None)


class _Corpus(dict):
    def __repr__(self):  # hypothesis prints the fixtures of a failing example: keep it short
        return "corpus"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The valid files the mutations start from."""
    from ir.serialize import save
    from ir.text import print_program
    from pipeline import DiskCache, Pipeline
    from stages.compression import affine_quantize_weights

    d = tmp_path_factory.mktemp("corpus")
    net = gen.small_program(width=64)
    save(net, d / "m.wpz")
    cache = DiskCache(d / "cache")
    result = Pipeline([affine_quantize_weights(dtype="int8")]).run(net, cache=cache).result
    gen.write_onnx(gen.onnx_mlp(width=8), d / "m.onnx")
    graph, members = gen.wpz_parts(d / "m.wpz")
    return _Corpus({
        "dir": d, "wpz": (d / "m.wpz").read_bytes(), "graph": json.dumps(graph).encode(), "members": members,
        "text": print_program(net, inline_limit=1 << 20).encode(), "onnx": (d / "m.onnx").read_bytes(),
        "cache": d / "cache", "cached": result.digest,
        "recipe_toml": b'[[stages]]\nstage = "palettize_weights"\nnbits = 4\n\n[[stages]]\nstage = "dead_code_elimination"\n',
        "recipe_json": b'{"stages": [{"stage": "affine_quantize_weights", "dtype": "int8"}, '
                       b'{"stage": "sparsify_weights", "mode": "percentile_based", "target_percentile": 0.5}]}',
        "spec": b'sparsify_weights{mode="percentile_based",target_percentile=0.5},palettize_weights{nbits=4}',
    })


def _valid_or(expected, fn):
    """fn() returns a program that validates, or raises one of `expected`."""
    try:
        out = fn()
    except expected:
        return None
    if out is not None and hasattr(out, "functions"):
        validate(out)
    return out


@linux_only
@FUZZ
@given(steps=gen.mutation_steps())
def test_wpz_bytes(corpus, tmp_path_factory, steps):
    from ir.serialize import SerializationError, load

    path = tmp_path_factory.mktemp("wpz") / "f.wpz"
    path.write_bytes(gen.apply_mutations(corpus["wpz"], steps))
    with address_space_cap(CAP):
        _valid_or(SerializationError, lambda: load(path))


@linux_only
@FUZZ
@given(steps=gen.mutation_steps())
def test_wpz_graph_json(corpus, tmp_path_factory, steps):
    """The graph mutated, the zip around it intact (so the parser, not the CRC, decides)."""
    from ir.serialize import SerializationError, load

    path = tmp_path_factory.mktemp("wpz") / "g.wpz"
    gen.write_wpz(path, gen.apply_mutations(corpus["graph"], steps), corpus["members"])
    with address_space_cap(CAP):
        _valid_or(SerializationError, lambda: load(path))


@linux_only
@FUZZ
@given(steps=gen.mutation_steps(), which=gen.st_sampled(("graph", "entry", "tensor")))
def test_cache_files(corpus, tmp_path_factory, steps, which):
    import shutil

    from pipeline import DiskCache

    root = tmp_path_factory.mktemp("cache") / "c"
    shutil.copytree(corpus["cache"], root)
    outside = {p: p.read_bytes() for p in root.parent.parent.iterdir() if p.is_file()}
    target = {"graph": gen.graph_files(root)[-1], "entry": gen.entry_files(root)[0],
              "tensor": sorted((root / "tensors").rglob("*.bin"))[0]}[which]
    target.write_bytes(gen.apply_mutations(target.read_bytes(), steps))
    with address_space_cap(CAP), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cache = DiskCache(root)
        for d in [p.stem for p in gen.graph_files(root)]:
            _valid_or((), lambda: cache.get_program(d))
        doc = json.loads(gen.entry_files(corpus["cache"])[0].read_text())
        cache.lookup(doc["input"], doc["key"])
    assert {p: p.read_bytes() for p in root.parent.parent.iterdir() if p.is_file()} == outside


@linux_only
@FUZZ
@given(steps=gen.mutation_steps())
def test_text_form(corpus, steps):
    from ir.text import TextParseError, parse_program

    text = gen.apply_mutations(corpus["text"], steps).decode("utf-8", errors="replace")
    with address_space_cap(CAP):
        _valid_or(TextParseError, lambda: parse_program(text))


@linux_only
@FUZZ
@given(steps=gen.mutation_steps())
def test_onnx_through_load_model(corpus, tmp_path_factory, steps):
    from pipeline.models import ModelFileError, load_model

    path = tmp_path_factory.mktemp("onnx") / "f.onnx"
    path.write_bytes(gen.apply_mutations(corpus["onnx"], steps))
    with address_space_cap(CAP):
        _valid_or(ModelFileError, lambda: load_model(path))


@FUZZ
@given(steps=gen.mutation_steps(), kind=gen.st_sampled(("recipe_toml", "recipe_json")))
def test_recipes(corpus, tmp_path_factory, steps, kind):
    from pipeline import Pipeline, PipelineError

    path = tmp_path_factory.mktemp("recipe") / ("r.toml" if kind == "recipe_toml" else "r.json")
    path.write_bytes(gen.apply_mutations(corpus[kind], steps))
    _valid_or(PipelineError, lambda: Pipeline.from_recipe(path))


@FUZZ
@given(steps=gen.mutation_steps())
def test_pipeline_specs(corpus, steps):
    from pipeline import Pipeline, PipelineError

    from stages.base import StageError
    from stages.compression.numeric.errors import CompressionError

    spec = gen.apply_mutations(corpus["spec"], steps).decode("utf-8", errors="replace")
    _valid_or((PipelineError, StageError, CompressionError), lambda: Pipeline.from_spec(spec))
