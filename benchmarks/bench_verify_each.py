"""What verify="each" costs: each compression preset run plain, with verify="each" (the stage
contracts: oracle-decoded weight bounds + 8 oracle evaluations of each program), and with the
pre-contract per-step verify() (8 samples, contracts=False, snr_db so that it passes).

    python benchmarks/bench_verify_each.py [--rows 1024 --cols 1024]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from ir.builder import TensorSpec, program
from pipeline import Pipeline, presets


def net(rows: int, cols: int, dtype):
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(dtype)
    w2 = (rng.standard_normal((cols, rows)) / np.sqrt(rows)).astype(dtype)
    dt = "fp16" if dtype == np.float16 else "fp32"

    @program(inputs={"x": TensorSpec((4, cols), dt)})
    def mlp(b, x):
        h = b.relu(x=b.linear(x=x, weight=b.const(w1, name="w1")))
        return b.linear(x=h, weight=b.const(w2, name="w2"), name="y")
    return mlp


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--cols", type=int, default=1024)
    ap.add_argument("--dtype", default="fp16", choices=("fp16", "fp32"))
    args = ap.parse_args()
    prog = net(args.rows, args.cols, np.float16 if args.dtype == "fp16" else np.float32)
    print(f"two linear weights [{args.rows}, {args.cols}] {args.dtype}; seconds")
    print(f"{'preset':24} {'plain':>8} {'each':>8} {'verify()':>9}")
    for name in presets.names():
        if name == "canonicalize_quantization":
            continue
        pipe = Pipeline.preset(name)
        plain = timed(lambda: pipe.run(prog))
        each = timed(lambda: pipe.run(prog, verify="each"))
        old = timed(lambda: pipe.run(prog, verify={"mode": "each", "contracts": False, "snr_db": 0, "samples": 8}))
        print(f"{name:24} {plain:8.2f} {each:8.2f} {old:9.2f}")


if __name__ == "__main__":
    main()
