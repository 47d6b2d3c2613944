"""ir.fold: the value of const / constexpr chains (hand-computed), the program transform
(folding then evaluating == evaluating, bit for bit), and the exporter's wider fold."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ir.analysis import use_def
from ir.builder import Builder, TensorSpec
from ir.core import Program
from ir.fold import (NotFoldable, constant_values, evaluate_ops, fold_program, fold_value, is_constexpr,
                     is_foldable, static_value)
from ir.interpret import evaluate
from tests.ir.programs import inputs_for, programs

f16, f32 = np.float16, np.float32


def _quantized_lut_program():
    """x + lut_to_dense(uint2 indices, LUT = 0.5 * (int8 codes - 1)): a two-op chain."""
    b = Builder()
    x = b.input("x", TensorSpec((2, 2), "fp32"))
    codes = b.const(np.array([-1, 2, 5, 9], np.int8).reshape(1, 1, 4, 1), name="codes")
    lut = b.constexpr_blockwise_shift_scale(data=codes, scale=np.full((1, 1, 1, 1), 0.5, f32),
                                            offset=np.ones((1, 1, 1, 1), np.int8), name="lut")
    idx = b.const(np.array([[0, 3], [2, 1]], np.uint8), name="idx", dtype="uint2")
    w = b.constexpr_lut_to_dense(indices=idx, lut=lut, name="w")
    y = b.add(x=x, y=w, name="y")
    return Program.make([b.function("main", y)])


def test_fold_value_of_a_chain_is_the_hand_computed_weight():
    p = _quantized_lut_program()
    ud = use_def(p.main)
    w = ud.producers["w"].outputs[0]
    # LUT = 0.5 * ([-1, 2, 5, 9] - 1) = [-1, 0.5, 2, 4]; indices [[0, 3], [2, 1]]
    value = fold_value(w, ud.producer)
    assert value.dtype == f32 and value.tolist() == [[-1.0, 4.0], [2.0, 0.5]]
    assert is_foldable(w, ud.producer) and is_constexpr(ud.producers["w"])


def test_env_seeds_replacements_and_memoizes():
    p = _quantized_lut_program()
    ud = use_def(p.main)
    w = ud.producers["w"].outputs[0]
    env = {"lut": np.array([10, 20, 30, 40], f32).reshape(1, 1, 4, 1)}
    assert fold_value(w, ud.producer, env).tolist() == [[10, 40], [30, 20]]
    assert "w" in env and "codes" not in env  # the seeded LUT was used, its inputs never read


def test_a_value_that_depends_on_an_input_is_not_foldable():
    p = _quantized_lut_program()
    ud = use_def(p.main)
    y = ud.producers["y"].outputs[0]
    assert not is_foldable(y, ud.producer)
    assert not is_foldable(y, ud.producer, admit=lambda op: True)  # x is an input all the same
    unknown: set = set()
    assert static_value(y, ud.producer, unknown=unknown) is None and "y" in unknown
    with pytest.raises(NotFoldable, match="'y' is not a const"):
        fold_value(y, ud.producer)
    assert issubclass(NotFoldable, ValueError)


def test_admit_widens_the_fold_to_any_op():
    b = Builder()
    x = b.input("x", TensorSpec((2,), "fp32"))
    t = b.transpose(x=b.const(np.array([[1, 2], [3, 4]], f32)), perm=[1, 0], name="t")
    y = b.add(x=x, y=b.reduce_sum(x=t, axes=[0], name="s"), name="y")
    ud = use_def(b.function("main", y))
    s = ud.producers["s"].outputs[0]
    assert static_value(s, ud.producer) is None  # transpose is no constexpr
    assert static_value(s, ud.producer, admit=lambda op: True).tolist() == [3, 7]


def test_unknown_marks_every_value_on_the_path_to_an_input():
    b = Builder()
    x = b.input("x", TensorSpec((2,), "fp32"))
    a = b.add(x=x, y=np.float32(1), name="a")
    c = b.mul(x=b.const(np.ones(2, f32), name="one"), y=a, name="c")
    d = b.relu(x=c, name="d")
    ud = use_def(b.function("main", d))
    unknown: set = set()
    assert static_value(d, ud.producer, admit=lambda op: True, unknown=unknown) is None
    assert {"a", "c", "d", "x"} <= unknown and "one" not in unknown


def test_a_long_chain_folds_without_recursion():
    b = Builder()
    v = b.const(np.zeros(3, f32), name="v0")
    for i in range(3000):
        v = b.add(x=v, y=np.float32(1), name=f"v{i + 1}")
    ud = use_def(b.function("main", v))
    assert static_value(v, ud.producer, admit=lambda op: True).tolist() == [3000, 3000, 3000]


def test_evaluate_ops_runs_new_ops_only_as_far_as_the_target():
    b = Builder()
    idx = b.const(np.array([1, 0, 1], np.uint8), name="idx", dtype="uint1")
    w = b.constexpr_lut_to_dense(indices=b.const(np.array([[1, 0, 1]], np.uint8), dtype="uint1"),
                                 lut=b.const(np.array([-2, 3], f16).reshape(1, 1, 2, 1), name="lut"), name="w")
    fn = b.function("main", (w, idx))
    ops = list(fn.block.ops)
    assert evaluate_ops(ops, ops[-1].outputs[0]).tolist() == [[3, -2, 3]]
    assert evaluate_ops(ops, ops[-1].outputs[0], {"lut": np.array([7, 8], f16).reshape(1, 1, 2, 1)}).tolist() \
        == [[8, 7, 8]]


def test_constant_values_lists_consts_and_folded_outputs_only():
    p = _quantized_lut_program()
    values = constant_values(p.main)
    assert set(values) >= {"codes", "lut", "idx", "w"} and "y" not in values and "x" not in values
    assert values["lut"].reshape(-1).tolist() == [-1, 0.5, 2, 4]


def test_fold_program_replaces_the_chain_by_one_const():
    p = _quantized_lut_program()
    new, folded = fold_program(p)
    assert [op.op_type for op in new.main.block.ops] == ["const", "add"]
    w = new.main.block.ops[0]
    assert w.outputs[0].name == "w" and w.attrs["val"].tolist() == [[-1, 4], [2, 0.5]]
    assert not w.attrs["val"].flags.writeable
    assert dict(folded["w"]) == {"from": "constexpr_lut_to_dense", "dtype": "fp32", "shape": [2, 2]}
    x = {"x": np.array([[1, 2], [3, 4]], f32)}
    assert evaluate(new, x)["y"].tolist() == evaluate(p, x)["y"].tolist() == [[0, 6], [5, 4.5]]
    again, nothing = fold_program(new)
    assert again is new and nothing == {}


def test_a_joint_sparse_palettized_weight_folds_to_one_const():
    b = Builder()
    x = b.input("x", TensorSpec((1, 4), "fp32"))
    mask = b.const(np.array([[1, 0, 0, 1], [0, 1, 1, 0]], np.uint8), name="mask", dtype="uint1")
    mask_out, values = b.constexpr_lut_to_sparse(
        indices_mask=mask, indices_nonzero_data=b.const(np.array([1, 0, 1, 1], np.uint8), dtype="uint1"),
        lut=b.const(np.array([0.5, -4], f32).reshape(1, 1, 2, 1)), name="joint")
    w = b.constexpr_sparse_to_dense(nonzero_data=values, mask=mask_out, name="w")
    p = Program.make([b.function("main", b.linear(x=x, weight=w, name="y"))])
    new, folded = fold_program(p)
    assert set(folded) == {"w"}
    consts = [op for op in new.main.block.ops if op.op_type == "const"]
    assert len(consts) == 1 and consts[0].attrs["val"].tolist() == [[-4, 0, 0, 0.5], [0, -4, -4, 0]]


# ---- property: folding then evaluating == evaluating -------------------------------------

@st.composite
def _chain_weights(draw, b, shape):
    """A constexpr chain over consts making an fp32 weight of `shape` (rank 2)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    form = draw(st.sampled_from(["affine", "shift_scale", "lut", "quantized_lut", "sparse", "cast", "joint"]))
    rows, cols = shape
    if form == "affine":
        q = rng.integers(-128, 128, size=shape).astype(np.int8)
        return b.constexpr_affine_dequantize(quantized_data=q, zero_point=np.int8(draw(st.integers(-3, 3))),
                                             scale=rng.uniform(0.01, 1, rows).astype(f32), axis=0)
    if form == "shift_scale":
        return b.constexpr_blockwise_shift_scale(
            data=rng.integers(-128, 128, size=shape).astype(np.int8),
            scale=rng.uniform(0.01, 1, (rows, 1)).astype(f32),
            offset=rng.integers(-4, 4, (rows, 1)).astype(np.int8))
    nbits = draw(st.sampled_from([1, 2, 4]))
    idx = b.const(rng.integers(0, 2**nbits, size=shape).astype(np.uint8), dtype=f"uint{nbits}")
    if form == "lut":
        return b.constexpr_lut_to_dense(indices=idx, lut=rng.standard_normal((1, 1, 2**nbits, 1)).astype(f32))
    if form == "quantized_lut":
        lut = b.constexpr_blockwise_shift_scale(data=rng.integers(-128, 128, (1, 1, 2**nbits, 1)).astype(np.int8),
                                                scale=np.full((1, 1, 1, 1), 0.125, f32))
        return b.constexpr_lut_to_dense(indices=idx, lut=lut)
    mask = rng.integers(0, 2, size=shape).astype(np.uint8)
    n = int(mask.sum())
    if form == "sparse":
        return b.constexpr_sparse_to_dense(nonzero_data=rng.standard_normal(n).astype(f32),
                                           mask=b.const(mask, dtype="uint1"))
    if form == "cast":
        return b.constexpr_cast(source_val=rng.standard_normal(shape).astype(f16), output_dtype="fp32")
    mask_out, values = b.constexpr_lut_to_sparse(
        indices_mask=b.const(mask, dtype="uint1"),
        indices_nonzero_data=b.const(rng.integers(0, 2**nbits, n).astype(np.uint8), dtype=f"uint{nbits}"),
        lut=rng.standard_normal((1, 1, 2**nbits, 1)).astype(f32))
    return b.constexpr_sparse_to_dense(nonzero_data=values, mask=mask_out)


@st.composite
def _weighted_programs(draw):
    rows, cols = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    b = Builder()
    x = b.input("x", TensorSpec((2, cols), "fp32"))
    y = x
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            y = b.linear(x=y, weight=draw(_chain_weights(b, (cols, cols))))
        else:
            y = b.add(x=y, y=b.relu(x=draw(_chain_weights(b, (1, cols)))))
    return Program.make([b.function("main", b.linear(x=y, weight=draw(_chain_weights(b, (rows, cols)))))])


def _same_bits(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes() for k in a)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=st.one_of(_weighted_programs(), programs()), seed=st.integers(0, 2**16))
def test_folding_then_evaluating_equals_evaluating(p, seed):
    new, folded = fold_program(p)
    inputs = inputs_for(p, seed)
    assert _same_bits(evaluate(new, inputs), evaluate(p, inputs))
    assert not any(is_constexpr(op) for op in new.main.block.walk())  # every chain here is over consts
    assert (new is p) == (not folded)
