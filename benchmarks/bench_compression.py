"""Compression stages end to end vs coremltools 9.0's own passes, on the same 4096x4096 fp16 weight.

    python benchmarks/bench_compression.py

Ours: the stage run on an IR program (linear with the weight), finding the weight, compressing,
computing the per-weight stats from the op kernels' reconstruction and splicing the new ops in;
best of 3.  coremltools: its compression pass objects (ct.optimize.coreml's palettize_weights /
linear_quantize_weights graph passes, what ct.optimize.coreml.* runs on a model) applied to a MIL
program built with mb holding the same weight; one run (its k-means takes seconds), program
construction not timed (best of 3 for int8, which takes about a second).  coremltools uses its
vendored kmeans1d (an optimal 1-D solver) for k-means when importable, as here; the scikit-learn
fallback is timed in bench_compression_kernels.py.  MSE: of each side's reconstruction against the original weight.
Our k-means runs compiled by numba (the [fast] extra) where installed; the "numpy engine" rows set
WEIGHTPRESS_JIT=0, which is what an install without the extra runs.
Peak memory: tracemalloc peak of our stage run, in multiples of the weight's bytes.
"""
from __future__ import annotations

import logging
import os
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from ir.builder import TensorSpec, program  # noqa: E402
from stages.compression import affine_quantize_weights, decompress_weights, palettize_weights  # noqa: E402
from stages.compression.numeric import kmeans1d_jit  # noqa: E402

SHAPE = (4096, 4096)


def ours_program(w):
    @program(inputs={"x": TensorSpec((1, SHAPE[1]), "fp16")})
    def net(b, x):
        return b.linear(x=x, weight=b.const(w, name="w"))
    return net


def ct_program(w):
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, SHAPE[1]), dtype=types.fp16)], opset_version=ct.target.iOS18)
    def prog(x):
        return mb.linear(x=x, weight=np.array(w))
    return prog


def ct_dense(prog):
    """coremltools' own reconstruction of the compressed weight (its decompress pass)."""
    from coremltools.optimize.coreml._quantization_passes import WeightDecompressor

    WeightDecompressor(op_selector=lambda op: True).apply(prog)
    for op in prog.functions["main"].operations:
        if op.op_type == "linear":
            return op.weight.val
    raise RuntimeError("no decompressed weight found")


def ct_run(w, make_pass, runs=1):
    best = float("inf")
    for _ in range(runs):
        prog = ct_program(w)
        p = make_pass()
        t = time.perf_counter()
        p.apply(prog)
        best = min(best, time.perf_counter() - t)
    kinds = sorted({op.op_type for op in prog.functions["main"].operations if op.op_type.startswith("constexpr")})
    return best, ct_dense(prog), kinds


def ours_run(w, st, runs=3):
    net = ours_program(w)
    best, result = float("inf"), None
    for _ in range(runs):
        t = time.perf_counter()
        result = st.run(net)
        best = min(best, time.perf_counter() - t)
    dense = decompress_weights(result.program).main.ops[0].outputs[0].val
    return best, dense, result


def peak_multiple(w, st):
    net = ours_program(w)
    tracemalloc.start()
    st.run(net)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / w.nbytes


def mse(a, b):
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def main():
    logging.disable(logging.WARNING)
    import coremltools.optimize.coreml as cto
    from coremltools.optimize.coreml._quantization_passes import linear_quantize_weights as ct_quant
    from coremltools.optimize.coreml._quantization_passes import palettize_weights as ct_pal

    import coremltools._deps as ct_deps

    w = (np.random.default_rng(0).standard_normal(SHAPE) * 0.02).astype(np.float16)
    w.flags.writeable = False
    kmeans = "its vendored kmeans1d (optimal 1-D)" if ct_deps._HAS_KMEANS1D else "scikit-learn KMeans"
    print(f"weight {w.shape} {w.dtype}, {w.nbytes / 2**20:.0f} MiB; ours best of 3, coremltools one run for "
          f"k-means, best of 3 for int8; coremltools' k-means: {kmeans}\n")

    def cfg(op_config):
        return cto.OptimizationConfig(global_config=op_config)

    pal_tensor = lambda: ct_pal(config=cfg(cto.OpPalettizerConfig(mode="kmeans", nbits=4, weight_threshold=2048)))
    pal_grouped = lambda: ct_pal(config=cfg(cto.OpPalettizerConfig(
        mode="kmeans", nbits=4, granularity="per_grouped_channel", group_size=16, weight_threshold=2048)))
    int8 = lambda: ct_quant(config=cfg(cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8",
                                                                   granularity="per_channel", weight_threshold=2048)))
    grouped = dict(nbits=4, granularity="per_grouped_channel", group_size=16)
    # (label, target, coremltools pass (run once per pass, shared by rows), its runs, our stage, k-means engine)
    cases = [
        ("4-bit k-means per_tensor", 30, pal_tensor, 1, palettize_weights(nbits=4), "jit"),
        ("  numpy engine (no [fast] extra)", 30, pal_tensor, 1, palettize_weights(nbits=4), "numpy"),
        ("4-bit k-means per_grouped_channel/16", 30, pal_grouped, 1, palettize_weights(**grouped), "jit"),
        ("  numpy engine: auto = banded 'fast'", 30, pal_grouped, 1, palettize_weights(**grouped), "numpy"),
        ("  numpy engine, kmeans_method='exact'", 30, pal_grouped, 1,
         palettize_weights(**grouped, kmeans_method="exact"), "numpy"),
        ("int8 per-channel linear_symmetric", 5, int8, 3,
         affine_quantize_weights(dtype="int8", granularity="per_channel"), "jit"),
    ]
    if not kmeans1d_jit.AVAILABLE:
        cases = [c for c in cases if c[5] == "numpy" or not c[0].startswith("4-bit")]
        print("numba is not installed: the compiled k-means rows are left out (pip install -e '.[fast]')\n")
    else:
        import numba
        first = first_jit_call()
        print(f"k-means engine 'jit': numba {numba.__version__}; first call in this process {first:.2f} s "
              f"(compiles on a machine's first use, then loads from numba's disk cache)\n")
    header = f"{'case':<38} {'ours s':>8} {'ct s':>8} {'speed-up':>9} {'target':>7}  {'MSE ours':>12} {'MSE ct':>12} {'ours/ct':>9}  {'peak mem':>8}"
    print(header)
    print("-" * len(header))
    peer = {}
    for label, target, make_pass, ct_runs, st, engine in cases:
        os.environ["WEIGHTPRESS_JIT"] = "1" if engine == "jit" else "0"
        ours_s, ours_dense, result = ours_run(w, st)
        if make_pass not in peer:
            peer[make_pass] = ct_run(w, make_pass, ct_runs)
        ct_s, ct_dense_w, kinds = peer[make_pass]
        m_ours, m_ct = mse(ours_dense, w), mse(ct_dense_w, w)
        stat_mse = result.stats["weights"]["w"]["mse"]
        # the stats' documented precision (stages/compression/figures.py): float32 pass, float64 chunk sums
        assert abs(stat_mse - m_ours) <= 2e-6 * m_ours, (stat_mse, m_ours)
        ratio = ct_s / ours_s
        verdict = "met" if ratio >= target else "MISSED"
        peak = peak_multiple(w, st)
        print(f"{label:<38} {ours_s:8.3f} {ct_s:8.3f} {ratio:8.1f}x {target:>5}x {verdict:<6} "
              f"{m_ours:12.6e} {m_ct:12.6e} {m_ours / m_ct:9.6f}  {peak:7.2f}x")
        print(f"{'':<38} forms: ours {sorted({o.op_type for o in result.program.main.ops if o.op_type.startswith('constexpr')})}"
              f", coremltools {kinds}")
    os.environ.pop("WEIGHTPRESS_JIT")


def first_jit_call():
    """Seconds of the first compiled k-means call in this process (compile or cache load)."""
    from stages.compression.numeric import kmeans1d as km
    seg = km.Segments(np.arange(40.0), np.ones(40), np.array([0, 40]))
    t = time.perf_counter()
    km.bracketed_boundaries(seg, km.prefix_sums(seg), 4, engine="jit")
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
