"""canonicalize_quantized_lut_pattern: lut -> shift_scale becomes shift_scale(LUT) -> lut."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from ir import Program
from ir.builder import TensorSpec, build_function, program
from ir.interpret import evaluate
from stages.quantization import canonicalize_quantized_lut_pattern as canonicalize
from tests.stages.equivalence import assert_equivalent, assert_idempotent

F16 = np.float16


def depalettize_first(b, idx_shape, lut_blocks, scale_shape, nbits=2, vs=1, vector_axis=None, offset=False,
                      seed=0, lut_name="constexpr_lut_to_dense_0", scale_name="conv1.weight", lut=None):
    rng = np.random.default_rng(seed)
    idx = b.const(rng.integers(0, 2 ** nbits, idx_shape).astype(np.uint8), dtype=f"uint{nbits}", name="idx")
    if lut is None:
        lut = b.const(rng.integers(-128, 128, tuple(lut_blocks) + (2 ** nbits, vs)).astype(np.int8), name="lut8")
    dense = b.constexpr_lut_to_dense(indices=idx, lut=lut, vector_axis=vector_axis, name=lut_name)
    scale = rng.uniform(0.01, 0.1, scale_shape).astype(F16)
    off = rng.integers(-3, 4, scale_shape).astype(np.int8) if offset else None
    return b.constexpr_blockwise_shift_scale(data=dense, scale=scale, offset=off, name=scale_name)


def _types(prog, fn="main"):
    return [op.op_type for op in prog.functions[fn].ops if op.op_type != "const"]


def _ops(prog):
    return {op.name: op for op in prog.main.block.walk()}


def _net(**kw):
    @program(inputs={"x": TensorSpec((2, 4), "fp16")})
    def net(b, x):
        return b.linear(x=x, weight=depalettize_first(b, **kw), name="fc")
    return net


X = np.linspace(-1, 1, 8, dtype=F16).reshape(2, 4)


def _same(before, after, inputs=None, fn="main"):
    inputs = {"x": X} if inputs is None else inputs
    a, b = evaluate(before, inputs, fn), evaluate(after, inputs, fn)
    assert all(np.array_equal(a[k], b[k]) for k in a) and list(a) == list(b)


# ---- the seed's example -----------------------------------------------------------------

def test_per_tensor_scale_moves_onto_the_lut():
    before = _net(idx_shape=(4, 4), lut_blocks=(1, 1), scale_shape=(1, 1), offset=True)
    after = canonicalize(before)
    assert _types(after) == ["constexpr_blockwise_shift_scale", "constexpr_lut_to_dense", "linear"]
    ops = _ops(after)
    new_lut = ops["conv1.weight"]  # the meaningful name stays on the final value
    assert new_lut.op_type == "constexpr_lut_to_dense"
    first = next(o for o in after.main.ops if o.outputs[0] is new_lut.lut)
    assert first.data.shape == (1, 1, 4, 1) and first.data.dtype == "int8"
    assert first.scale.shape == (1, 1, 1, 1) and first.offset.shape == (1, 1, 1, 1)
    assert first.name != "constexpr_lut_to_dense_0"  # an auto name does not travel to another op type
    _same(before, after)


def test_per_channel_scale_repeats_the_lut():
    # 2 LUTs (each for 2 rows), 4 per-row scales: the LUT is repeated to 4 blocks
    before = _net(idx_shape=(4, 4), lut_blocks=(2, 1), scale_shape=(4, 1))
    after = canonicalize(before)
    first = next(o for o in after.main.ops if o.op_type == "constexpr_blockwise_shift_scale")
    lut8 = _ops(before)["lut8"].outputs[0].val
    assert first.data.shape == (4, 1, 4, 1)
    assert np.array_equal(first.data.val, np.repeat(lut8, 2, axis=0))
    _same(before, after)


def test_lut_finer_than_the_scale_is_not_repeated():
    before = _net(idx_shape=(4, 4), lut_blocks=(4, 1), scale_shape=(2, 1))
    after = canonicalize(before)
    first = next(o for o in after.main.ops if o.op_type == "constexpr_blockwise_shift_scale")
    assert first.data.shape == (4, 1, 4, 1) and first.scale.shape == (2, 1, 1, 1)
    _same(before, after)


def test_meaningful_lut_name_goes_to_the_new_shift_scale():
    after = canonicalize(_net(idx_shape=(4, 4), lut_blocks=(1, 1), scale_shape=(1, 1), lut_name="fc.palette"))
    assert _ops(after)["fc.palette"].op_type == "constexpr_blockwise_shift_scale"


def test_vector_lut_keeps_its_vector_axis():
    # indices [2, 4] with 2-vectors along axis 0: dense [4, 4]; one scale per vector row
    before = _net(idx_shape=(2, 4), lut_blocks=(1, 1), scale_shape=(2, 1), vs=2, vector_axis=0)
    after = canonicalize(before)
    assert _ops(after)["conv1.weight"].vector_axis.val == 0
    _same(before, after)


def test_vector_lut_with_a_scale_inside_a_vector_refused():
    before = _net(idx_shape=(2, 4), lut_blocks=(1, 1), scale_shape=(4, 1), vs=2, vector_axis=0)
    assert canonicalize(before) is before


# ---- refusals -----------------------------------------------------------------------------

def test_non_const_lut_that_needs_repeating_refused():
    @program(inputs={"x": TensorSpec((2, 4), "fp16"), "lut": TensorSpec((2, 1, 4, 1), "int8")})
    def net(b, x, lut):
        return b.linear(x=x, weight=depalettize_first(b, (4, 4), None, (4, 1), lut=lut))
    assert canonicalize(net) is net


def test_non_const_lut_per_tensor_is_fine():
    @program(inputs={"x": TensorSpec((2, 4), "fp16"), "lut": TensorSpec((1, 1, 4, 1), "int8")})
    def net(b, x, lut):
        return b.linear(x=x, weight=depalettize_first(b, (4, 4), None, (1, 1), lut=lut))
    after = canonicalize(net)
    assert _types(after) == ["constexpr_blockwise_shift_scale", "constexpr_lut_to_dense", "linear"]
    _same(net, after, {"x": X, "lut": np.arange(-2, 2, dtype=np.int8).reshape(1, 1, 4, 1)})


def test_scale_blocks_not_a_multiple_of_lut_blocks_refused():
    # 6 rows, 2 LUT blocks (3 rows each), 3 scale blocks (2 rows each): no LUT-level scale
    @program(inputs={"x": TensorSpec((2, 4), "fp16")})
    def net(b, x):
        return b.linear(x=x, weight=depalettize_first(b, (6, 4), (2, 1), (3, 1)))
    assert canonicalize(net) is net


def test_dense_lut_read_twice_refused():
    @program(inputs={"x": TensorSpec((2, 4), "fp16")})
    def net(b, x):
        w = depalettize_first(b, (4, 4), (1, 1), (1, 1))
        dense = [op for op in b.ops if op.op_type == "constexpr_lut_to_dense"][0].outputs[0]
        return b.linear(x=x, weight=w), dense
    assert canonicalize(net) is net


def test_already_canonical_refused():
    once = canonicalize(_net(idx_shape=(4, 4), lut_blocks=(1, 1), scale_shape=(4, 1)))
    assert canonicalize(once) is once


def test_ios16_flat_lut_refused():
    @program(inputs={"x": TensorSpec((2, 4), "fp16")})
    def net(b, x):
        idx = b.const(np.zeros(16, np.uint8), dtype="uint2")
        dense = b.constexpr_lut_to_dense(indices=idx, lut=np.arange(4, dtype=np.int8), shape=np.array([4, 4], np.uint32))
        return b.linear(x=x, weight=b.constexpr_blockwise_shift_scale(data=dense, scale=np.full((1, 1), 0.5, F16)))
    assert canonicalize(net) is net


# ---- nested blocks, several functions, idempotence ----------------------------------------

def test_inside_cond_and_in_every_function():
    def body(b, x, p):
        branch = lambda s: lambda bb: bb.linear(  # noqa: E731
            x=x, weight=depalettize_first(bb, (4, 4), (2, 1), (4, 1), seed=s, scale_name=f"w{s}", lut_name=f"l{s}"))
        return b.cond(pred=p, true_fn=branch(1), false_fn=branch(2), name="c")

    specs = {"x": TensorSpec((2, 4), "fp16"), "p": TensorSpec((), "bool")}
    prog = Program.make([build_function(body, specs, "main"), build_function(body, specs, "other")])
    after = canonicalize(prog)
    for f in ("main", "other"):
        for cond in (op for op in after.functions[f].ops if op.op_type == "cond"):
            for blk in cond.blocks:
                assert [o.op_type for o in blk.ops if o.op_type != "const"] == [
                    "constexpr_blockwise_shift_scale", "constexpr_lut_to_dense", "linear"]
        for p in (True, False):
            _same(prog, after, {"x": X, "p": np.array(p)}, f)
    assert canonicalize(after) is after


def test_idempotent():
    assert_idempotent(_net(idx_shape=(4, 4), lut_blocks=(1, 1), scale_shape=(2, 1), offset=True), canonicalize)


# ---- property: bit-identical ----------------------------------------------------------------

@st.composite
def quantized_lut_programs(draw):
    rows, cols = draw(st.sampled_from([1, 2, 4, 6, 8])), draw(st.sampled_from([1, 2, 4]))
    divisors = lambda n: [d for d in range(1, n + 1) if n % d == 0]  # noqa: E731
    vs = draw(st.sampled_from([1, 2]))  # 2: vectors of 2 along axis 0, dense rows = 2 * rows
    lut_blocks = (draw(st.sampled_from(divisors(rows))), draw(st.sampled_from(divisors(cols))))
    scale_shape = (draw(st.sampled_from(divisors(rows * vs))), draw(st.sampled_from(divisors(cols))))
    kw = dict(idx_shape=(rows, cols), lut_blocks=lut_blocks, scale_shape=scale_shape, vs=vs,
              vector_axis=0 if vs > 1 else None,
              nbits=draw(st.sampled_from([1, 2, 4])), offset=draw(st.booleans()), seed=draw(st.integers(0, 999)))
    tail = draw(st.sampled_from(["linear", "weight_out", "add"]))

    @program(inputs={"x": TensorSpec((3, cols), "fp16")})
    def net(b, x):
        w = depalettize_first(b, **kw)
        if tail == "weight_out":
            return b.linear(x=x, weight=w), b.relu(x=x)
        if tail == "add":
            return b.add(x=b.linear(x=b.relu(x=x), weight=w), y=F16(1))
        return b.linear(x=x, weight=w)
    return net


@given(prog=quantized_lut_programs(), seed=st.integers(0, 99))
def test_property_outputs_are_bit_identical(prog, seed):
    # exact: each dense element is scale * (lut entry - offset) in both orders, the same
    # arithmetic on the same numbers; only where it happens (LUT or dense) moves.
    x = np.random.default_rng(seed).uniform(-2, 2, prog.main.inputs[0].shape).astype(F16)
    after = assert_equivalent(prog, canonicalize, {"x": x})
    assert canonicalize(after) is after


# ---- cross-check with coremltools ----------------------------------------------------------

def test_same_op_types_as_coremltools():
    ct = pytest.importorskip("coremltools")
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY

    rng = np.random.default_rng(0)
    idx = rng.integers(0, 4, (8, 4))
    lut = rng.integers(-128, 128, (2, 1, 4, 1)).astype(np.int8)
    scale = rng.uniform(0.01, 0.1, (8, 1)).astype(F16)

    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 4), dtype=types.fp16)], opset_version=ct.target.iOS18)
    def theirs(x):
        dense = mb.constexpr_lut_to_dense(indices=idx.astype(types.nptype_from_builtin(types.uint2)), lut=lut)
        return mb.linear(x=x, weight=mb.constexpr_blockwise_shift_scale(data=dense, scale=scale))

    PASS_REGISTRY["common::canonicalize_quantized_lut_pattern"](theirs)
    their_ops = [op for op in theirs.functions["main"].operations if op.op_type != "const"]

    @program(inputs={"x": TensorSpec((2, 4), "fp16")})
    def ours(b, x):
        dense = b.constexpr_lut_to_dense(indices=b.const(idx.astype(np.uint8), dtype="uint2"), lut=lut)
        return b.linear(x=x, weight=b.constexpr_blockwise_shift_scale(data=dense, scale=scale))

    our_ops = [op for op in canonicalize(ours).main.ops if op.op_type != "const"]
    assert [o.op_type for o in our_ops] == [o.op_type for o in their_ops]
    assert np.array_equal(our_ops[0].data.val, their_ops[0].data.val)  # the repeated LUT
    assert np.array_equal(our_ops[0].scale.val, their_ops[0].scale.val)
