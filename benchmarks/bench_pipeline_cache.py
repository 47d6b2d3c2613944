"""What the content-addressed DiskCache saves: a cold run vs a warm (all hits) run.

    python benchmarks/bench_pipeline_cache.py [--layers 25] [--width 1024]

Model: `layers` linear layers of width x width fp32 (25 x 1024 x 1024 = 105 MB).
Pipeline: two steps that change one weight each, then the sparse+palettize
preset (sparsify 50%, palettize 4 bit; stand-ins that change every weight when
the compression stages are missing), then dead_code_elimination. Figures:

- cold: each step run once on an empty cache (the steps' own work plus writing
  the new tensors); the growth of the cache directory after each step;
- warm, same process: a second run on a fresh DiskCache object (all hits, no
  program loaded), and then loading the result from disk (each tensor re-hashed);
- warm, fresh process: the same, including hashing the input model once.

The machine is shared: figures are noisy, run it twice.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import stages  # noqa: E402
from ir.builder import Builder, TensorSpec  # noqa: E402
from ir.construct import const_op  # noqa: E402
from ir.rewrite import map_functions, replace_all_uses  # noqa: E402
from pipeline import DiskCache, Pipeline  # noqa: E402
from stages.base import stage  # noqa: E402


def build(layers: int, width: int):
    rng = np.random.default_rng(0)
    b = Builder()
    h = b.input("x", TensorSpec((1, width), "fp32"))
    for i in range(layers):
        w = b.const((rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), name=f"w{i}")
        h = b.relu(x=b.linear(x=h, weight=w, name=f"lin{i}"), name=f"relu{i}")
    from ir.core import Program

    return Program.make([b.function("main", [h])])


def _map_weights(prog, fn, only=None):
    """Replace each 2-D fp32 const (or just `only`) by fn(value)."""
    def one(f):
        ops, subst = list(f.block.ops), {}
        for i, op in enumerate(ops):
            val = op.attrs.get("val") if op.op_type == "const" else None
            if val is None or val.ndim != 2 or (only is not None and op.name != only):
                continue
            ops[i] = const_op(op.name, fn(val))
            subst[op.outputs[0].name] = ops[i].outputs[0]
        return f if not subst else replace_all_uses(f.replace(block=f.block.replace(ops=ops)), subst)

    return map_functions(prog, one)


@stage("bench_fp16_round", version="1")
def fp16_round(prog, *, context=None):
    return _map_weights(prog, lambda v: v.astype(np.float16).astype(np.float32))


@stage("bench_prune", version="1")
def prune(prog, *, sparsity=0.5, context=None):
    def one(v):
        k = int(v.size * sparsity)
        cut = np.partition(np.abs(v).ravel(), k)[k]
        return np.where(np.abs(v) < cut, np.float32(0), v)

    return _map_weights(prog, one)


@stage("bench_scale_one", version="1")
def scale_one(prog, *, name="w0", factor=0.5, context=None):
    return _map_weights(prog, lambda v: v * np.float32(factor), only=name)


def make_pipeline() -> tuple:
    """Two steps that change one weight each (the cache grows by one weight per step,
    not by the model), then the sparse+palettize preset over every weight, then cleanup."""
    have = set(stages.names())
    one_weight = [scale_one(name="w3"), scale_one(name="w7")]
    if {"sparsify_weights", "palettize_weights"} <= have:
        compress = Pipeline.preset("sparse+palettize").stages
        label = "real compression stages (preset sparse+palettize)"
    else:
        compress = (fp16_round, prune(sparsity=0.5))
        label = "stand-in stages (compression stages not available yet)"
    return Pipeline(one_weight + list(compress) + [stages.get("dead_code_elimination")]), label


FRESH = """
import sys, time
sys.path.insert(0, {root!r})
sys.argv = ["x", "--layers", "{layers}", "--width", "{width}"]
import bench_pipeline_cache as b
from pipeline import DiskCache
prog = b.build({layers}, {width})
pipe, _ = b.make_pipeline()
t0 = time.perf_counter(); trace = pipe.run(prog, cache=DiskCache({cache!r})); t1 = time.perf_counter()
trace.result; t2 = time.perf_counter()
print(t1 - t0, t2 - t1, "".join("C" if s.cached else "R" for s in trace.steps))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=25)
    ap.add_argument("--width", type=int, default=1024)
    args = ap.parse_args()
    prog = build(args.layers, args.width)
    pipe, label = make_pipeline()
    weight_mb = args.layers * args.width * args.width * 4 / 1e6
    print(f"model: {args.layers} x [{args.width}x{args.width}] fp32 = {weight_mb:.0f} MB of weights; "
          f"pipeline ({label}): {pipe.spec()}")
    with tempfile.TemporaryDirectory() as d:
        cache = DiskCache(d)
        prog.digest  # hash the input once, outside the timings (both runs need it)
        print(f"\n{'step':<44} {'cold s':>8} {'disk +MB':>9}")
        cold, size = 0.0, 0
        for i in range(len(pipe)):
            t0 = time.perf_counter()
            trace = pipe[: i + 1].run(prog, cache=cache)
            cold += time.perf_counter() - t0
            grown = cache.disk_bytes()
            print(f"{trace.steps[-1].spec[:44]:<44} {trace.steps[-1].seconds:8.2f} {(grown - size) / 1e6:9.1f}")
            size = grown
        print(f"{'cold total (steps + cache writes)':<44} {cold:8.2f} {size / 1e6:9.1f}")

        t0 = time.perf_counter()
        warm = pipe.run(prog, cache=DiskCache(d))
        t_warm = time.perf_counter() - t0
        assert all(s.cached for s in warm.steps)
        t0 = time.perf_counter()
        warm.result
        t_load = time.perf_counter() - t0

        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run([sys.executable, "-c", FRESH.format(root=here, layers=args.layers, width=args.width,
                                                                   cache=d)],
                             capture_output=True, text=True, check=True, cwd=here).stdout.split()
        f_run, f_load, pattern = float(out[0]), float(out[1]), out[2]

    print(f"\n{'':<36} {'seconds':>9} {'% of cold':>10}")
    for name, t in [("cold run", cold), ("warm run (all hits)", t_warm), ("warm: load result from disk", t_load),
                    ("warm run + load", t_warm + t_load),
                    (f"fresh process: run ({pattern}, incl. input hash)", f_run), ("fresh process: load result", f_load)]:
        print(f"{name:<36} {t:9.3f} {100 * t / cold:9.1f}%")
    print(f"\ntarget: warm < 5% of cold -> warm run {100 * t_warm / cold:.2f}%, "
          f"warm run + loading the result {100 * (t_warm + t_load) / cold:.1f}%")


if __name__ == "__main__":
    main()
