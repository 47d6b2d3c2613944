import numpy as np
import pytest
from hypothesis import given, strategies as st

from ir import Program
from ir.builder import Builder, TensorSpec, program
from stages.cleanup import const_deduplication as dedup, dead_code_elimination as dce
from tests.stages.equivalence import assert_equivalent, assert_idempotent, find_op, inputs_for, op_types

X = {"x": np.linspace(-2, 2, 8, dtype=np.float32).reshape(2, 4)}


# ---- dead_code_elimination ----------------------------------------------------------------

@program(inputs={"x": TensorSpec((2, 4)), "unused": TensorSpec((3,))})
def with_dead_chain(b, x, unused):
    v = x
    for _ in range(30):  # a long dead chain goes in one sweep
        v = b.relu(x=v)
    b.add(x=b.const(np.ones((2, 4), np.float32), name="dead_w"), y=v)
    return b.mul(x=x, y=b.const(np.float32(2), name="two"), name="out")


def test_dead_chain_is_removed_and_signature_kept():
    out = dce(with_dead_chain)
    assert op_types(out, consts=True) == ["const", "mul"]
    assert [v.name for v in out.main.inputs] == ["x", "unused"]
    assert [v.name for v in out.main.outputs] == ["out"]
    assert_equivalent(with_dead_chain, dce, {**X, "unused": np.zeros(3, np.float32)})


@program(inputs={"x": TensorSpec((2, 4)), "p": TensorSpec((), "bool")})
def nested(b, x, p):
    outer_only_inside = b.const(np.full((2, 4), 3, np.float32), name="used_inside")
    dead_cond = b.cond(pred=p, true_fn=lambda bb: bb.relu(x=x), false_fn=lambda bb: bb.relu(x=x), name="dead_cond")

    def live_branch(bb):
        bb.mul(x=x, y=x, name="dead_inside")
        return bb.add(x=x, y=outer_only_inside, name="live_inside")
    b.relu(x=dead_cond)
    return b.cond(pred=p, true_fn=live_branch, false_fn=lambda bb: bb.relu(x=x), name="live_cond")


def test_nested_blocks_are_cleaned_and_outer_values_used_inside_kept():
    out = dce(nested)
    assert op_types(out, consts=True) == ["const", "cond"]
    assert [o.name for o in out.main.ops] == ["used_inside", "live_cond"]
    inner = find_op(out, "live_cond").blocks[0]
    assert [o.name for o in inner.ops] == ["live_inside"]
    for pred in (True, False):
        assert_equivalent(nested, dce, {**X, "p": np.array(pred)})


def test_dce_without_dead_code_returns_the_input_object():
    out = dce(with_dead_chain)
    assert dce(out) is out


def test_dce_cleans_every_function():
    prog = Program.make({"main": with_dead_chain.main, "g": with_dead_chain.main.replace(name="g")})
    out = dce(prog)
    assert op_types(out, "g", consts=True) == ["const", "mul"]


# ---- const_deduplication -----------------------------------------------------------------

W = np.arange(128, dtype=np.float32).reshape(32, 4) / 7


@program(inputs={"q": TensorSpec((2, 4)), "k": TensorSpec((2, 4))})
def q_k(b, q, k):  # the seed pass's docstring example
    wq, wk = b.const(W, name="weight_q"), b.const(W.copy(), name="weight_k")
    bq, bk = b.const(np.ones(32, np.float32) / 3, name="bias_q"), b.const(np.ones(32, np.float32) / 3, name="bias_k")
    return b.linear(x=q, weight=wq, bias=bq, name="q_emb"), b.linear(x=k, weight=wk, bias=bk, name="k_emb")


QK = {"q": X["x"], "k": -X["x"]}


def test_equal_large_consts_become_the_first():
    out = dedup(q_k, const_threshold=32)
    assert [o.name for o in out.main.ops if o.op_type == "const"] == ["weight_q", "bias_q"]
    k = find_op(out, "k_emb")
    assert k.weight.name == "weight_q" and k.bias.name == "bias_q"
    assert_equivalent(q_k, dedup(const_threshold=32), QK)


def test_consts_under_the_threshold_are_kept():
    # coremltools' default: fewer than 100 elements is not worth sharing (the biases here)
    out = dedup(q_k)
    assert [o.name for o in out.main.ops if o.op_type == "const"] == ["weight_q", "bias_q", "bias_k"]
    prog = dedup(q_k, const_threshold=1000)
    assert prog is q_k


@program(inputs={"x": TensorSpec((32, 4))})
def look_alike(b, x):
    as_int = b.const(W.view(np.int32), name="as_int")  # same bytes, other dtype
    other = b.const(W.reshape(4, 32), name="other_shape")
    w1 = b.const(W, name="w1")
    return b.add(x=x, y=w1), as_int, other, b.const(W.copy(), name="dup_output")


def test_different_dtype_or_shape_and_block_outputs_are_kept():
    assert dedup(look_alike) is look_alike


def test_constexprs_with_the_same_inputs_merge():
    @program(inputs={"x": TensorSpec((32, 4))})
    def prog(b, x):
        data = np.arange(128, dtype=np.int8).reshape(32, 4)
        w1 = b.constexpr_affine_dequantize(quantized_data=b.const(data, name="d1"), zero_point=np.int8(0),
                                           scale=np.float32(0.5), axis=0, name="w1")
        w2 = b.constexpr_affine_dequantize(quantized_data=b.const(data.copy(), name="d2"), zero_point=np.int8(0),
                                           scale=np.float32(0.5), axis=0, name="w2")
        w3 = b.constexpr_affine_dequantize(quantized_data=b.const(data.copy(), name="d3"), zero_point=np.int8(0),
                                           scale=np.float32(0.25), axis=0, name="w3")
        return b.add(x=b.add(x=x, y=w1), y=b.add(x=w2, y=w3))

    out = dedup(prog)
    assert [o.name for o in out.main.ops if o.op_type == "constexpr_affine_dequantize"] == ["w1", "w3"]
    assert [o.name for o in out.main.ops if o.op_type == "const" and o.output.shape == (32, 4)] == ["d1"]
    assert_equivalent(prog, dedup, {"x": np.ones((32, 4), np.float32)})


def test_dedup_inside_cond_stays_inside_and_every_function():
    @program(inputs={"x": TensorSpec((32, 4)), "p": TensorSpec((), "bool")})
    def prog(b, x, p):
        outer = b.const(W, name="outer")

        def branch(bb):
            return bb.add(x=bb.add(x=x, y=bb.const(W, name="in1")), y=bb.const(W.copy(), name="in2"))
        return b.cond(pred=p, true_fn=branch, false_fn=lambda bb: bb.add(x=x, y=outer))

    two = Program.make({"main": prog.main, "g": q_k.main.replace(name="g")})
    out = dedup(two)
    inner = find_op(out, "cond_0").blocks[0]
    assert [o.name for o in inner.ops if o.op_type == "const"] == ["in1"]  # not merged with "outer"
    assert find_op(out, "outer").op_type == "const"
    assert [o.name for o in out.functions["g"].ops if o.op_type == "const"] == ["weight_q", "bias_q", "bias_k"]
    inputs = {"x": np.ones((32, 4), np.float32)}
    for pred in (True, False):
        assert_equivalent(two, dedup, {"main": {**inputs, "p": np.array(pred)}, "g": QK})


def test_idempotent_and_bad_threshold():
    once = assert_idempotent(q_k, dedup(const_threshold=2))
    assert dedup(once, const_threshold=2) is once
    with pytest.raises(ValueError, match="const_threshold"):
        dedup(q_k, const_threshold=-1)


# ---- property: random programs --------------------------------------------------------------

@st.composite
def random_programs(draw):
    """Weights drawn from a small pool (so some repeat), used by adds / linears, some dead
    ops and dead chains, some of it inside a cond branch."""
    pool = [np.full((4, 4), v, np.float32) for v in (0.5, -1.0)] + [np.eye(4, dtype=np.float32)]
    b = Builder()
    x = b.input("x", TensorSpec((2, 4)))
    p = b.input("p", TensorSpec((), "bool"))

    def body(bb, v, n):
        for _ in range(n):
            w = bb.const(pool[draw(st.integers(0, len(pool) - 1))].copy())
            kind = draw(st.sampled_from(["linear", "add", "dead", "relu"]))
            if kind == "linear":
                v = bb.linear(x=v, weight=w)
            elif kind == "add":
                v = bb.add(x=v, y=bb.linear(x=v, weight=w))
            elif kind == "dead":
                bb.relu(x=bb.linear(x=v, weight=w))
            else:
                v = bb.relu(x=v)
        return v

    v = body(b, x, draw(st.integers(1, 4)))
    if draw(st.booleans()):
        v = b.cond(pred=p, true_fn=lambda bb: body(bb, v, draw(st.integers(1, 3))),
                   false_fn=lambda bb: body(bb, v, draw(st.integers(0, 2))))
    v = body(b, v, draw(st.integers(0, 3)))
    return Program.make([b.function("main", [v])])


@given(data=st.data())
def test_random_programs_keep_their_outputs_exactly(data):
    # exact: both stages only remove ops or point uses at an identical value
    prog = data.draw(random_programs())
    inputs = data.draw(inputs_for(prog))
    for st_ in (dce, dedup(const_threshold=1)):
        out = assert_equivalent(prog, st_, inputs)
        assert st_(out) is out
    cleaned = dce(prog)
    used = {v.name for _, op in cleaned.walk() for v in op.input_vars()}
    returned = {v.name for v in cleaned.main.outputs} | {
        v.name for _, op in cleaned.walk() for blk in op.blocks for v in blk.outputs}
    for _, op in cleaned.walk():  # after DCE every op's result is needed
        assert any(v.name in used or v.name in returned for v in op.outputs), op


# ---- cross-check with coremltools ---------------------------------------------------------

def test_same_result_as_coremltools():
    ct = pytest.importorskip("coremltools")
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY

    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 4)), mb.TensorSpec(shape=(2, 4))],
                opset_version=ct.target.iOS17)
    def ref(q, k):
        bias = np.ones(32, np.float32) / 3
        big = np.ones(128, np.float32)
        mb.relu(x=mb.relu(x=q))  # dead chain
        return (mb.linear(x=q, weight=W, bias=bias), mb.linear(x=k, weight=W.copy(), bias=bias.copy()),
                mb.add(x=big, y=big.copy()))

    PASS_REGISTRY["common::const_deduplication"](ref)
    PASS_REGISTRY["common::dead_code_elimination"](ref)
    theirs = [(op.op_type, tuple(op.outputs[0].shape)) for op in ref.functions["main"].operations]

    @program(inputs={"q": TensorSpec((2, 4)), "k": TensorSpec((2, 4))}, opset="iOS17")
    def ours(b, q, k):
        bias = np.ones(32, np.float32) / 3
        big = np.ones(128, np.float32)
        b.relu(x=b.relu(x=q))
        return (b.linear(x=q, weight=W, bias=bias), b.linear(x=k, weight=W.copy(), bias=bias.copy()),
                b.add(x=big, y=big.copy()))

    out = dce(dedup(ours))
    mine = [(op.op_type, tuple(op.output.shape)) for op in out.main.ops]
    assert sorted(theirs) == sorted(mine)  # the same ops survive (their consts are ordered differently)


@given(data=st.data())
def test_dce_direct_path_is_the_drivers_result(data):
    # a flat function skips the per-op offering (ir.analysis.live_ops): same ops (the same
    # objects, in the same order) and the same counts as the sweep that claims each dead op
    from stages.cleanup.dead_code_elimination import eliminate_dead_code_by_sweep, eliminate_dead_code_counted
    fn = data.draw(random_programs()).main
    direct, by_sweep = eliminate_dead_code_counted(fn), eliminate_dead_code_by_sweep(fn)
    assert direct[1] == by_sweep[1]
    assert Program.make([direct[0]]).digest == Program.make([by_sweep[0]]).digest
    # ops without nested blocks are kept as they are (a cond whose branch lost dead ops is
    # rebuilt: a new object in each run)
    assert [id(o) for o in direct[0].block.ops if not o.blocks] == \
        [id(o) for o in by_sweep[0].block.ops if not o.blocks]
    assert (direct[0] is fn) == (by_sweep[0] is fn)


def test_dce_counts_each_dead_op_once():
    out = dce.run(with_dead_chain)
    # 30 relus, the dead const and the add that reads them
    assert dict(out.stats["patterns"]["dead_op"]) == {"matched": 32, "rewritten": 32}
    again = dce.run(out.program)
    assert again.program is out.program
    assert dict(again.stats["patterns"]["dead_op"]) == {"matched": 0, "rewritten": 0}
