"""`weightpress inspect`: which layer reads each weight (through constexpr chains and
re-layout ops), and the model's op-type counts."""
from __future__ import annotations

import numpy as np

from ir.builder import TensorSpec, program
from pipeline.report import inspect_rows, op_count_rows, op_type_counts, weights_of
from stages.compression import palettize_weights
from tests.cli.conftest import run_cli

RNG = np.random.default_rng(5)
W = RNG.standard_normal((64, 48)).astype(np.float32)
SHARED = RNG.standard_normal((48, 48)).astype(np.float32)


@program(inputs={"x": TensorSpec((2, 48), "fp32"), "flag": TensorSpec((), "bool")})
def net(b, x, flag):
    # W [64, 48] is read as W^T reshaped: the layer is the matmul, not the transpose
    wt = b.reshape(x=b.transpose(x=b.const(W, name="w"), perm=[1, 0]), shape=[48, 64], name="w_t")
    h = b.matmul(x=b.const(np.ones((2, 48), np.float32), name="ones"), y=wt, name="mm_w")
    s = b.const(SHARED, name="shared")
    a = b.matmul(x=x, y=s, name="mm_a")
    c = b.matmul(x=a, y=s, name="mm_b")
    d = b.matmul(x=c, y=s, name="mm_c")
    e = b.cond(flag, lambda t: t.relu(x=d), lambda f: f.mul(x=d, y=np.float32(2.0)))
    return h, e


def _row(rows, name):
    return next(r for r in rows if r[0] == name)


def test_users_look_through_relayout_ops_and_list_shared_weights():
    weights = {w.name: w for w in weights_of(net)}
    (use,) = weights["w"].users
    assert (use.op_type, use.op_name, use.via) == ("matmul", "mm_w", ("transpose", "reshape"))
    assert [u.op_name for u in weights["shared"].users] == ["mm_a", "mm_b", "mm_c"]
    headers, rows = inspect_rows(weights_of(net))
    assert headers[-1] == "used by"
    assert _row(rows, "w")[-1] == "matmul (mm_w, via transpose > reshape)"
    assert _row(rows, "shared")[-1] == "matmul (mm_a), matmul (mm_b) +1 more"


def test_users_through_a_constexpr_chain_are_the_layers():
    pal = palettize_weights(net, nbits=2, op_selector=lambda v: v.name == "shared")
    w = next(w for w in weights_of(pal) if w.name == "shared")
    assert w.compression == "lut_to_dense(uint2)"
    assert [(u.op_type, u.op_name) for u in w.users] == [("matmul", "mm_a"), ("matmul", "mm_b"), ("matmul", "mm_c")]


def test_op_type_counts_include_nested_blocks():
    counts = op_type_counts(net)
    # matmul x4, relu and mul inside the cond's branches, the cond itself
    assert counts["matmul"] == 4 and counts["relu"] == 1 and counts["mul"] == 1 and counts["cond"] == 1
    assert counts["transpose"] == 1 and counts["reshape"] == 1
    headers, rows = op_count_rows(counts)
    assert headers == ("op type", "count")
    assert rows[-1] == (f"all ({len(counts)} op types)", str(sum(counts.values())))
    body = [(t, int(n)) for t, n in rows[:-1]]
    assert body == sorted(body, key=lambda r: (-r[1], r[0]))  # most frequent first, then by name


def test_cli_prints_both_tables(model):
    proc = run_cli("inspect", model)
    assert proc.returncode == 0, proc.stderr
    weights_part, ops_part = proc.stdout.split("\n\n")
    assert "fc3_weight" in weights_part and "linear (logits)" in weights_part
    # the demo MLP: 6 consts, 3 linear layers, 2 relu
    lines = [ln.split() for ln in ops_part.splitlines()]
    assert lines[0] == ["op", "type", "count"]
    assert lines[2:] == [["const", "6"], ["linear", "3"], ["relu", "2"], ["all", "(3", "op", "types)", "11"]]
