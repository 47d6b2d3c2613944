"""The incremental driver: per-pattern counts, non-convergence, and the same results as
sweeping the whole function every time (the driver's path for nested blocks)."""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import ir.rewrite as rw
from ir.builder import Builder, TensorSpec
from ir.construct import const_op, new_op
from ir.core import Program
from ir.fixpoint import FixedPointNotReached
from ir.interpret import evaluate
from ir.rewrite import Pattern, Rewrite, rewrite_program, rewrite_program_counted, sweep_function_counted
from ir.text import print_program
from ir.validate import validate

X = np.array([[-2.0, -0.5, 0.0, 3.0]], np.float32)


def _chain(n_relu: int) -> Program:
    """x -> add(x, 0) 'a0' -> relu r0 -> ... -> relu r{n-1} -> mul 'out'."""
    b = Builder()
    y = b.add(x=b.input("x", TensorSpec((1, 4))), y=np.zeros(4, np.float32), name="a0")
    for i in range(n_relu):
        y = b.relu(x=y, name=f"r{i}")
    return Program.make([b.function("main", (b.mul(x=y, y=np.float32(2.0), name="out"),))])


def _merge_relu_pairs():
    """relu(relu(x)) -> one new relu(x); the rewrite claims the op and its producer."""
    def match(op, ctx):
        inner = ctx.producer(op.x)
        return (op, inner) if inner is not None and inner.op_type == "relu" else None

    def rewrite(m, ctx):
        op, inner = m
        new = new_op("relu", ctx.fresh_name("m"), {"x": inner.x})
        return Rewrite(claims=(op, inner), new_ops=(new,), replace={op.output.name: new.output})
    return Pattern("merge_relu_pairs", match, rewrite, frozenset({"relu"}))


def _counts(counts, name):
    return counts[name]["matched"], counts[name]["rewritten"]


def test_counts_separate_matches_from_rewrites_across_a_claim_conflict():
    # sweep 1: r1 claims (r1, r0); r2 would claim (r2, r1): r1 is taken -> matched only.
    # sweep 2: r2, rewired to read the new relu m, claims (r2, m) -> new relu m_1.
    # sweep 3: m_1 reads the add: no match. Three matches, two rewrites, one relu left.
    prog = _chain(3)
    out, counts = rewrite_program_counted(prog, [_merge_relu_pairs()])
    assert _counts(counts, "merge_relu_pairs") == (3, 2)
    validate(out)
    assert [op.name for op in out.main.ops if op.op_type != "const"] == ["a0", "m_1", "out"]
    np.testing.assert_array_equal(evaluate(out, {"x": X})["out"], np.maximum(X, 0) * 2)


def test_one_sweep_counts_the_conflict_and_stops():
    out, counts = sweep_function_counted(_chain(3).main, [_merge_relu_pairs()])
    assert _counts(counts, "merge_relu_pairs") == (2, 1)
    assert [op.op_type for op in out.ops if op.op_type != "const"] == ["add", "relu", "relu", "mul"]


def test_a_declined_rewrite_counts_as_matched_and_a_pattern_that_never_matches_as_zero():
    declines = Pattern("declines", lambda op, ctx: op if op.op_type == "relu" else None, lambda m, ctx: None)
    never = Pattern("never", lambda op, ctx: None, lambda m, ctx: None)
    prog = _chain(4)
    out, counts = rewrite_program_counted(prog, [declines, never])
    assert out is prog
    assert _counts(counts, "declines") == (4, 0) and _counts(counts, "never") == (0, 0)


def test_op_types_keep_other_ops_from_being_offered():
    seen = []

    def match(op, ctx):
        seen.append(op.op_type)
        return None
    rewrite_program(_chain(2), [Pattern("look", match, lambda m, ctx: None, frozenset({"mul", "add"}))])
    assert sorted(seen) == ["add", "mul"]


def _rebuild_relu(op, ctx):
    """A pattern that never settles: every relu is rebuilt (a new object) each sweep."""
    new = new_op("relu", op.name, {"x": op.x})
    return Rewrite(claims=(op,), new_ops=(new,), replace={op.output.name: new.output})


def test_a_pattern_that_never_converges_warns_and_stops_at_the_cap():
    spin = Pattern("spin", lambda op, ctx: op, _rebuild_relu, frozenset({"relu"}))
    with pytest.warns(FixedPointNotReached, match=r"rewrite_program\(spin\).*no fixed point after 5 rounds"):
        out, counts = rewrite_program_counted(_chain(2), [spin], max_sweeps=5)
    assert _counts(counts, "spin") == (10, 10)
    validate(out)


def test_a_single_requested_sweep_claims_no_fixed_point_and_does_not_warn():
    spin = Pattern("spin", lambda op, ctx: op, _rebuild_relu, frozenset({"relu"}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = rewrite_program(_chain(2), [spin], max_sweeps=1)
    assert out is not None


# ---- the same results as whole sweeps, on random flat programs -----------------------------

def _relu_relu():
    def match(op, ctx):
        inner = ctx.producer(op.x)
        return (op, inner) if inner is not None and inner.op_type == "relu" else None
    return Pattern("relu_relu", match, lambda m, ctx: Rewrite(claims=(m[0],), replace={m[0].output.name: m[1].output}),
                   frozenset({"relu"}))


def _neg_neg():
    """neg(neg(x)) -> x when the inner neg has this one reader (both claimed)."""
    def match(op, ctx):
        inner = ctx.producer(op.x)
        if inner is None or inner.op_type != "neg" or ctx.single_consumer(inner.output) is not op:
            return None
        return op, inner
    return Pattern("neg_neg", match,
                   lambda m, ctx: Rewrite(claims=m, replace={m[0].output.name: m[1].x}), frozenset({"neg"}))


def _add_self_to_mul():
    """add(x, x) -> mul(x, 2), a new op under a fresh name (exercises new ops and names)."""
    def match(op, ctx):
        return op if op.x is op.y else None

    def rewrite(op, ctx):
        two = const_op(ctx.fresh_name("two"), np.float32(2.0))
        new = new_op("mul", ctx.fresh_name(op.name), {"x": op.x, "y": two.output})
        return Rewrite(claims=(op,), new_ops=(two, new), replace={op.output.name: new.output})
    return Pattern("add_self", match, rewrite, frozenset({"add"}))


def _dead_relu():
    """A relu nothing reads goes (its input loses a reader: a neg above may now pair up)."""
    def match(op, ctx):
        return op if not ctx.consumers(op.output) and not ctx.is_block_output(op.output) else None
    return Pattern("dead_relu", match, lambda op, ctx: Rewrite(claims=(op,)), frozenset({"relu"}))


@st.composite
def flat_programs(draw):
    """Random DAGs of relu / neg / add over one input; several values are block outputs."""
    b = Builder()
    vals = [b.input("x", TensorSpec((1, 4)))]
    for i in range(draw(st.integers(1, 24))):
        kind = draw(st.sampled_from(["relu", "neg", "add", "add_self"]))
        a = vals[draw(st.integers(max(0, len(vals) - 4), len(vals) - 1))]
        if kind == "add":
            other = vals[draw(st.integers(0, len(vals) - 1))]
            v = b.add(x=a, y=other, name=f"v{i}")
        elif kind == "add_self":
            v = b.add(x=a, y=a, name=f"v{i}")
        else:
            v = getattr(b, kind)(x=a, name=f"v{i}")
        vals.append(v)
    outs = [vals[-1]] + draw(st.lists(st.sampled_from(vals[1:]), max_size=2, unique_by=lambda v: v.name))
    return Program.make([b.function("main", tuple(dict.fromkeys(outs)))])


def _whole_sweeps(fn, patterns, counts):
    return rw._WholeRun(fn, patterns, counts)


@settings(max_examples=150, deadline=None)
@given(flat_programs(), st.permutations(["relu_relu", "neg_neg", "add_self", "dead_relu"]), st.sampled_from([1, 2, 64]))
def test_incremental_sweeps_give_what_whole_sweeps_give(prog, order, max_sweeps):
    made = {"relu_relu": _relu_relu, "neg_neg": _neg_neg, "add_self": _add_self_to_mul, "dead_relu": _dead_relu}
    patterns = [made[n]() for n in order]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FixedPointNotReached)
        fast, fast_counts = rewrite_program_counted(prog, patterns, max_sweeps)
        saved = rw._run_for
        rw._run_for = _whole_sweeps
        try:
            slow, slow_counts = rewrite_program_counted(prog, patterns, max_sweeps)
        finally:
            rw._run_for = saved
    assert print_program(fast) == print_program(slow)
    assert (fast is prog) == (slow is prog)
    assert fast_counts == slow_counts
    validate(fast)
    x = np.array([[-1.5, 0.0, 2.0, 7.0]], np.float32)
    # (these patterns may rename a block output, even to another output's name: outputs
    # are compared in order)
    before, after = evaluate(prog, {"x": x}), evaluate(fast, {"x": x})
    assert len(prog.main.outputs) == len(fast.main.outputs)
    for b, a in zip(prog.main.outputs, fast.main.outputs):
        np.testing.assert_allclose(after[a.name], before[b.name], rtol=1e-6)
