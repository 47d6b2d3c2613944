"""The deployment target is the user's: a real network converted by coremltools at iOS15/16/17/18,
compressed with every preset by the command line, keeps its specification version, loads in
coremltools, and decompresses (as coremltools itself decompresses our file) to what coremltools'
own optimize.coreml functions make of the same model with the same configuration:

* int8 / int4-block32 (linear_symmetric): the same scales; codes equal, except where coremltools'
  fp16 arithmetic rounds w / scale across a .5 tie (there ours is one code away and is the code
  nearest to w / stored scale: numeric/affine.py documents the difference);
* sparse-50: the same mask and values (no magnitude ties in these weights);
* palettize-4bit(-grouped), sparse+palettize: 16-entry LUTs of the same layout; ours are optimal
  1-D k-means, coremltools' are not, so the error of ours is never larger (the LUTs differ);
* canonicalize_quantization: no weight changes.

A preset the target cannot express is a one-line error naming the option that raises the
target; `--target iOS18` raises it (specification version 9)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ct = pytest.importorskip("coremltools")
cto = pytest.importorskip("coremltools.optimize.coreml")
from coremltools.converters.mil.frontend.milproto.load import load as milproto_load  # noqa: E402

from pipeline.cli import main  # noqa: E402

SPEC = {"iOS15": 6, "iOS16": 7, "iOS17": 8, "iOS18": 9}
# preset -> (the oldest target that has its forms, coremltools' configs doing the same)
PRESETS = {
    "int8": ("iOS16", lambda: [("quantize", cto.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity="per_channel"))]),
    "int4-block32": ("iOS18", lambda: [("quantize", cto.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=32))]),
    "palettize-4bit": ("iOS16", lambda: [("palettize", cto.OpPalettizerConfig(mode="kmeans", nbits=4))]),
    "palettize-4bit-grouped": ("iOS18", lambda: [("palettize", cto.OpPalettizerConfig(
        mode="kmeans", nbits=4, granularity="per_grouped_channel", group_size=16))]),
    "sparse-50": ("iOS16", lambda: [("prune", cto.OpMagnitudePrunerConfig(target_sparsity=0.5))]),
    "sparse+palettize": ("iOS18", lambda: [("prune", cto.OpMagnitudePrunerConfig(target_sparsity=0.5)),
                                           ("joint", cto.OpPalettizerConfig(mode="kmeans", nbits=4))]),
    "canonicalize_quantization": ("iOS15", lambda: []),
}


class Net(torch.nn.Module):
    """Two weights above coremltools' 2048-element threshold (a conv and a linear layer whose
    input axes split into blocks of 32 and channels into groups of 16) and one below it."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(32, 16, 3, padding=1)
        self.fc1 = torch.nn.Linear(64, 48)
        self.fc2 = torch.nn.Linear(48, 10)

    def forward(self, x):
        y = torch.nn.functional.avg_pool2d(torch.relu(self.conv(x)), 4).flatten(1)
        return self.fc2(torch.relu(self.fc1(y)))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The network converted once per target: {target: (path, MLModel)}."""
    torch.manual_seed(0)
    x = torch.randn(1, 32, 8, 8)
    traced = torch.jit.trace(Net().eval(), x)
    out = {}
    for target in SPEC:
        model = ct.convert(traced, inputs=[ct.TensorType(shape=x.shape, name="x")], convert_to="mlprogram",
                           minimum_deployment_target=getattr(ct.target, target), skip_model_load=True)
        path = tmp_path_factory.mktemp(target) / "net.mlpackage"
        model.save(str(path))
        out[target] = (path, ct.models.MLModel(str(path), skip_model_load=True))
    return out


def weights(model) -> dict:
    """{(consumer op, input): (dense weight as coremltools computes it, the constexpr op or None)}
    for every const-derived tensor input of more than 100 elements."""
    spec = model.get_spec()
    prog = milproto_load(spec, spec.specificationVersion, model.weights_dir)
    known, out = {}, {}
    for op in prog.functions["main"].operations:
        if op.op_type == "const":
            known[op.outputs[0].name] = (np.asarray(op.outputs[0].val), None)
        elif op.op_type.startswith("constexpr_"):
            vals = op.materialized_val_inference()
            vals = vals if len(op.outputs) > 1 else [vals]
            for v, val in zip(op.outputs, vals):
                known[v.name] = (np.asarray(val), op)
        else:
            for k, v in op.inputs.items():
                if not isinstance(v, (list, tuple)) and v.name in known and known[v.name][0].size > 100:
                    out[(op.name, k)] = known[v.name]
    return out


def coremltools_result(model, steps):
    for kind, config in steps:
        cfg = cto.OptimizationConfig(global_config=config)
        if kind == "quantize":
            model = cto.linear_quantize_weights(model, cfg)
        elif kind == "palettize":
            model = cto.palettize_weights(model, cfg)
        elif kind == "prune":
            model = cto.prune_weights(model, cfg)
        else:
            model = cto.palettize_weights(model, cfg, joint_compression=True)
    return model


def compress(capsys, src, out, preset, *extra):
    code = main(["compress", str(src), "-o", str(out), "--preset", preset, "-q", *extra])
    return code, capsys.readouterr().err.strip()


def _full(param, shape):
    """A scale / offset of either quantization op, repeated out to the weight's shape."""
    param = np.asarray(param, np.float64)
    if param.ndim == 0:
        return np.broadcast_to(param, shape)
    if param.ndim == 1:  # constexpr_affine_dequantize: per channel on axis 0 (what both tools emit)
        return np.broadcast_to(param.reshape((-1,) + (1,) * (len(shape) - 1)), shape)
    for axis, (d, p) in enumerate(zip(shape, param.shape)):
        param = np.repeat(param, d // p, axis=axis)
    return param


def _codes_scale(op):
    data = op.quantized_data if op.op_type == "constexpr_affine_dequantize" else op.data
    return np.asarray(data.val, np.int64), np.asarray(op.scale.val)


def check_quantized(w, mine, theirs):
    (q_m, s_m), (q_t, s_t) = _codes_scale(mine), _codes_scale(theirs)
    assert mine.op_type == theirs.op_type
    np.testing.assert_array_equal(s_m, s_t)  # the same stored scales
    scale = _full(s_m, w.shape)
    t = w.astype(np.float64) / scale
    # ours: the code nearest to w / stored scale (symmetric: zero point 0)
    np.testing.assert_array_equal(q_m, np.round(t))
    differ = q_m != q_t
    assert np.all(np.abs(q_m - q_t) <= 1)
    # coremltools' differ only at a .5 tie blurred by its fp16 arithmetic (relative 2**-9)
    tie = np.abs(np.abs(t - np.floor(t)) - 0.5)
    assert np.all(tie[differ] <= 2.0 ** -9 * np.maximum(np.abs(t[differ]), 1.0)), tie[differ].max()
    assert differ.mean() < 0.05


def check_palettized(w, dense_m, dense_t, op_m, op_t):
    lut_m = np.asarray(op_m.lut.val)
    assert lut_m.shape == np.asarray(op_t.lut.val).shape  # the same layout: per tensor or per group
    assert np.unique(dense_m).size <= 16 * max(1, lut_m.size // 16)
    w = w.astype(np.float64)
    sse_m, sse_t = np.sum((dense_m - w) ** 2), np.sum((dense_t - w) ** 2)
    assert sse_m <= sse_t * (1 + 1e-6), (sse_m, sse_t)


CHECKS = {"constexpr_affine_dequantize": "q", "constexpr_blockwise_shift_scale": "q",
          "constexpr_lut_to_dense": "lut", "constexpr_sparse_to_dense": "sparse"}


def check_same_weights(src_model, mine_model, theirs_model, preset):
    orig, mine, theirs = weights(src_model), weights(mine_model), weights(theirs_model)
    assert mine.keys() == theirs.keys() == orig.keys()
    for key, (w, _) in orig.items():
        (dense_m, op_m), (dense_t, op_t) = mine[key], theirs[key]
        assert dense_m.shape == dense_t.shape == w.shape, key
        if op_t is None:  # left alone by both (below the threshold, or nothing to do)
            assert op_m is None, key
            np.testing.assert_array_equal(dense_m, w)
            continue
        assert op_m is not None and op_m.op_type == op_t.op_type, (key, op_m, op_t.op_type)
        kind = CHECKS[op_t.op_type]
        if kind == "q":
            check_quantized(w, op_m, op_t)
        elif kind == "lut":
            check_palettized(w, dense_m.astype(np.float64), dense_t.astype(np.float64), op_m, op_t)
        elif preset == "sparse-50":
            np.testing.assert_array_equal(dense_m, dense_t)
        else:  # sparse + palettized values: the same mask, an error no larger than coremltools'
            np.testing.assert_array_equal(dense_m != 0, dense_t != 0)
            w64 = w.astype(np.float64)
            assert np.sum((dense_m - w64) ** 2) <= np.sum((dense_t - w64) ** 2) * (1 + 1e-6)


def _cases():
    for preset in PRESETS:
        for target in SPEC:
            yield pytest.param(preset, target, id=f"{preset}-{target}")


@pytest.mark.parametrize("preset, target", list(_cases()))
def test_every_preset_keeps_the_target(models, tmp_path, capsys, preset, target):
    src, model = models[target]
    floor, steps = PRESETS[preset]
    out = tmp_path / "out.mlpackage"
    code, err = compress(capsys, src, out, preset)
    if SPEC[target] < SPEC[floor]:
        lines = err.splitlines()
        # before iOS16 nothing compresses: the stage may name iOS16 first (then iOS18)
        named = {floor, "iOS16"} if target == "iOS15" else {floor}
        assert code != 0 and len(lines) == 1 and any(f"--target {t} " in lines[0] for t in named), err
        assert f"needs Core ML iOS" in lines[0] and f"targets {target}" in lines[0], err
        assert not out.exists()
        return
    assert code == 0, err
    written = ct.models.MLModel(str(out), skip_model_load=True)  # coremltools loads it
    assert written.get_spec().specificationVersion == model.get_spec().specificationVersion == SPEC[target]
    check_same_weights(model, written, coremltools_result(model, steps()), preset)


@pytest.mark.parametrize("preset", ["int4-block32", "palettize-4bit-grouped", "sparse+palettize", "int8"])
def test_target_option_raises_it(models, tmp_path, capsys, preset):
    """--target iOS18 on an iOS17 model: an iOS18 model, with what coremltools makes of the
    same network converted for iOS18."""
    src, _ = models["iOS17"]
    out = tmp_path / "out.mlpackage"
    code, err = compress(capsys, src, out, preset, "--target", "iOS18")
    assert code == 0, err
    written = ct.models.MLModel(str(out), skip_model_load=True)
    assert written.get_spec().specificationVersion == 9
    ios18 = models["iOS18"][1]
    check_same_weights(ios18, written, coremltools_result(ios18, PRESETS[preset][1]()), preset)


def test_target_cannot_be_lowered_nor_unknown(models, tmp_path, capsys):
    src, _ = models["iOS17"]
    code, err = compress(capsys, src, tmp_path / "a.mlpackage", "int8", "--target", "iOS16")
    assert code != 0 and "raised, not lowered" in err and len(err.splitlines()) == 1
    code, err = compress(capsys, src, tmp_path / "b.mlpackage", "int8", "--target", "iOS99")
    assert code == 2 and "iOS15, iOS16, iOS17, iOS18" in err
    code, err = compress(capsys, src, tmp_path / "c.onnx", "int8", "--target", "iOS18")
    assert code == 2 and "not a Core ML model" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_set_target_in_a_recipe_and_the_api(models, tmp_path):
    """target= as a pipeline step: raises the opset and converts the compressed weights the
    model already has to the iOS18 forms, exactly."""
    from ir.formats.coreml import export_coreml, import_coreml
    from ir.interpret import run_op
    from pipeline import Pipeline

    src, _ = models["iOS17"]
    int8 = Pipeline.preset("int8").run(import_coreml(src)).result
    raised = Pipeline.from_spec('set_target{target="iOS18"}').run(int8).result
    assert raised.main.opset == "iOS18" and int8.main.opset == "iOS17"
    kinds = lambda p: sorted(op.op_type for op in p.main.ops if op.op_type.startswith("constexpr"))  # noqa: E731
    assert kinds(int8) == ["constexpr_affine_dequantize"] * 2
    assert kinds(raised) == ["constexpr_blockwise_shift_scale"] * 2

    def dense(p):
        env, out = {}, {}
        for op in p.main.ops:
            if op.op_type == "const" or op.op_type.startswith("constexpr"):
                for v, val in zip(op.outputs, run_op(op, env)):
                    env[v.name] = val
                if op.op_type.startswith("constexpr"):
                    out[op.name] = env[op.outputs[0].name]
        return out
    before, after = dense(int8), dense(raised)
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])
    assert Pipeline.from_spec('set_target{target="iOS18"}').run(raised).result is raised  # nothing to do
    path = export_coreml(raised, tmp_path / "r.mlpackage")
    assert ct.models.MLModel(str(path), skip_model_load=True).get_spec().specificationVersion == 9
