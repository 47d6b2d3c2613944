"""The shared rewrite driver: patterns applied to a fixed point, claims, nested
blocks, fresh names, use replacement; inputs never mutated."""
import numpy as np
import pytest

from ir.builder import Builder, TensorSpec, program
from ir.construct import new_op
from ir.core import Program
from ir.interpret import evaluate
from ir.rewrite import (Pattern, Rewrite, RewriteContext, map_functions, replace_all_uses,
                        rewrite_program, sweep_function)
from ir.analysis import use_def
from ir.validate import validate

X = np.array([[-2.0, -0.5, 0.0, 3.0]], np.float32)


def _types(p):
    return [op.op_type for _f, op in p.walk()]


def _add_zero():
    """add(x, const 0) -> x: claims the add, replaces its output by x."""
    def match(op, ctx):
        if op.op_type == "add" and op.y.val is not None and not np.any(op.y.val):
            return op
        return None
    return Pattern("add_zero", match, lambda op, ctx: Rewrite(claims=(op,), replace={op.output.name: op.x}))


def _relu_relu():
    """relu(relu(x)) -> relu(x): the outer relu is claimed, its uses read the inner one."""
    def match(op, ctx):
        inner = ctx.producer(op.x) if op.op_type == "relu" else None
        return (op, inner) if inner is not None and inner.op_type == "relu" else None
    return Pattern("relu_relu", match,
                   lambda m, ctx: Rewrite(claims=(m[0],), replace={m[0].output.name: m[1].output}))


@program(inputs={"x": TensorSpec((1, 4), "fp32")})
def chain(b, x):
    y = b.add(x=x, y=np.zeros(4, np.float32), name="a0")
    for i in range(4):
        y = b.relu(x=y, name=f"r{i}")
    return b.mul(x=y, y=np.float32(2.0), name="out")


def test_patterns_run_to_a_fixed_point_and_keep_behaviour():
    before = chain.digest
    out = rewrite_program(chain, [_add_zero(), _relu_relu()])
    assert chain.digest == before  # the input is untouched
    validate(out)
    assert _types(out).count("relu") == 1 and "add" not in _types(out)
    relu = next(op for _f, op in out.walk() if op.op_type == "relu")
    assert relu.x is out.main.inputs[0]  # the add's uses now read x itself
    np.testing.assert_array_equal(evaluate(out, {"x": X})["out"], np.maximum(X, 0) * 2)


def test_one_sweep_claims_each_op_once():
    # in one sweep r1 claims itself (reading r0); r2 matches too (reading r1) and is applied in
    # the same sweep, since claims do not overlap; the chain needs more than one sweep in general
    one = rewrite_program(chain, [_relu_relu()], max_sweeps=1)
    full = rewrite_program(chain, [_relu_relu()])
    assert _types(full).count("relu") == 1
    assert 1 <= _types(one).count("relu") < 4


def test_nothing_matching_returns_the_input_object():
    never = Pattern("never", lambda op, ctx: None, lambda m, ctx: None)
    assert rewrite_program(chain, [never]) is chain
    assert map_functions(chain, lambda f: f) is chain
    assert sweep_function(chain.main, [never]) is chain.main


def test_declined_rewrite_changes_nothing():
    declines = Pattern("declines", lambda op, ctx: op, lambda m, ctx: None)
    assert rewrite_program(chain, [declines]) is chain


def test_overlapping_claims_are_left_for_the_next_sweep():
    def match(op, ctx):
        return op if op.op_type == "relu" else None

    def rewrite(op, ctx):  # relu, relu -> one sigmoid: each rewrite claims two neighbours
        nxt = ctx.single_consumer(op.output)
        if nxt is None or nxt.op_type != "relu":
            return None
        new = new_op("sigmoid", ctx.fresh_name("s"), {"x": op.x})
        return Rewrite(claims=(op, nxt), new_ops=(new,), replace={nxt.output.name: new.output})

    out = rewrite_program(chain, [Pattern("pair", match, rewrite)], max_sweeps=1)
    validate(out)
    # r0 claims (r0, r1), so r1 is not offered; r2 claims (r2, r3): two sigmoids, in order
    assert [op.name for op in out.main.ops if op.op_type != "const"] == ["a0", "s", "s_1", "out"]
    s1 = next(op for op in out.main.ops if op.name == "s_1")
    assert s1.x.name == "s"
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    np.testing.assert_allclose(evaluate(out, {"x": X})["out"], sig(sig(X)) * 2, rtol=1e-6)


def test_new_ops_replace_the_claimed_ones_in_place():
    def match(op, ctx):
        return op if op.op_type == "mul" else None

    def rewrite(op, ctx):
        name = ctx.fresh_name("out")  # "out" is taken: a suffixed name
        new = new_op("add", name, {"x": op.x, "y": op.x})
        return Rewrite(claims=(op,), new_ops=(new,), replace={op.output.name: new.output})

    out = rewrite_program(chain, [Pattern("mul_to_add", match, rewrite)], max_sweeps=1)
    validate(out)
    assert [op.name for op in out.main.ops][-1] == "out_1" and out.main.outputs[0].name == "out_1"
    np.testing.assert_array_equal(evaluate(out, {"x": X})["out_1"], np.maximum(X, 0) * 2)


def test_fresh_names_are_unique_and_unused():
    ctx = RewriteContext(chain.main, use_def(chain.main), set())
    names = [ctx.fresh_name("r0") for _ in range(3)] + [ctx.fresh_name("new") for _ in range(2)]
    assert names == ["r0_1", "r0_2", "r0_3", "new", "new_1"]
    assert not set(names) & set(use_def(chain.main).names)


def test_patterns_reach_into_nested_blocks():
    b = Builder()
    x = b.input("x", TensorSpec((1, 4), "fp32"))
    p = b.const(True, name="p")
    r = b.cond(p, lambda c: c.relu(x=c.relu(x=x, name="in0"), name="in1"),
               lambda c: c.neg(x=x, name="n"), name="c")
    prog = Program.make([b.function("main", r)])
    out = rewrite_program(prog, [_relu_relu()])
    validate(out)
    cond = next(op for op in out.main.ops if op.op_type == "cond")
    assert [op.name for op in cond.blocks[0].ops] == ["in0"] and cond.blocks[0].outputs[0].name == "in0"
    np.testing.assert_array_equal(evaluate(out, {"x": X})[out.main.outputs[0].name], np.maximum(X, 0))


def test_replace_all_uses_renames_every_use_and_output():
    fn = chain.main
    r0 = next(op for op in fn.ops if op.name == "r0")
    x = fn.inputs[0]
    new = replace_all_uses(fn, {"r3": r0.output})
    assert new is not fn and fn is chain.main
    mul = next(op for op in new.ops if op.name == "out")
    assert mul.x is r0.output
    assert replace_all_uses(fn, {"nobody": x}) is fn


def test_replacement_cycles_are_refused():
    a = next(op for op in chain.main.ops if op.name == "r0")
    b = next(op for op in chain.main.ops if op.name == "r1")
    with pytest.raises(ValueError, match="cycle"):
        replace_all_uses(chain.main, {"r0": b.output, "r1": a.output})
