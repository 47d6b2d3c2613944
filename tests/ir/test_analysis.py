import numpy as np

from ir.analysis import dead_ops, use_def
from ir.builder import TensorSpec, program


def _net():
    @program(inputs={"x": TensorSpec((2,), "fp32")})
    def net(b, x):
        dead1 = b.relu(x=x, name="dead1")
        b.exp(x=dead1, name="dead2")  # a dead chain: dead2 reads dead1, nothing reads dead2
        pred = b.const(np.bool_(True), name="p")

        def then(bb):
            bb.relu(x=bb.exp(x=x, name="inner_dead"), name="inner_live")  # computed, never returned
            return bb.neg(x=x, name="inner_out")

        kept = b.cond(pred, then, lambda bb: bb.abs(x=x, name="other"), name="c")
        return b.add(x=kept, y=x, name="out")
    return net


def test_dead_ops_marks_chains_and_nested_dead_ops_only():
    fn = _net().main
    names = {op.name for op in fn.block.walk() if id(op) in dead_ops(fn)}
    # dead1 is read only by dead2, which nothing reads; inside the branch only `inner_out` is returned
    assert names == {"dead1", "dead2", "inner_dead", "inner_live"}


def test_use_def_sees_reads_from_nested_blocks():
    fn = _net().main
    ud = use_def(fn)
    readers = {op.name for op in ud.consumers["x"]}
    assert {"dead1", "inner_dead", "inner_out", "other", "out"} <= readers
    assert ud.producers["out"].op_type == "add"
