"""The target rules the compression stages consult (stages/compression/forms.py), the per-target
op forms of the exporter (ir/formats/coreml/opforms.py) and set_target, on small IR programs."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from ir.builder import TensorSpec, program
from ir.formats.coreml.opforms import CoreMLExportError, for_target
from ir.interpret import run_op
from stages.compression import forms, set_target
from stages.compression.checked import ParameterError

RNG = np.random.default_rng(3)


def view(opset):
    return SimpleNamespace(name="w", opset=opset, function="main")


@pytest.mark.parametrize("opset, ok", [("iOS15", False), ("iOS16", False), ("iOS17", False),
                                       ("iOS18", True), ("iOS26", True), ("onnx", True)])
def test_require_ios18_names_the_option(opset, ok):
    if ok:
        forms.require_ios18(view(opset), "dtype=int4")
        return
    with pytest.raises(forms.TargetError) as e:
        forms.require_ios18(view(opset), "dtype=int4")
    msg = str(e.value)
    assert "\n" not in msg and "dtype=int4 needs Core ML iOS18" in msg and f"targets {opset}" in msg
    assert "--target iOS18" in msg and 'set_target{target="iOS18"}' in msg


def test_require_constexpr_and_lut_sizes():
    assert forms.require_constexpr(view("iOS16")) == 16
    with pytest.raises(forms.TargetError, match="--target iOS16"):
        forms.require_constexpr(view("iOS15"))
    for nbits in (1, 2, 4, 6, 8):
        forms.require_lut_nbits(view("iOS17"), nbits)
    with pytest.raises(forms.TargetError, match="3-bit LUT.*--target iOS18"):
        forms.require_lut_nbits(view("iOS17"), 3)
    forms.require_lut_nbits(view("iOS18"), 3)


def flat_sparse_program(opset):
    mask = (RNG.random((8, 6)) < 0.5).astype(np.uint8)

    @program(inputs={"x": TensorSpec((1, 6))}, opset=opset)
    def net(b, x):
        w = b.constexpr_sparse_to_dense(nonzero_data=RNG.standard_normal(int(mask.sum())).astype(np.float32),
                                        mask=b.const(mask.reshape(-1), dtype="uint1"),
                                        shape=np.array([8, 6], np.uint32), name="w")
        return b.linear(x=x, weight=w, name="fc")
    return net


def test_pre_ios18_joint_reports_flat_forms_before_ios18_only():
    op = next(o for o in flat_sparse_program("iOS17").main.ops if o.op_type == "constexpr_sparse_to_dense")
    kind, sources, var = forms.pre_ios18_joint(op, "iOS17", ("dense", "sparse"))
    assert (kind, var) == ("sparse", op.outputs[0]) and sources == {"end": op}
    assert forms.pre_ios18_joint(op, "iOS17", ("dense",)) is None  # the stage does not take it
    assert forms.pre_ios18_joint(op, "iOS18", ("dense", "sparse")) is None
    dense_const = next(o for o in flat_sparse_program("iOS17").main.ops if o.op_type == "const")
    assert forms.pre_ios18_joint(dense_const, "iOS17", ("dense", "sparse")) is None


def dense_weights(prog) -> dict:
    env, out = {}, {}
    for op in prog.main.ops:
        if op.op_type == "const" or op.op_type.startswith("constexpr_"):
            for v, val in zip(op.outputs, run_op(op, env)):
                env[v.name] = val
            if op.op_type.startswith("constexpr_"):
                out[op.outputs[0].name] = env[op.outputs[0].name]
    return out


def ios18_program():
    idx = RNG.integers(0, 16, (8, 6))
    q = RNG.integers(-127, 128, (8, 6))

    @program(inputs={"x": TensorSpec((1, 6))})
    def net(b, x):
        lut = b.constexpr_lut_to_dense(indices=b.const(idx, dtype="uint4"),
                                       lut=RNG.standard_normal((1, 1, 16, 1)).astype(np.float32), name="lut_w")
        qw = b.constexpr_blockwise_shift_scale(data=b.const(q, dtype="int8"),
                                               scale=(RNG.random((8, 1)) * 0.1).astype(np.float32), name="q_w")
        mask = (RNG.random((8, 6)) < 0.5).astype(np.uint8)
        sp = b.constexpr_sparse_to_dense(nonzero_data=RNG.standard_normal(int(mask.sum())).astype(np.float32),
                                         mask=b.const(mask, dtype="uint1"), name="sp_w")
        y = b.add(x=b.linear(x=x, weight=lut), y=b.linear(x=x, weight=qw))
        return b.add(x=y, y=b.linear(x=x, weight=sp))
    return net


@pytest.mark.parametrize("target", ["iOS16", "iOS17"])
def test_forms_go_down_and_up_exactly(target):
    prog = ios18_program()
    down = for_target(prog.main, target)
    kinds = sorted(op.op_type for op in down.ops if op.op_type.startswith("constexpr_"))
    assert kinds == ["constexpr_affine_dequantize", "constexpr_lut_to_dense", "constexpr_sparse_to_dense"]
    assert all(op.get("shape") is not None for op in down.ops if op.op_type in ("constexpr_lut_to_dense",
                                                                                "constexpr_sparse_to_dense"))
    up = for_target(down, "iOS18")
    assert sorted(op.op_type for op in up.ops if op.op_type.startswith("constexpr_")) == \
        ["constexpr_blockwise_shift_scale", "constexpr_lut_to_dense", "constexpr_sparse_to_dense"]
    want = dense_weights(prog)
    for fn in (down, up):
        got = dense_weights(prog.with_function(fn))
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    assert for_target(up, "iOS18") is up  # already in the target's forms


def test_forms_a_target_cannot_express():
    @program(inputs={"x": TensorSpec((1, 64))})
    def int4_blocks(b, x):
        w = b.constexpr_blockwise_shift_scale(data=b.const(RNG.integers(-8, 8, (8, 64)), dtype="int4"),
                                              scale=np.full((8, 2), 0.1, np.float32), name="w")
        return b.linear(x=x, weight=w)
    with pytest.raises(CoreMLExportError, match="needs Core ML iOS18.*--target iOS18"):
        for_target(int4_blocks.main, "iOS17")
    with pytest.raises(CoreMLExportError, match="needs Core ML iOS16"):
        for_target(ios18_program().main, "iOS15")


def test_set_target_raises_lowers_only_what_is_not_core_ml():
    prog = ios18_program()  # a builder program (iOS18): any target
    low = set_target(prog, target="iOS17")
    assert low.main.opset == "iOS17"
    assert any(op.op_type == "constexpr_affine_dequantize" for op in low.main.ops)
    from_coreml = type(low)(low.functions, low.attrs.set("source_format", "coreml"))
    assert set_target(from_coreml, target="iOS18").main.opset == "iOS18"
    with pytest.raises(ParameterError, match="raised, not lowered"):
        set_target(from_coreml, target="iOS16")
    assert set_target(from_coreml, target="iOS17") is from_coreml
    with pytest.raises(ParameterError, match="iOS15, iOS16"):
        set_target(target="iOS9")
    with pytest.raises(ParameterError, match="needs a target"):
        set_target(prog)
