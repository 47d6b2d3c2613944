import numpy as np
import pytest
from hypothesis import given, strategies as st

from ir import Program
from ir.builder import Builder, TensorSpec, program
from stages.quantization import merge_affine_dequantize_with_consecutive_ops as merge
from tests.stages.equivalence import assert_equivalent, assert_idempotent, find_op, inputs_for, op_types

DATA = np.arange(6, dtype=np.int8).reshape(2, 3)


def _affine(b, data=DATA, scale=np.float32(0.5), zp=np.int8(1), axis=0, name="w"):
    q = b.const(data, name=f"{name}_q")
    return b.constexpr_affine_dequantize(quantized_data=q, zero_point=zp, scale=scale, axis=axis, name=name)


def _x(shape):
    return {"x": np.linspace(-1, 1, int(np.prod(shape)), dtype=np.float32).reshape(shape)}


# ---- the seed's docstring graph ------------------------------------------------------

@program(inputs={"x": TensorSpec((3, 1, 2))})
def docstring_graph(b, x):
    t = b.transpose(x=_affine(b), perm=[1, 0], name="w_t")
    return b.add(x=x, y=b.expand_dims(x=t, axes=[1], name="w_e"), name="out")


def test_docstring_chain_folds_into_the_quantized_data():
    out = merge(docstring_graph)
    assert op_types(out) == ["constexpr_affine_dequantize", "add"]
    merged = find_op(out, "w_e")  # the last folded value's name is kept
    assert merged.op_type == "constexpr_affine_dequantize"
    np.testing.assert_array_equal(merged.quantized_data.val, DATA.T.reshape(3, 1, 2))
    assert merged.quantized_data.name == "w_q"  # the folded data replaces the old const
    assert merged.scale.val == np.float32(0.5) and merged.zero_point.val == np.int8(1)
    assert find_op(out, "out").y is merged.output
    assert_equivalent(docstring_graph, merge, _x((3, 1, 2)))


@pytest.mark.parametrize("layout, shape", [
    (lambda b, w: b.reshape(x=w, shape=[3, 2], name="l"), (3, 2)),
    (lambda b, w: b.squeeze(x=b.expand_dims(x=w, axes=[0]), name="l"), (2, 3)),
    (lambda b, w: b.squeeze(x=b.expand_dims(x=w, axes=[-1]), axes=[2], name="l"), (2, 3)),
])
def test_every_per_tensor_layout_op_folds(layout, shape):
    @program(inputs={"x": TensorSpec(shape)})
    def prog(b, x):
        return b.mul(x=x, y=layout(b, _affine(b)), name="out")

    out = merge(prog)
    assert op_types(out) == ["constexpr_affine_dequantize", "mul"]
    assert find_op(out, "l").quantized_data.shape == shape
    assert_equivalent(prog, merge, _x(shape))


def test_per_channel_transpose_moves_the_axis():
    @program(inputs={"x": TensorSpec((3, 2))})
    def prog(b, x):
        w = _affine(b, scale=np.array([0.5, 2.0], np.float32), zp=np.array([1, -1], np.int8), axis=0)
        return b.add(x=x, y=b.transpose(x=w, perm=[1, 0], name="wt"), name="out")

    out = merge(prog)
    merged = find_op(out, "wt")
    assert merged.op_type == "constexpr_affine_dequantize"
    assert int(merged.axis.val) == 1  # channel axis 0 now sits at position 1
    np.testing.assert_array_equal(merged.quantized_data.val, DATA.T)
    assert_equivalent(prog, merge, _x((3, 2)))


def test_per_channel_axis_follows_a_cyclic_permutation_through_its_inverse():
    """perm [1, 2, 0] moves input axis 0 to output position 2 (perm.index(0)), not to perm[0] = 1:
    only a permutation that is not its own inverse tells the two apart."""
    data = np.arange(24, dtype=np.int8).reshape(2, 3, 4)

    @program(inputs={"x": TensorSpec((3, 4, 2))})
    def prog(b, x):
        w = _affine(b, data=data, scale=np.array([0.5, 2.0], np.float32), zp=np.array([1, -1], np.int8), axis=0)
        return b.add(x=x, y=b.transpose(x=w, perm=[1, 2, 0], name="wt"), name="out")

    out = merge(prog)
    merged = find_op(out, "wt")
    assert merged.op_type == "constexpr_affine_dequantize" and int(merged.axis.val) == 2
    np.testing.assert_array_equal(merged.quantized_data.val, data.transpose(1, 2, 0))
    assert_equivalent(prog, merge, _x((3, 4, 2)))


def test_per_channel_scale_with_a_scalar_zero_point_is_not_reshaped():
    """Per channel means either parameter is a vector: a vector scale with a scalar zero
    point cannot follow a reshape any more than two vectors can."""
    @program(inputs={"x": TensorSpec((3, 2))})
    def prog(b, x):
        w = _affine(b, scale=np.array([0.5, 2.0], np.float32), zp=np.int8(1), axis=0)
        return b.add(x=x, y=b.reshape(x=w, shape=[3, 2], name="wr"), name="out")

    out = merge(prog)
    assert out is prog
    assert op_types(out) == ["constexpr_affine_dequantize", "reshape", "add"]


def test_per_channel_stops_before_a_non_transpose_op():
    @program(inputs={"x": TensorSpec((6,))})
    def prog(b, x):
        w = _affine(b, scale=np.array([0.5, 2.0], np.float32), zp=np.array([1, -1], np.int8), axis=0)
        t = b.transpose(x=w, perm=[1, 0], name="wt")
        return b.add(x=x, y=b.reshape(x=t, shape=[6], name="wr"), name="out")

    out = merge(prog)
    assert op_types(out) == ["constexpr_affine_dequantize", "reshape", "add"]
    assert find_op(out, "wt").op_type == "constexpr_affine_dequantize"
    assert_equivalent(prog, merge, _x((6,)))


def test_chain_stops_at_a_block_output_which_keeps_its_name():
    @program(inputs={"x": TensorSpec((3, 2))})
    def prog(b, x):
        t = b.transpose(x=_affine(b), perm=[1, 0], name="wt")
        return b.add(x=x, y=b.relu(x=b.reshape(x=t, shape=[3, 2])), name="out"), t

    out = merge(prog)
    assert [v.name for v in out.main.outputs] == ["out", "wt"]
    assert find_op(out, "wt").op_type == "constexpr_affine_dequantize"
    assert op_types(out) == ["constexpr_affine_dequantize", "reshape", "relu", "add"]
    assert_equivalent(prog, merge, _x((3, 2)))


# ---- what the seed refuses ----------------------------------------------------------

@program(inputs={"x": TensorSpec((3, 2))})
def shared_data(b, x):
    q = b.const(DATA, name="q")
    w1 = b.constexpr_affine_dequantize(quantized_data=q, zero_point=np.int8(0), scale=np.float32(1), axis=0)
    w2 = b.constexpr_affine_dequantize(quantized_data=q, zero_point=np.int8(0), scale=np.float32(2), axis=0)
    return b.add(x=b.transpose(x=w1, perm=[1, 0]), y=b.transpose(x=w2, perm=[1, 0]))


@program(inputs={"x": TensorSpec((3, 2))})
def branching(b, x):
    w = _affine(b)
    return b.add(x=b.transpose(x=w, perm=[1, 0]), y=b.reshape(x=w, shape=[3, 2]))


@program(inputs={"x": TensorSpec((2, 3))})
def constexpr_is_output(b, x):
    w = _affine(b)
    return b.add(x=x, y=w), b.relu(x=b.transpose(x=w, perm=[1, 0]))


@program(inputs={"x": TensorSpec((2, 3))})
def no_layout_op(b, x):
    return b.add(x=x, y=b.relu(x=_affine(b)))


@pytest.mark.parametrize("prog", [shared_data, branching, constexpr_is_output, no_layout_op],
                         ids=["data-read-by-two-constexprs", "two-readers", "block-output", "no-layout-op"])
def test_refused_patterns_return_the_input_object(prog):
    assert merge(prog) is prog


# ---- nesting, functions, idempotence ----------------------------------------------------

@program(inputs={"x": TensorSpec((3, 2)), "p": TensorSpec((), "bool")})
def in_cond(b, x, p):
    def branch(scale):
        return lambda bb: bb.add(x=x, y=bb.transpose(x=_affine(bb, scale=np.float32(scale), name=f"w{scale}"),
                                                     perm=[1, 0]))
    return b.cond(pred=p, true_fn=branch(1), false_fn=branch(2))


def test_pattern_inside_cond_branches_is_rewritten():
    out = merge(in_cond)
    for blk in find_op(out, "cond_0").blocks:
        assert [o.op_type for o in blk.ops if o.op_type != "const"] == ["constexpr_affine_dequantize", "add"]
    for pred in (True, False):
        assert_equivalent(in_cond, merge, {**_x((3, 2)), "p": np.array(pred)})


def test_every_function_is_rewritten():
    f = docstring_graph.main
    prog = Program.make({"main": f, "other": f.replace(name="other")})
    out = merge(prog)
    assert op_types(out, "other") == op_types(out, "main") == ["constexpr_affine_dequantize", "add"]
    assert_equivalent(prog, merge, {"main": _x((3, 1, 2)), "other": _x((3, 1, 2))})


def test_idempotent():
    once = assert_idempotent(docstring_graph, merge)
    assert merge(once) is once


# ---- property: random programs with the pattern ----------------------------------------

LAYOUT = ("transpose", "transpose", "reshape", "expand_dims", "expand_dims", "squeeze", "relu")


@st.composite
def layout_step(draw, shape):
    kind = draw(st.sampled_from(LAYOUT))
    rank = len(shape)
    if kind == "transpose":
        return kind, draw(st.permutations(range(rank)))
    if kind == "reshape":
        return kind, [int(np.prod(shape))] if rank > 1 else [1, shape[0]]
    if kind == "expand_dims":
        return (kind, [draw(st.integers(0, rank))]) if rank < 4 else ("relu", None)
    if kind == "squeeze":
        ones = [i for i, d in enumerate(shape) if d == 1]
        return (kind, [draw(st.sampled_from(ones))]) if ones and rank > 1 else ("relu", None)
    return kind, None


def _apply(b, kind, arg, v):
    if kind == "transpose":
        return b.transpose(x=v, perm=list(arg))
    if kind == "reshape":
        return b.reshape(x=v, shape=arg)
    if kind == "expand_dims":
        return b.expand_dims(x=v, axes=arg)
    if kind == "squeeze":
        return b.squeeze(x=v, axes=arg)
    return b.relu(x=v)


@st.composite
def random_programs(draw):
    """1-3 constexpr chains (per-tensor or per-channel, random layout ops, sometimes a
    second reader) each added to an input of the chain's final shape."""
    b = Builder()
    outputs = []
    for i in range(draw(st.integers(1, 3))):
        shape = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=3)))
        data = np.asarray(draw(st.lists(st.integers(-128, 127), min_size=int(np.prod(shape)),
                                        max_size=int(np.prod(shape)))), np.int8).reshape(shape)
        axis = draw(st.integers(0, len(shape) - 1))
        if draw(st.booleans()):
            scale, zp = np.float32(draw(st.sampled_from([0.5, 0.25, 3.0]))), np.int8(draw(st.integers(-3, 3)))
        else:
            n = shape[axis]
            scale = np.asarray(draw(st.lists(st.sampled_from([0.5, 0.25, 3.0]), min_size=n, max_size=n)), np.float32)
            zp = np.asarray(draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n)), np.int8)
        v = _affine(b, data, scale, zp, axis, name=f"w{i}")
        steps = []
        for _ in range(draw(st.integers(1, 4))):
            kind, arg = draw(layout_step(shape))
            steps.append((kind, arg))
            shape = _shape_after(kind, arg, shape)
        fan_out_at = draw(st.integers(-1, len(steps))) if draw(st.integers(0, 3)) == 0 else -1
        extra = None
        for j, (kind, arg) in enumerate(steps):
            if j == fan_out_at:
                extra = b.relu(x=v)
            v = _apply(b, kind, arg, v)
        x = b.input(f"x{i}", TensorSpec(shape))
        outputs.append(b.add(x=x, y=v))
        if extra is not None:
            outputs.append(extra)
    return Program.make([b.function("main", outputs, opset="iOS17")])


def _shape_after(kind, arg, shape):
    if kind == "transpose":
        return tuple(shape[p] for p in arg)
    if kind == "reshape":
        return tuple(arg)
    if kind == "expand_dims":
        return shape[:arg[0]] + (1,) + shape[arg[0]:]
    if kind == "squeeze":
        return tuple(d for i, d in enumerate(shape) if i not in arg)
    return shape


@given(data=st.data())
def test_random_programs_keep_their_outputs_exactly(data):
    # exact: the constexpr computes scale * (q - zp) elementwise, and the folded ops only
    # move elements, so every output element is computed from the same numbers
    prog = data.draw(random_programs())
    out = assert_equivalent(prog, merge, data.draw(inputs_for(prog)))
    assert merge(out) is out  # one application reaches the fixed point


# ---- cross-check with coremltools -----------------------------------------------------

def test_same_op_types_as_coremltools():
    ct = pytest.importorskip("coremltools")
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY

    @mb.program(input_specs=[mb.TensorSpec(shape=(3, 1, 2))], opset_version=ct.target.iOS17)
    def ref(x):
        w = mb.constexpr_affine_dequantize(quantized_data=DATA, zero_point=np.int8(1),
                                           scale=np.float32(0.5), axis=0)
        t = mb.transpose(x=w, perm=[1, 0])
        return mb.add(x=x, y=mb.expand_dims(x=t, axes=[1]))

    PASS_REGISTRY["common::merge_affine_dequantize_with_consecutive_ops"](ref)
    theirs = [op.op_type for op in ref.functions["main"].operations if op.op_type != "const"]
    assert theirs == op_types(merge(docstring_graph))
    folded = [op for op in ref.functions["main"].operations if op.op_type == "constexpr_affine_dequantize"][0]
    np.testing.assert_array_equal(folded.quantized_data.val,
                                  find_op(merge(docstring_graph), "w_e").quantized_data.val)
