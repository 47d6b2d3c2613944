"""reorder_lut_per_channel_scale: lut -> scale -> layer becomes lut -> layer -> mul(scale)."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from ir import Program
from ir.builder import TensorSpec, build_function, program
from ir.interpret import evaluate
from stages.quantization import reorder_lut_per_channel_scale as reorder
from tests.stages.equivalence import assert_equivalent, assert_idempotent, inputs_for

F32 = np.float32


def lut_weight(b, shape, scale_axis=0, nbits=2, lut_dtype=F32, offset=None, seed=0, scale=None, name="w"):
    """constexpr_lut_to_dense (one LUT per tensor) -> constexpr_blockwise_shift_scale."""
    rng = np.random.default_rng(seed)
    idx = b.const(rng.integers(0, 2 ** nbits, shape).astype(np.uint8), dtype=f"uint{nbits}", name=f"{name}_idx")
    lut = rng.standard_normal((1,) * len(shape) + (2 ** nbits, 1)).astype(lut_dtype)
    dense = b.constexpr_lut_to_dense(indices=idx, lut=lut, name=f"{name}_palettized")
    if scale is None:
        sshape = [1] * len(shape)
        sshape[scale_axis] = shape[scale_axis]
        scale = np.arange(1, shape[scale_axis] + 1, dtype=F32).reshape(sshape) / 2
    return b.constexpr_blockwise_shift_scale(data=dense, scale=scale, offset=offset, name=name)


def _types(prog, fn="main"):
    return [op.op_type for op in prog.functions[fn].ops if op.op_type != "const"]


def _ops(prog):
    return {op.name: op for op in prog.main.block.walk()}


def _close(before, after, inputs, fn="main"):
    a, b = evaluate(before, inputs, fn), evaluate(after, inputs, fn)
    assert list(a) == list(b)
    for k in a:
        assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-5)


# ---- the seed's example -----------------------------------------------------------------

@pytest.mark.parametrize("x_shape", [(4, 3), (2, 3, 2)])
@pytest.mark.parametrize("bias", [None, np.array([20, 50], F32)])
def test_linear(x_shape, bias):
    @program(inputs={"x": TensorSpec(x_shape)})
    def net(b, x):
        return b.add(x=b.linear(x=x, weight=lut_weight(b, (2, x_shape[-1])), bias=bias, name="fc"), y=F32(1))
    after = reorder(net)
    assert _types(after) == ["constexpr_lut_to_dense", "linear", "mul", "add"]
    ops = _ops(after)
    assert ops["fc"].op_type == "mul" and ops["fc_unscaled"].weight is ops["w_palettized"].outputs[0]
    assert ops["fc"].y.val.tolist() == [[0.5, 1.0]]  # [out, 1] -> [1, out]
    if bias is not None:
        assert ops["fc_unscaled"].bias.val.tolist() == [40.0, 50.0]  # bias / scale
    _close(net, after, {"x": np.linspace(-2, 2, np.prod(x_shape), dtype=F32).reshape(x_shape)})


@pytest.mark.parametrize("as_y", [True, False])
@pytest.mark.parametrize("tx", [True, False])
@pytest.mark.parametrize("ty", [True, False])
def test_matmul(as_y, tx, ty):
    x_shape = (3, 4)
    if as_y:  # y is the weight: output channel is its last axis, or -2 when transposed
        k = x_shape[0] if tx else x_shape[1]
        w_shape, axis = ((2, k), 0) if ty else ((k, 2), 1)
    else:  # x is the weight: output channel is its -2 axis, or -1 when transposed
        k = x_shape[1] if ty else x_shape[0]
        w_shape, axis = ((k, 2), 1) if tx else ((2, k), 0)

    @program(inputs={"x": TensorSpec(x_shape)})
    def net(b, x):
        w = lut_weight(b, w_shape, scale_axis=axis)
        pair = dict(x=x, y=w) if as_y else dict(x=w, y=x)
        return b.matmul(**pair, transpose_x=tx, transpose_y=ty, name="mm")
    after = reorder(net)
    assert _types(after) == ["constexpr_lut_to_dense", "matmul", "mul"]
    _close(net, after, {"x": np.linspace(-2, 2, 12, dtype=F32).reshape(x_shape)})


@pytest.mark.parametrize("nsp", [1, 2])
@pytest.mark.parametrize("bias", [False, True])
def test_conv(nsp, bias):
    x_shape = (2, 3) + (4,) * nsp

    @program(inputs={"x": TensorSpec(x_shape)})
    def net(b, x):
        w = lut_weight(b, (2, 3) + (2,) * nsp)
        return b.conv(x=x, weight=w, bias=np.array([1, -2], F32) if bias else None, name="conv")
    after = reorder(net)
    assert _types(after) == ["constexpr_lut_to_dense", "conv", "mul"]
    assert _ops(after)["conv"].y.shape == (1, 2) + (1,) * nsp
    _close(net, after, {"x": np.linspace(-2, 2, np.prod(x_shape), dtype=F32).reshape(x_shape)})


def test_every_reader_moves():
    @program(inputs={"x": TensorSpec((4, 3))})
    def net(b, x):
        w = lut_weight(b, (2, 3))
        return b.add(x=b.linear(x=x, weight=w, name="a"), y=b.linear(x=x, weight=w, name="b"))
    after = reorder(net)
    assert _types(after) == ["constexpr_lut_to_dense", "linear", "mul", "linear", "mul", "add"]
    _close(net, after, {"x": np.ones((4, 3), F32)})


# ---- refusals -----------------------------------------------------------------------------

def _linear_net(weight_kw=None, reader="linear", bias_input=False, expose=False):
    @program(inputs={"x": TensorSpec((4, 3)), "bias": TensorSpec((2,))})
    def net(b, x, bias):
        w = lut_weight(b, (2, 3), **(weight_kw or {}))
        if reader == "add":
            y = b.add(x=w, y=F32(1))
        else:
            y = b.linear(x=x, weight=w, bias=bias if bias_input else None)
        return (y, w) if expose else y
    return net


@pytest.mark.parametrize("net", [
    _linear_net({"scale_axis": 1}),  # scale on the input axis
    _linear_net({"scale": np.full((2, 3), 0.5, F32)}),  # not per-channel
    _linear_net({"offset": np.array([[0.5], [0.0]], F32)}),  # a real offset
    _linear_net(reader="add"),  # a reader that cannot take the scale
    _linear_net(bias_input=True),  # a computed bias cannot be rescaled
    _linear_net(expose=True),  # the scaled weight is a block output
], ids=["input_axis", "blockwise", "offset", "add_reader", "runtime_bias", "block_output"])
def test_refused(net):
    assert reorder(net) is net


def test_input_axis_scale_refused_even_where_it_would_broadcast():
    """A scale along the input axis is no per-output-channel factor. With as many rows of x as
    input channels, the moved factor [3, 1] would even broadcast against the output [3, 2]
    without changing its shape: only the axis condition refuses it."""
    @program(inputs={"x": TensorSpec((3, 3))})
    def net(b, x):
        return b.linear(x=x, weight=lut_weight(b, (2, 3), scale_axis=1), name="fc")
    assert reorder(net) is net


def test_integer_lut_refused():
    @program(inputs={"x": TensorSpec((4, 3))})
    def net(b, x):
        idx = b.const(np.zeros((2, 3), np.uint8), dtype="uint2")
        dense = b.constexpr_lut_to_dense(indices=idx, lut=np.arange(4, dtype=np.int8).reshape(1, 1, 4, 1))
        w = b.constexpr_blockwise_shift_scale(data=dense, scale=np.array([[0.5], [2.0]], F32))
        return b.linear(x=x, weight=w)
    assert reorder(net) is net


def test_lut_with_a_second_reader_refused():
    @program(inputs={"x": TensorSpec((4, 3))})
    def net(b, x):
        w = lut_weight(b, (2, 3))
        dense = [op for op in b.ops if op.op_type == "constexpr_lut_to_dense"][0].outputs[0]
        return b.linear(x=x, weight=w), b.linear(x=x, weight=dense)
    assert reorder(net) is net


def test_readers_disagreeing_on_the_output_axis_refused():
    @program(inputs={"x": TensorSpec((4, 3)), "z": TensorSpec((3, 3))})
    def net(b, x, z):
        w = lut_weight(b, (3, 3))
        return b.linear(x=x, weight=w), b.matmul(x=z, y=w)  # axis 0 vs axis 1
    assert reorder(net) is net


# ---- nested blocks, several functions, idempotence ------------------------------------------

def test_inside_cond_and_in_every_function():
    def body(b, x, p):
        branch = lambda s: lambda bb: bb.linear(x=x, weight=lut_weight(bb, (2, 3), seed=s, name=f"w{s}"))  # noqa: E731
        return b.cond(pred=p, true_fn=branch(1), false_fn=branch(2), name="c")

    specs = {"x": TensorSpec((4, 3)), "p": TensorSpec((), "bool")}
    prog = Program.make([build_function(body, specs, "main"), build_function(body, specs, "other")])
    after = reorder(prog)
    for f in ("main", "other"):
        kinds = [op.op_type for op in after.functions[f].block.walk()]
        assert kinds.count("mul") == 2 and "constexpr_blockwise_shift_scale" not in kinds
        for p in (True, False):
            _close(prog, after, {"x": np.ones((4, 3), F32), "p": np.array(p)}, f)
    assert reorder(after) is after


def test_idempotent():
    assert_idempotent(_linear_net(), reorder)


# ---- property -------------------------------------------------------------------------------

@st.composite
def lut_layer_programs(draw):
    kind = draw(st.sampled_from(["linear", "matmul_y", "matmul_x", "conv"]))
    seed = draw(st.integers(0, 2 ** 16))
    tx, ty = draw(st.booleans()), draw(st.booleans())
    n_out, k = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    bias = draw(st.booleans())
    nbits = draw(st.sampled_from([1, 2, 4]))
    if kind == "linear":
        x_shape, w_shape, axis = (draw(st.integers(1, 3)), k), (n_out, k), 0
    elif kind == "conv":
        x_shape, w_shape, axis = (1, k, 3, 3), (n_out, k, 2, 2), 0
    elif kind == "matmul_y":
        x_shape = (3, k) if not tx else (k, 3)
        w_shape, axis = ((n_out, k), 0) if ty else ((k, n_out), 1)
    else:
        x_shape = (k, 3) if not ty else (3, k)
        w_shape, axis = ((k, n_out), 1) if tx else ((n_out, k), 0)
    scale = draw(st.lists(st.floats(0.0625, 4.0, width=32), min_size=n_out, max_size=n_out))
    sshape = [1, 1] + [1] * (len(w_shape) - 2)
    sshape[axis] = n_out
    scale = np.array(scale, F32).reshape(sshape)
    extra = draw(st.booleans())

    @program(inputs={"x": TensorSpec(x_shape)})
    def net(b, x):
        h = b.relu(x=x)  # ops around the pattern
        w = lut_weight(b, w_shape, nbits=nbits, seed=seed, scale=scale)
        bvec = np.linspace(-1, 1, n_out, dtype=F32) if bias else None
        if kind == "linear":
            y = b.linear(x=h, weight=w, bias=bvec)
        elif kind == "conv":
            y = b.conv(x=h, weight=w, bias=bvec)
        elif kind == "matmul_y":
            y = b.matmul(x=h, y=w, transpose_x=tx, transpose_y=ty)
        else:
            y = b.matmul(x=w, y=h, transpose_x=tx, transpose_y=ty)
        y = b.mul(x=y, y=F32(0.5))
        return (y, b.relu(x=x)) if extra else y
    return net


@given(prog=lut_layer_programs(), data=st.data())
def test_property_same_outputs_within_fp32_rounding(prog, data):
    # Not bit-exact: the layer now sums x*w and multiplies by the scale afterwards,
    # instead of summing x*(w*scale); and the bias is divided then multiplied back.
    # Both orders round differently in fp32 (relative error of a few ulps of the sum).
    after = assert_equivalent(prog, reorder, data.draw(inputs_for(prog, low=-2, high=2)), atol=1e-4, rtol=1e-4,
                              why="the scale is applied after the sum, not before (fp32 rounding)")
    assert "constexpr_blockwise_shift_scale" not in _types(after)
    assert reorder(after) is after


# ---- cross-check with coremltools -------------------------------------------------------------

def test_same_op_types_as_coremltools():
    ct = pytest.importorskip("coremltools")
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY

    idx = np.arange(6).reshape(2, 3) % 4
    lut = np.arange(4, dtype=np.float16).reshape(1, 1, 4, 1)
    scale = np.array([[0.5], [1.0]], np.float16)
    bias = np.array([20, 50], np.float16)

    @mb.program(input_specs=[mb.TensorSpec(shape=(4, 3), dtype=types.fp16)], opset_version=ct.target.iOS18)
    def theirs(x):
        dense = mb.constexpr_lut_to_dense(indices=idx.astype(types.nptype_from_builtin(types.uint2)), lut=lut)
        w = mb.constexpr_blockwise_shift_scale(data=dense, scale=scale)
        return mb.add(x=mb.linear(x=x, weight=w, bias=bias), y=np.float16(1.0))

    PASS_REGISTRY["common::reorder_lut_per_channel_scale"](theirs)
    their_types = [op.op_type for op in theirs.functions["main"].operations if op.op_type != "const"]
    their_bias = next(op for op in theirs.functions["main"].operations if op.op_type == "linear").bias.val

    @program(inputs={"x": TensorSpec((4, 3), "fp16")})
    def ours(b, x):
        dense = b.constexpr_lut_to_dense(indices=b.const(idx.astype(np.uint8), dtype="uint2"), lut=lut)
        w = b.constexpr_blockwise_shift_scale(data=dense, scale=scale)
        return b.add(x=b.linear(x=x, weight=w, bias=bias), y=np.float16(1.0))

    after = reorder(ours)
    assert _types(after) == their_types
    assert next(op for op in after.main.ops if op.op_type == "linear").bias.val.tolist() == their_bias.tolist()
