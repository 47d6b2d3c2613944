"""The quantization graph passes: cost per op as graphs grow, and vs coremltools 9.0.

    python benchmarks/bench_quantization_passes.py            # 1k, 10k, 100k ops + 30k vs coremltools
    python benchmarks/bench_quantization_passes.py --full     # also 1M ops (several minutes)
    python benchmarks/bench_quantization_passes.py --no-coremltools

(1) For each of our stages, a chain repeating its pattern (plus the mixed graph
    for the canonicalize_quantization preset) at ~1k, 10k, 100k (and 1M) ops:
    microseconds per op must stay flat as the graph grows (each stage makes a
    bounded number of linear sweeps).
(2) At ~30k ops, the mixed graph is built twice, with our builder and with
    coremltools' MIL builder (mb.program), and the preset is timed against
    coremltools' own passes (the same eight + dead_code_elimination, in the
    preset's order, each once, via PASS_REGISTRY). Ours: best of 3; coremltools:
    one run per fresh program (its passes mutate the program).

Every unit reads the previous unit's float output, so the chain is one long
dependency path; consts are counted as ops (they are ops in both IRs).
The machine is shared: figures are noisy, run twice.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections import Counter

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ir.builder import Builder, TensorSpec  # noqa: E402
from ir.core import Program  # noqa: E402
from stages.quantization import (SEED_PASS_ORDER, canonicalize_quantization,  # noqa: E402
                                 canonicalize_quantized_lut_pattern, dequantize_to_constexpr,
                                 distributive_quantized_binary_op_scale_normalization,
                                 reorder_lut_per_channel_scale)

F32 = np.float32
D = 4  # activation width
RNG = np.random.default_rng(0)
IDX = RNG.integers(0, 4, (D, D)).astype(np.uint8)
LUT_F = RNG.standard_normal((1, 1, 4, 1)).astype(F32)
LUT_I = RNG.integers(-100, 100, (2, 1, 4, 1)).astype(np.int8)
CHANNEL = np.arange(1, D + 1, dtype=F32).reshape(D, 1) / 4
WQ = RNG.integers(-100, 100, (D, D)).astype(np.int8)


# ---- one vocabulary for both builders --------------------------------------------------

class Ours:
    def __init__(self, b: Builder):
        self.b = b

    def __getattr__(self, op_type):
        return getattr(self.b, op_type)

    def indices(self, arr):
        return self.b.const(arr, dtype="uint2")


class Theirs:
    def __init__(self):
        from coremltools.converters.mil import Builder as mb
        from coremltools.converters.mil.mil import types
        self.mb, self.uint2 = mb, types.nptype_from_builtin(types.uint2)

    def __getattr__(self, op_type):
        return getattr(self.mb, op_type)

    def indices(self, arr):
        return arr.astype(self.uint2)


# ---- pattern units: float activation [1, D] in, float activation [1, D] out --------------

def unit_distributive(k, h):
    x = k.quantize(input=h, scale=F32(0.5), output_dtype="int8")
    y = k.quantize(input=h, scale=F32(0.25), output_dtype="int8")
    s = k.add(x=k.dequantize(input=x, scale=F32(0.5)), y=k.dequantize(input=y, scale=F32(0.25)))
    z = k.quantize(input=k.relu(x=s), scale=F32(1.0), output_dtype="int8")
    return k.dequantize(input=z, scale=F32(1.0))


def unit_const_dequantize(k, h):
    return k.linear(x=h, weight=k.dequantize(input=WQ, scale=F32(0.01)))


def unit_lut_scale(k, h):
    dense = k.constexpr_lut_to_dense(indices=k.indices(IDX), lut=LUT_F)
    return k.linear(x=h, weight=k.constexpr_blockwise_shift_scale(data=dense, scale=CHANNEL))


def unit_quantized_lut(k, h):
    dense = k.constexpr_lut_to_dense(indices=k.indices(IDX), lut=LUT_I)
    return k.linear(x=h, weight=k.constexpr_blockwise_shift_scale(data=dense, scale=CHANNEL))


def unit_mixed(k, h):
    """Every seed pass finds work: zp 0, int reshape, dq->q pair, quantized add, const
    dequantize, float and int8 LUTs (merge_affine only matches iOS17 forms: it scans)."""
    a = k.quantize(input=h, scale=F32(0.5), zero_point=np.int8(0), output_dtype="int8")
    c = k.quantize(input=k.reshape(x=k.dequantize(input=a, scale=F32(0.5)), shape=[2, 2]),
                   scale=F32(0.5), output_dtype="int8")
    e = k.quantize(input=k.dequantize(input=c, scale=F32(0.5)), scale=F32(0.5), output_dtype="int8")
    s = k.add(x=k.dequantize(input=e, scale=F32(0.5)), y=k.dequantize(input=c, scale=F32(0.25)))
    g = k.quantize(input=k.relu(x=s), scale=F32(1.0), output_dtype="int8")
    h = k.reshape(x=k.dequantize(input=g, scale=F32(1.0)), shape=[1, D])
    h = unit_const_dequantize(k, h)
    h = unit_lut_scale(k, h)
    return unit_quantized_lut(k, h)


UNITS = {
    "distributive_quantized_binary_op_scale_normalization": (unit_distributive,
                                                             distributive_quantized_binary_op_scale_normalization),
    "dequantize_to_constexpr": (unit_const_dequantize, dequantize_to_constexpr),
    "reorder_lut_per_channel_scale": (unit_lut_scale, reorder_lut_per_channel_scale),
    "canonicalize_quantized_lut_pattern": (unit_quantized_lut, canonicalize_quantized_lut_pattern),
    "canonicalize_quantization (preset)": (unit_mixed, canonicalize_quantization),
}


def ops_per_unit(unit) -> int:
    b = Builder()
    h = b.input("x", TensorSpec((1, D)))
    unit(Ours(b), h)
    return len(b.ops)


def build_ours(unit, n_units: int) -> Program:
    b = Builder()
    h = b.input("x", TensorSpec((1, D)))
    k = Ours(b)
    for _ in range(n_units):
        h = unit(k, h)
    return Program.make([b.function("main", (h,), "iOS18")])


def build_theirs(unit, n_units: int):
    import coremltools as ct
    k = Theirs()

    @k.mb.program(input_specs=[k.mb.TensorSpec(shape=(1, D))], opset_version=ct.target.iOS18)
    def prog(x):
        h = x
        for _ in range(n_units):
            h = unit(k, h)
        return h
    return prog


def n_ops(prog: Program) -> int:
    return sum(1 for _ in prog.walk())


def timed(fn, runs=1):
    best, out = float("inf"), None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


# ---- (1) scaling ------------------------------------------------------------------------

def scaling(sizes):
    print(f"(1) time per op (us/op), one run per size (best of 3 below 100k); sizes = ops incl. consts")
    print(f"{'stage':56s}" + "".join(f"{s:>12,d}" for s in sizes) + "   max/min")
    for name, (unit, st) in UNITS.items():
        per_unit = ops_per_unit(unit)
        row = []
        for size in sizes:
            prog = build_ours(unit, max(1, size // per_unit))
            secs, out = timed(lambda: st(prog), runs=3 if size < 100_000 else 1)
            assert out is not prog, f"{name} found nothing to do"
            row.append(secs / n_ops(prog) * 1e6)
            del prog, out
        print(f"{name:56s}" + "".join(f"{r:12.2f}" for r in row) + f"   {max(row) / min(row):7.2f}")


# ---- (2) vs coremltools ----------------------------------------------------------------------

def their_passes(prog):
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY
    for name in SEED_PASS_ORDER:
        PASS_REGISTRY[f"common::{name}"](prog)


def their_op_count(prog) -> int:
    def count(block):
        return sum(1 + sum(count(b) for b in op.blocks) for op in block.operations)
    return count(prog.functions["main"])


def versus_coremltools(size: int):
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    unit = unit_mixed
    n_units = max(1, size // ops_per_unit(unit))
    ours = build_ours(unit, n_units)
    t_build_theirs, theirs = timed(lambda: build_theirs(unit, n_units))
    print(f"\n(2) mixed graph, {n_units} units: ours {n_ops(ours):,d} ops, coremltools {their_op_count(theirs):,d} ops "
          f"(their build: {t_build_theirs:.1f} s)")
    n_theirs = their_op_count(theirs)
    t_ours, after = timed(lambda: canonicalize_quantization(ours), runs=3)
    t_theirs, _ = timed(lambda: their_passes(theirs))
    ours_kinds = Counter(op.op_type for _, op in after.walk() if op.op_type != "const")
    their_kinds = Counter(op.op_type for op in theirs.functions["main"].operations if op.op_type != "const")
    print(f"    ours (canonicalize_quantization, to a fixed point): {t_ours:8.3f} s   "
          f"{t_ours / n_ops(ours) * 1e6:7.2f} us/op")
    print(f"    coremltools 9.0 (same 9 passes, one round):          {t_theirs:8.3f} s   "
          f"{t_theirs / n_theirs * 1e6:7.2f} us/op")
    print(f"    ratio coremltools / ours: {t_theirs / t_ours:.2f}x  (>1: ours faster)")
    same = "same" if ours_kinds == their_kinds else "DIFFERENT"
    print(f"    non-const ops after: {same} counts per op type: ours {dict(sorted(ours_kinds.items()))}")
    if same != "same":
        print(f"                                          coremltools {dict(sorted(their_kinds.items()))}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true", help="also 1M ops (several minutes, ~GBs of RAM)")
    ap.add_argument("--no-coremltools", action="store_true")
    ap.add_argument("--versus-size", type=int, default=30_000)
    args = ap.parse_args()
    sizes = [1_000, 10_000, 100_000] + ([1_000_000] if args.full else [])
    scaling(sizes)
    if not args.no_coremltools:
        versus_coremltools(args.versus_size)


if __name__ == "__main__":
    main()
