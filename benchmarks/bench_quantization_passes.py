"""The quantization graph passes: cost per op as graphs grow, and each pass vs coremltools 9.0.

    python benchmarks/bench_quantization_passes.py            # 1k, 10k, 100k ops + every pass vs coremltools at 30k
    python benchmarks/bench_quantization_passes.py --full     # also 1M ops (several minutes, GBs of RAM)
    python benchmarks/bench_quantization_passes.py --no-coremltools
    python benchmarks/bench_quantization_passes.py --only dead_code_elimination,canonicalize_quantization

Every figure is CPU time (time.process_time) of the pass alone; graphs are built first,
and each tool runs once on a small graph (untimed warm-up) before anything is timed.
Each measurement is repeated --runs times (default 3) and the MEDIAN is reported, the
same number of runs at every size and for both tools (the machine is shared: one run
varies by up to 2-3x with the load, so a best-of-N at small sizes against a single run
at 1M would itself make a row look steeper).

(1) For each of the eight seed passes, dead_code_elimination and the
    canonicalize_quantization preset, a chain repeating a unit the pass rewrites
    (the preset: a mixed unit where every seed pass finds work) at ~1k, 10k,
    100k (and 1M) ops: microseconds per op, and max/min across sizes (target:
    within 1.3x, i.e. flat). Below ~20k ops one measurement times several calls
    on the same input (their outputs freed after the clock stops) so that a
    short call is not timed alone. Two control rows do linear work no pass can
    avoid, so that their growth is the machine's (caches, allocator), not any
    pass's: one rebuilds every op once (Op.replace: the allocation a pass does per
    op, in list order), the other indexes every value by name (one dict insert per
    value: the least a use-def driver does, in hash order); the script prints which
    passes grow no more than that control does.
(2) At ~30k ops, the same units built twice, with our builder and with
    coremltools' MIL builder (mb.program), and each pass timed on both; the preset
    against coremltools running the same eight passes + dead_code_elimination in the
    preset's order, once (one round reaches the same op counts, checked below).
    coremltools' passes mutate their program, so each of its runs gets a freshly
    built one (building is not timed); a coremltools pass taking over 20 s is run
    once (more runs could only lower its time, i.e. lower our ratio). Target:
    ratio >= 3 everywhere. "work" compares the non-const op counts per op type
    after the pass. coremltools' builder adds linear's default bias as a const, so
    its graphs hold more consts in the rows using linear (same non-const ops).

Every unit reads the previous unit's float output, so the chain is one long
dependency path; consts are counted as ops (they are ops in both IRs).
The machine is shared: figures are noisy; the script prints the load average it started with.
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
from ir.core import Block, Program, gc_paused  # noqa: E402
from stages.cleanup import dead_code_elimination  # noqa: E402
from stages.quantization import (SEED_PASS_ORDER, canonicalize_quantization,  # noqa: E402
                                 canonicalize_quantized_lut_pattern, dequantize_quantize_pair_elimination,
                                 dequantize_to_constexpr, distributive_quantized_binary_op_scale_normalization,
                                 int_op_canonicalization, merge_affine_dequantize_with_consecutive_ops,
                                 nullify_redundant_quantization_zero_point, reorder_lut_per_channel_scale)

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


def unit_int_op(k, h):
    a = k.quantize(input=h, scale=F32(0.5), output_dtype="int8")
    r = k.reshape(x=k.dequantize(input=a, scale=F32(0.5)), shape=[2, 2])
    b = k.quantize(input=r, scale=F32(0.5), output_dtype="int8")
    return k.reshape(x=k.dequantize(input=b, scale=F32(0.5)), shape=[1, D])


def unit_zero_point(k, h):
    a = k.quantize(input=h, scale=F32(0.5), zero_point=np.int8(0), output_dtype="int8")
    h = k.dequantize(input=a, scale=F32(0.5), zero_point=np.int8(0))
    b = k.quantize(input=h, scale=F32(0.5), zero_point=np.int8(-128), output_dtype="int8")
    return k.dequantize(input=b, scale=F32(0.5), zero_point=np.int8(-128))


def unit_pair(k, h):
    a = k.quantize(input=h, scale=F32(0.5), output_dtype="int8")
    b = k.quantize(input=k.dequantize(input=a, scale=F32(0.5)), scale=F32(0.5), output_dtype="int8")
    return k.dequantize(input=b, scale=F32(0.5))


def unit_merge_affine(k, h):
    """constexpr_affine_dequantize -> transpose (an iOS17 form: built with opset iOS17)."""
    w = k.constexpr_affine_dequantize(quantized_data=WQ, zero_point=np.int8(0), scale=F32(0.01), axis=0)
    return k.linear(x=h, weight=k.transpose(x=w, perm=[1, 0]))


def unit_dead(k, h):
    k.relu(x=k.mul(x=h, y=F32(2.0)))  # read by nothing
    return k.relu(x=h)


# stage -> (unit, opset); the row order of both tables
PASSES = {
    int_op_canonicalization: (unit_int_op, "iOS18"),
    nullify_redundant_quantization_zero_point: (unit_zero_point, "iOS18"),
    dequantize_quantize_pair_elimination: (unit_pair, "iOS18"),
    distributive_quantized_binary_op_scale_normalization: (unit_distributive, "iOS18"),
    dequantize_to_constexpr: (unit_const_dequantize, "iOS18"),
    reorder_lut_per_channel_scale: (unit_lut_scale, "iOS18"),
    canonicalize_quantized_lut_pattern: (unit_quantized_lut, "iOS18"),
    merge_affine_dequantize_with_consecutive_ops: (unit_merge_affine, "iOS17"),
    dead_code_elimination: (unit_dead, "iOS18"),
    canonicalize_quantization: (unit_mixed, "iOS18"),
}


def ops_per_unit(unit) -> int:
    b = Builder()
    h = b.input("x", TensorSpec((1, D)))
    unit(Ours(b), h)
    return len(b.ops)


def build_ours(unit, n_units: int, opset: str = "iOS18") -> Program:
    b = Builder()
    h = b.input("x", TensorSpec((1, D)))
    k = Ours(b)
    for _ in range(n_units):
        h = unit(k, h)
    return Program.make([b.function("main", (h,), opset)])


def build_theirs(unit, n_units: int, opset: str = "iOS18"):
    import coremltools as ct
    k = Theirs()

    @k.mb.program(input_specs=[k.mb.TensorSpec(shape=(1, D))], opset_version=getattr(ct.target, opset))
    def prog(x):
        h = x
        for _ in range(n_units):
            h = unit(k, h)
        return h
    return prog


def n_ops(prog: Program) -> int:
    return sum(1 for _ in prog.walk())


def cpu_timed(fn):
    t = time.process_time()
    out = fn()
    return time.process_time() - t, out


# ---- (1) scaling ------------------------------------------------------------------------

MIN_OPS_PER_MEASUREMENT = 20_000  # below this, one measurement times several calls


def measured(fn, n_ops: int):
    """CPU seconds of one call of fn, timing ceil(MIN_OPS_PER_MEASUREMENT / n_ops) calls
    together (their results are kept until the clock stops, then freed untimed)."""
    calls = max(1, -(-MIN_OPS_PER_MEASUREMENT // n_ops))
    outs = []
    t = time.process_time()
    for _ in range(calls):
        outs.append(fn())
    secs = (time.process_time() - t) / calls
    return secs, outs[0]


def spread(xs) -> float:
    return max(xs) / min(xs)


def median(xs):
    return float(np.median(xs))


def rebuild_every_op(prog: Program) -> Program:
    """The control: every op rebuilt once (what a pass allocates per op), nothing matched."""
    with gc_paused():
        fns = {n: f.replace(block=Block.make(f.block.inputs, [op.replace() for op in f.block.ops],
                                             f.block.outputs)) for n, f in prog.functions.items()}
        return Program.make(fns, prog.attrs)


def index_every_value(prog: Program) -> dict:
    """The second control: every value's producer by name, one dict insert per value."""
    with gc_paused():
        return {v.name: op for _, op in prog.walk() for v in op.outputs}


CONTROLS = (("(control: rebuild every op once)", rebuild_every_op),
            ("(control: index every value by name)", index_every_value))
INDEX_CONTROL = CONTROLS[1][0]


def scaling(sizes, passes, runs: int, control: bool = True):
    print(f"(1) CPU time per op (us/op), median of {runs} runs at every size; sizes = ops incl. consts")
    print(f"{'stage':56s}" + "".join(f"{s:>11,d}" for s in sizes) + "   max/min")
    rows = {}
    todo = [(st.name, st, unit, opset) for st, (unit, opset) in passes.items()]
    if control:
        todo += [(label, fn, unit_pair, "iOS18") for label, fn in CONTROLS]
    for name, st, unit, opset in todo:
        per_unit = ops_per_unit(unit)
        st(build_ours(unit, 2, opset))  # warm-up
        row = []
        for size in sizes:
            prog = build_ours(unit, max(1, size // per_unit), opset)
            n = n_ops(prog)
            times = []
            for _ in range(runs):
                secs, out = measured(lambda: st(prog), n)
                times.append(secs)
                assert out is not prog, f"{name} found nothing to do"
                del out
            row.append(median(times) / n * 1e6)
            del prog
        rows[name] = row
        print(f"{name:56s}" + "".join(f"{r:11.2f}" for r in row) + f"   {max(row) / min(row):7.2f}", flush=True)
    return rows


# ---- (2) vs coremltools ----------------------------------------------------------------------

def their_pass(name: str):
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY
    return PASS_REGISTRY[f"common::{name}"]


def their_passes(prog):
    for name in SEED_PASS_ORDER:
        their_pass(name)(prog)


def their_op_count(prog) -> int:
    def count(block):
        return sum(1 + sum(count(b) for b in op.blocks) for op in block.operations)
    return count(prog.functions["main"])


def _kinds_ours(prog) -> Counter:
    return Counter(op.op_type for _, op in prog.walk() if op.op_type != "const")


def _kinds_theirs(prog) -> Counter:
    return Counter(op.op_type for op in prog.functions["main"].operations if op.op_type != "const")


def versus_coremltools(size: int, passes, runs: int):
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    print(f"\n(2) each pass at ~{size:,d} ops, CPU seconds (median of {runs} runs each), ours vs coremltools 9.0")
    print(f"{'stage':56s}{'ops ours':>9s}{'theirs':>8s}{'ours s':>9s}{'theirs s':>10s}{'ratio':>8s}  work")
    ratios = {}
    for st, (unit, opset) in passes.items():
        n_units = max(1, size // ops_per_unit(unit))
        run_theirs = their_passes if st is canonicalize_quantization else their_pass(st.name)
        st(build_ours(unit, 2, opset))  # warm-up, both tools
        run_theirs(build_theirs(unit, 2, opset))
        ours = build_ours(unit, n_units, opset)
        t_ours = []
        for _ in range(runs):
            secs, after = cpu_timed(lambda: st(ours))
            t_ours.append(secs)
        t_theirs, n_theirs, kinds_theirs = [], 0, None
        for i in range(runs):
            prog = build_theirs(unit, n_units, opset)
            n_theirs = their_op_count(prog)
            secs, _ = cpu_timed(lambda: run_theirs(prog))
            t_theirs.append(secs)
            kinds_theirs = _kinds_theirs(prog)
            del prog
            if secs > 20:
                break
        same = _kinds_ours(after) == kinds_theirs
        t_o, t_t = median(t_ours), median(t_theirs)
        ratios[st.name] = t_t / t_o
        print(f"{st.name:56s}{n_ops(ours):9,d}{n_theirs:8,d}{t_o:9.3f}{t_t:10.3f}{t_t / t_o:7.2f}x"
              f"  {'same' if same else 'DIFFERENT'}", flush=True)
        if not same:
            print(f"{'':8s}ours {dict(sorted(_kinds_ours(after).items()))}\n"
                  f"{'':8s}coremltools {dict(sorted(kinds_theirs.items()))}")
        del ours, after
    return ratios


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true", help="also 1M ops (several minutes, ~GBs of RAM)")
    ap.add_argument("--no-coremltools", action="store_true")
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--versus-size", type=int, default=30_000)
    ap.add_argument("--runs", type=int, default=3, help="runs per measurement (median reported), both tools")
    ap.add_argument("--no-control", action="store_true", help="skip the control row of the scaling table")
    ap.add_argument("--sizes", default="", help="comma-separated op counts for (1) instead of 1k,10k,100k[,1M]")
    ap.add_argument("--only", default="", help="comma-separated stage names (default: every pass and the preset)")
    args = ap.parse_args()
    wanted = set(filter(None, args.only.split(",")))
    passes = {st: v for st, v in PASSES.items() if not wanted or st.name in wanted}
    sizes = [1_000, 10_000, 100_000] + ([1_000_000] if args.full else [])
    if args.sizes:
        sizes = [int(x) for x in args.sizes.split(",")]
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs; "
          f"python {sys.version.split()[0]}")
    if not args.no_scaling:
        rows = scaling(sizes, passes, runs=args.runs, control=not args.no_control)
        index = rows.get(INDEX_CONTROL)
        rows = {n: r for n, r in rows.items() if not n.startswith("(control")}
        flat = [n for n, r in rows.items() if max(r) / min(r) > 1.3]
        print(f"    flat within 1.3x: {len(rows) - len(flat)}/{len(rows)}" + (f"; not: {', '.join(flat)}" if flat else ""))
        if index:
            steeper = [n for n, r in rows.items() if spread(r) > spread(index)]
            print(f"    grow no more than the index control ({spread(index):.2f}x): {len(rows) - len(steeper)}/{len(rows)}"
                  + (f"; steeper: {', '.join(steeper)}" if steeper else ""))
    if not args.no_coremltools:
        ratios = versus_coremltools(args.versus_size, passes, args.runs)
        short = [n for n, r in ratios.items() if r < 3]
        print(f"    >= 3x faster than coremltools: {len(ratios) - len(short)}/{len(ratios)}"
              + (f"; short: {', '.join(short)}" if short else ""))


if __name__ == "__main__":
    main()
