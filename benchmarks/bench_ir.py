"""How fast the IR core is on a stage-sized workload: a 100,000-op program.

    python benchmarks/bench_ir.py [--ops 100000] [--runs 3]

Builds a chain mixing consts, elementwise, layout and linear ops, then times
building, the cold digest, the digest after a one-op rewrite, a full walk,
use_def, text print / parse, save / load and validate. The machine is shared:
figures are noisy, so build + digest + walk is also repeated `--runs` times and
its best and median CPU seconds are printed.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ir.analysis import use_def  # noqa: E402
from ir.builder import TensorSpec, build_function  # noqa: E402
from ir.core import Program  # noqa: E402
from ir.serialize import load, save, tensors_of  # noqa: E402
from ir.text import parse_program, print_program  # noqa: E402
from ir.validate import validate  # noqa: E402

WIDTH = 8


def build(n_ops: int) -> Program:
    """A chain of 10-op units: linear (weight + bias consts), add a scalar const,
    relu, transpose there and back (perm consts), reshape (shape const)."""
    rng = np.random.default_rng(0)

    def chain(b, x):
        cur = x
        while len(b.ops) + 10 <= n_ops:
            w = b.const(rng.standard_normal((WIDTH, WIDTH)).astype(np.float32))
            cur = b.linear(x=cur, weight=w, bias=rng.standard_normal(WIDTH).astype(np.float32))
            cur = b.relu(x=b.add(x=cur, y=np.float32(0.5)))
            cur = b.transpose(x=b.transpose(x=cur, perm=[1, 0]), perm=[1, 0])
            cur = b.reshape(x=cur, shape=[1, WIDTH])
        while len(b.ops) < n_ops:
            cur = b.relu(x=cur)
        return cur

    return Program.make([build_function(chain, {"x": TensorSpec((1, WIDTH), "fp32")})])


def one_op_rewrite(p: Program) -> Program:
    ops = p.main.block.ops
    i = next(i for i in range(len(ops) // 2, len(ops)) if ops[i].op_type == "relu")
    new_ops = ops.set(i, ops[i].replace(op_type="sigmoid"))
    return p.with_function(p.main.replace(block=p.main.block.replace(ops=new_ops)))


def timed(label, fn, rows):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    rows.append((label, time.perf_counter() - t0, time.process_time() - c0))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3, help="repeats of build + digest + walk")
    args = ap.parse_args(argv)
    rows = []
    p = timed("build", lambda: build(args.ops), rows)
    timed("digest (cold)", lambda: p.digest, rows)
    q = one_op_rewrite(p)
    timed("digest after a one-op rewrite", lambda: q.digest, rows)
    assert q.digest != p.digest
    timed("walk (every op)", lambda: sum(1 for _ in p.walk()), rows)
    timed("use_def", lambda: use_def(p.main), rows)
    timed("validate", lambda: validate(p), rows)
    text = timed("print_program", lambda: print_program(p), rows)
    tensors = tensors_of(p)
    back = timed("parse_program", lambda: parse_program(text, tensors=tensors), rows)
    assert back.digest == p.digest
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "p.wpz")
        timed("save", lambda: save(p, path), rows)
        size = os.path.getsize(path)
        loaded = timed("load", lambda: load(path), rows)
        assert loaded.digest == p.digest
    n = sum(1 for _ in p.walk())
    print(f"weightpress IR, {n:,} ops (file {size / 1e6:.1f} MB, text {len(text) / 1e6:.1f} MB)")
    print(f"{'step':<32}{'wall s':>10}{'cpu s':>10}{'us/op':>10}")
    for label, secs, cpu in rows:
        print(f"{label:<32}{secs:>10.3f}{cpu:>10.3f}{secs / n * 1e6:>10.2f}")
    core = [r for r in rows if r[0] in ("build", "digest (cold)", "walk (every op)")]
    print(f"{'build + digest + walk':<32}{sum(r[1] for r in core):>10.3f}{sum(r[2] for r in core):>10.3f}")
    cpu = sorted(core_cpu(args.ops) for _ in range(args.runs))
    print(f"build + digest + walk, {args.runs} more runs: best {cpu[0]:.3f} cpu s, "
          f"median {cpu[len(cpu) // 2]:.3f} cpu s")


def core_cpu(n_ops: int) -> float:
    c0 = time.process_time()
    p = build(n_ops)
    p.digest
    sum(1 for _ in p.walk())
    return time.process_time() - c0


if __name__ == "__main__":
    main()
