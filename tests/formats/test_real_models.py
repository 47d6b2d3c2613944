"""Real ONNX models through import, export and the int8 / int4-block32 presets.

The small members of the corpus (benchmarks/corpus/models.py): an OCR
direction classifier CNN whose weights are all Constant nodes (opset 11), the
first convolutions of an OCR recognizer with its character dictionary in
metadata_props (a slice made at test time from the shipped model), a
silero VAD whose LSTM weights are initializers read only inside If branches,
a file-type classifier (magika), a BERT-style encoder exported by torch and an
sklearn MLP with a ZipMap output. Each is skipped when the package that ships
or builds it is not installed. benchmarks/onnx_corpus.py runs the whole
corpus with every preset; these are the checks that must hold on every model.

A check that fails on today's code is marked xfail(strict=True) with the
reason, so that it turns into a failure (XPASS) the day it is fixed and the
mark must go.
"""
from __future__ import annotations

import functools
import os
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmarks.corpus import checks, models  # noqa: E402

pytest.importorskip("onnxruntime")

SMALL = ("ocr_cls", "ocr_rec_head", "vad_op15", "magika", "bert_tiny", "sklearn_mlp_zipmap")

# (model, check) -> why it fails on main today (benchmarks/onnx_corpus.py shows the same, per preset).
# (main 25d2d3a: the int4 file sizes and the ZipMap kernel landed; their marks XPASSed and went.)
KNOWN: dict = {}  # every check holds (the table counts a weight's decode nodes as its bytes)


def cases_for(check: str, presets=None) -> list:
    """SMALL (or SMALL x presets), each marked with its KNOWN failure where it has one."""
    def case(name, preset=None):
        key = (name, check if preset is None else f"{check} {preset}")
        values = (name,) if preset is None else (name, preset)
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN[key])] if key in KNOWN else []
        return pytest.param(*values, marks=marks, id="-".join(values))

    return [case(name, preset) for name in SMALL for preset in (presets or (None,))]


@pytest.fixture(scope="session")
def corpus_cache(tmp_path_factory) -> str:
    return os.environ.get("WEIGHTPRESS_CORPUS_CACHE") or str(tmp_path_factory.mktemp("corpus"))


@functools.lru_cache(maxsize=None)
def _reference(name: str, cache: str) -> tuple:
    model = models.get(name)
    try:
        path = models.locate(model, cache)
    except models.ModelUnavailable as e:
        return None, str(e)
    cases = model.inputs(seed=0)
    return (path, checks.load(path), cases, checks.run_onnxruntime(path, cases)), ""


def reference(name: str, cache: str) -> tuple:
    """(path, ModelProto, input cases, onnxruntime outputs of the original)."""
    ref, why = _reference(name, cache)
    if ref is None:
        pytest.skip(why)
    return ref


@functools.lru_cache(maxsize=None)
def imported(path: str):
    from ir.formats.onnx import import_onnx

    return import_onnx(path)


@functools.lru_cache(maxsize=None)
def exported(path: str, out_dir: str) -> str:
    from ir.formats.onnx.exporter import export_onnx

    out = os.path.join(out_dir, "roundtrip-" + os.path.basename(path))
    export_onnx(imported(path), out)
    return out


@functools.lru_cache(maxsize=None)
def compressed(path: str, preset: str, out_dir: str) -> tuple:
    """(output path, reported bytes before, reported bytes after) of `weightpress compress --preset`."""
    from pipeline import Pipeline
    from pipeline.models import save_model
    from pipeline.report import compare_files

    program = imported(path)
    result = Pipeline.preset(preset).run(program).result
    out = os.path.join(out_dir, f"{preset}-" + os.path.basename(path))
    save_model(result, out)
    changes = compare_files(program, result, path, out)  # what `compress` reports: bytes as written
    return (out, sum(c.before_bytes for c in changes), sum(c.after_bytes for c in changes if c.after))


@pytest.fixture(scope="session")
def out_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("corpus-out"))


# ---- the comparison itself can fail ------------------------------------------------

def _model_with_branch_constant():
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(2112, dtype=np.float32).reshape(33, 64), "w")
    branch = helper.make_graph([helper.make_node("Constant", [], ["c"], value=w)], "then",
                               [], [helper.make_tensor_value_info("c", TensorProto.FLOAT, [33, 64])])
    other = helper.make_graph([helper.make_node("Constant", [], ["d"], value=numpy_helper.from_array(
        np.zeros((32, 64), np.float32), "z"))], "else", [],
        [helper.make_tensor_value_info("d", TensorProto.FLOAT, [32, 64])])  # 2048: too small to be a weight
    graph = helper.make_graph([helper.make_node("If", ["flag"], ["y"], then_branch=branch, else_branch=other)],
                              "g", [helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [32, 64])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    helper.set_model_props(model, {"character": "abc"})
    return model


def _branch(model, which: str):
    return next(a.g for a in model.graph.node[0].attribute if a.name == which)


def test_proto_diff_sees_a_lost_branch_weight_metadata_and_type():
    a = _model_with_branch_constant()
    b = _model_with_branch_constant()
    del _branch(b, "then_branch").node[:]  # its Constant gone
    del b.metadata_props[:]
    b.graph.output[0].type.tensor_type.elem_type = 10  # float16
    diff = checks.proto_diff(a, b)
    assert [t.name for t in diff.weights_missing] == ["c"]
    assert diff.weights_missing[0].graph.endswith("then_branch")
    assert diff.metadata == ["metadata 'character' dropped"]
    assert diff.io == ["output y type FLOAT, 32x64 -> FLOAT16, 32x64"]
    assert not diff.clean and checks.proto_diff(a, a).clean


def test_a_symbolic_dim_named_once_is_an_unnamed_dim_but_a_shared_one_is_kept():
    a = _model_with_branch_constant()
    a.graph.input[0].type.tensor_type.shape.dim.add().dim_param = "batch"
    a.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    b = _model_with_branch_constant()
    b.graph.input[0].type.tensor_type.shape.dim.add().dim_param = "unk__1"
    b.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "unk__2"
    assert checks.proto_diff(a, b).io == ["input flag type BOOL, batch -> BOOL, ?",
                                          "output y type FLOAT, batchx64 -> FLOAT, ?x64"]
    c = _model_with_branch_constant()
    c.graph.input[0].type.tensor_type.shape.dim.add().dim_param = "n"
    c.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "n"
    assert checks.proto_diff(a, c).io == []  # renaming a shared dim is not a loss
    d = _model_with_branch_constant()
    d.graph.input[0].type.tensor_type.shape.dim.add().dim_param = "unk__9"
    d.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    assert checks.proto_diff(b, d).io == []  # once-named dims on both sides


def test_control_flow_weights_finds_branch_constants_and_captured_initializers():
    from onnx import helper, numpy_helper

    model = _model_with_branch_constant()
    found = checks.control_flow_weights(model)
    assert [t.name for t in found] == ["c"]
    captured = numpy_helper.from_array(np.ones((64, 64), np.float32), "r")
    model.graph.initializer.append(captured)
    _branch(model, "then_branch").node.append(helper.make_node("Identity", ["r"], ["r_out"]))
    assert sorted(t.name for t in checks.control_flow_weights(model)) == ["c", "r"]


# ---- real models --------------------------------------------------------------------

@pytest.mark.parametrize("name", cases_for("roundtrip_outputs"))
def test_roundtrip_runs_and_outputs_are_equal(name, corpus_cache, out_dir):
    path, _, cases, ref = reference(name, corpus_cache)
    runs = checks.run_onnxruntime(exported(path, out_dir), cases)
    err, where = checks.compare(ref, runs)
    assert err <= 1e-5, f"{name}: exported model differs from the original at {where}: rel {err:.3g}"


@pytest.mark.parametrize("name", cases_for("roundtrip_tensors"))
def test_roundtrip_keeps_every_initializer_and_constant(name, corpus_cache, out_dir):
    path, original, _, _ = reference(name, corpus_cache)
    diff = checks.proto_diff(original, checks.load(exported(path, out_dir)))
    assert not diff.tensors_missing, diff.summary()


@pytest.mark.parametrize("name", cases_for("roundtrip_model_data"))
def test_roundtrip_keeps_metadata_opsets_and_io_types(name, corpus_cache, out_dir):
    path, original, _, _ = reference(name, corpus_cache)
    diff = checks.proto_diff(original, checks.load(exported(path, out_dir)))
    assert not (diff.metadata or diff.opsets or diff.io), diff.summary()


@pytest.mark.parametrize("name", cases_for("interpreter"))
def test_interpreter_matches_onnxruntime(name, corpus_cache):
    from ir.interpret import evaluate

    path, _, cases, ref = reference(name, corpus_cache)
    program = imported(path)
    names = dict(program.attrs.get("onnx_io_names", ()))
    fn = program.functions["main"]
    to_ir = {names.get(v.name, v.name): v.name for v in fn.inputs}
    runs = [{names.get(k, k): checks.as_array(v)
             for k, v in evaluate(program, {to_ir[k]: v for k, v in case.items()}).items()} for case in cases]
    err, where = checks.compare(ref, runs)
    assert err <= 1e-4, f"{name}: interpreter vs onnxruntime at {where}: rel {err:.3g}"


@pytest.mark.parametrize("name", cases_for("int8"))
def test_int8_loads_runs_keeps_cosine_and_compresses_every_weight(name, corpus_cache, out_dir):
    path, original, cases, ref = reference(name, corpus_cache)
    out, _, _ = compressed(path, "int8", out_dir)
    cos, where = checks.compare(ref, checks.run_onnxruntime(out, cases), metric=checks.cosine, worst=min)
    assert cos >= 0.99, f"{name}: int8 output cosine {cos:.4f} at {where}"
    left, total = checks.weights_left(original, checks.load(out))
    assert not left, f"{name}: {len(left)}/{total} float weights left as they were: {[t.name for t in left][:5]}"


@pytest.mark.parametrize("name,preset", cases_for("disk", ("int8", "int4-block32")))
def test_on_disk_saving_is_the_reported_saving(name, preset, corpus_cache, out_dir):
    path, _, _, _ = reference(name, corpus_cache)
    out, before, after = compressed(path, preset, out_dir)
    reported = before - after
    on_disk = checks.on_disk_bytes(path) - checks.on_disk_bytes(out)
    assert reported > 0, f"{name}: {preset} reports no saving"
    assert on_disk >= 0.9 * reported, f"{name}: {preset} saved {on_disk} bytes on disk, reported {reported}"


@pytest.mark.parametrize("name", cases_for("int4_smaller"))
def test_int4_block32_file_is_smaller_than_int8(name, corpus_cache, out_dir):
    path, _, cases, _ = reference(name, corpus_cache)
    int8, _, _ = compressed(path, "int8", out_dir)
    int4, _, _ = compressed(path, "int4-block32", out_dir)
    checks.run_onnxruntime(int4, cases)  # loads and runs
    assert checks.on_disk_bytes(int4) < checks.on_disk_bytes(int8), \
        f"{name}: int4-block32 {checks.on_disk_bytes(int4)} B >= int8 {checks.on_disk_bytes(int8)} B"


@pytest.mark.parametrize("name,preset", cases_for("opset", ("int8", "int4-block32")))
def test_compressed_model_keeps_its_opset_imports(name, preset, corpus_cache, out_dir):
    """README: a compressed model keeps its own opset (the oldest written is 11)."""
    path, original, _, _ = reference(name, corpus_cache)
    out, _, _ = compressed(path, preset, out_dir)
    before, after = checks.opset_imports(original), checks.opset_imports(checks.load(out))
    expected = {d: max(v, checks.COMPRESSED_MIN_OPSET) if d == "ai.onnx" else v for d, v in before.items()}
    assert {d: after.get(d) for d in before} == expected, f"{name}: {preset} opsets {before} -> {after}"
