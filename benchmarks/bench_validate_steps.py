"""What validating between steps costs: ir.validate after every step whose stage
returned a new program (Pipeline.run's default, validate=True).

    python benchmarks/bench_validate_steps.py [--units 5000] [--layers 24] [--repeat 3]

Two pipelines, each run with validate off, on (the default: the ops a stage
built in full, the ops it took over for where they sit) and "full" (every op
in full), best of --repeat, CPU time:

- the canonicalize_quantization preset (one step per seed pass) on a chain of
  `units` dequantize -> add -> quantize -> dequantize -> relu units (5 ops per
  unit plus their consts): passes that rewrite most of a large graph;
- int8 affine quantization then dead code elimination on an MLP of `layers`
  linear layers of 512x512: the heavy compression case, where validation is a
  small cost next to the stage.

Printed per mode: CPU seconds of the run, the extra over validate=False (share,
and per validated step and op), and the wall seconds the trace recorded for
validation (the sum of Step.validate_seconds; inflated on a busy machine).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ir.builder import Builder, TensorSpec  # noqa: E402
from ir.core import Program  # noqa: E402
from benchmarks.bench_pipeline_cache import build as build_mlp  # noqa: E402
from pipeline import Pipeline  # noqa: E402


def quant_chain(units: int) -> Program:
    b = Builder()
    h = b.input("x", TensorSpec((1, 16), "fp32"))
    q = b.quantize(input=h, scale=np.float32(0.1), zero_point=np.int8(0), output_dtype="int8")
    for i in range(units):
        d = b.dequantize(input=q, scale=np.float32(0.1), zero_point=np.int8(0))
        a = b.add(x=d, y=np.float32(0.5))
        q2 = b.quantize(input=a, scale=np.float32(0.1), zero_point=np.int8(0), output_dtype="int8")
        d2 = b.dequantize(input=q2, scale=np.float32(0.1), zero_point=np.int8(0))
        q = b.quantize(input=b.relu(x=d2), scale=np.float32(0.1), zero_point=np.int8(0), output_dtype="int8")
    return Program.make([b.function("main", [b.dequantize(input=q, scale=np.float32(0.1), zero_point=np.int8(0))])])


def mlp(layers: int, width: int = 512) -> Program:
    return build_mlp(layers, width)  # the pipeline-cache benchmark's model: linear + relu layers


def measure(pipe: Pipeline, prog: Program, repeat: int) -> dict:
    """validate option -> (best CPU seconds, validate wall seconds of that run, steps validated)."""
    best = {}
    for flag in (False, True, "full"):
        runs = []
        for _ in range(repeat):
            t0 = time.process_time()
            trace = pipe.run(prog, validate=flag)
            runs.append((time.process_time() - t0, sum(s.validate_seconds for s in trace.steps),
                         sum(s.changed for s in trace.steps)))
        best[flag] = min(runs)
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=5000)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    cases = [("canonicalize_quantization preset", Pipeline.preset("canonicalize_quantization"),
              quant_chain(args.units)),
             ("int8 + dead_code_elimination", Pipeline.from_spec("affine_quantize_weights,dead_code_elimination"),
              mlp(args.layers))]
    print(f"{'pipeline':<34} {'ops':>7} {'validated':>9} {'validate':>8} {'CPU s':>7} {'extra':>7} "
          f"{'us/op/step':>10} {'trace wall s':>12}")
    for name, pipe, prog in cases:
        best = measure(pipe, prog, args.repeat)
        n_ops = sum(1 for _ in prog.walk())
        off = best[False][0]
        for flag in (False, True, "full"):
            cpu, wall, changed = best[flag]
            per_op = (cpu - off) / max(changed, 1) / n_ops * 1e6
            print(f"{name:<34} {n_ops:>7} {changed:>9} {str(flag):>8} {cpu:>7.3f} {(cpu - off) / off:>7.1%} "
                  f"{per_op:>10.2f} {wall:>12.3f}")


if __name__ == "__main__":
    main()
