"""Numeric compression kernels vs coremltools 9.0's own implementations, same weights.

    python benchmarks/bench_compression_kernels.py

(a) 4-bit k-means palettization, per tensor, 4096x4096 fp16 (normal * 0.02, seed 0)
(b) the same, per_grouped_channel with group_size 16 (256 LUTs)
(c) int8 per-channel linear_symmetric affine quantization
(d) peak memory of ours (tracemalloc) as a multiple of the weight's bytes

Ours: best of 3 runs.  coremltools: one run (its k-means takes seconds).  coremltools calls
are its static kernels on numpy arrays (no model conversion):
palettize_weights.grouped_channelwise_compress / linear_quantize_weights.blockwise_compress.

coremltools 9.0 ships its own copy of the optimal C++ 1-D solver (``coremltools._deps.kmeans1d``)
and uses it for fp16 tensors of >= 10,000 elements; the pip ``kmeans1d`` package plays no part.
If that module cannot be imported it falls back to scikit-learn's KMeans (k-means++, 1 init, not
optimal).  Both peers are timed: the second in a subprocess with the vendored module hidden
(``--skip-sklearn-peer`` leaves it out; it takes about 1.5 minutes).

Exactness: each group of (b) is also solved by that optimal solver (weighted, on the group's
distinct values) and the fp16 LUTs compared group by group.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from stages.compression.numeric import affine_dequantize, affine_quantize, lut_to_dense, palettize  # noqa: E402
from stages.compression.numeric import kmeans1d as km  # noqa: E402


def best_of(fn, runs=3):
    best, out = float("inf"), None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def once(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def peak_multiple(fn, nbytes):
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / nbytes


def mse(a, b):
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def row(label, ours_s, theirs_s, target, extra=""):
    ratio = theirs_s / ours_s
    verdict = "met" if ratio >= target else f"MISSED (x{target / ratio:.1f} short)"
    print(f"{label:<38} ours {ours_s * 1e3:8.1f} ms   coremltools {theirs_s * 1e3:9.1f} ms   "
          f"speed-up {ratio:6.1f}x (target {target}x: {verdict}){extra}")


def bench_weight():
    w = (np.random.default_rng(0).standard_normal((4096, 4096)) * 0.02).astype(np.float16)
    w.flags.writeable = False
    return w


def sklearn_peer():
    """Child process: coremltools' k-means with its vendored kmeans1d hidden (scikit-learn path)."""
    sys.modules["coremltools._deps.kmeans1d"] = None  # makes its `from . import kmeans1d` fail
    logging.disable(logging.WARNING)
    import coremltools._deps as deps
    from coremltools.optimize import _utils as ct_utils
    from coremltools.optimize.coreml._quantization_passes import palettize_weights
    assert not deps._HAS_KMEANS1D
    w, out = bench_weight(), {}
    for label, group in (("a", 0), ("b", 16)):
        s, ref = once(lambda: palettize_weights.grouped_channelwise_compress(np.array(w), "KMEANS", 4, 0, group))
        out[label] = (s, mse(ct_utils.lut_to_dense(ref.indices, ref.lut), w))
    print(json.dumps(out))


def run_sklearn_peer():
    cmd = [sys.executable, os.path.abspath(__file__), "--sklearn-peer-child"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_sklearn_row(label, ours_s, m_ours, peer):
    s, m = peer
    print(f"{'':<38} coremltools without kmeans1d (scikit-learn) {s * 1e3:9.1f} ms: speed-up {s / ours_s:6.1f}x, "
          f"MSE {m:.9e} (ours/theirs {m_ours / m:.7f})")


def exactness_per_group(w, ours, group):
    """Groups whose fp16 LUT (nearest assignment) is worse than the optimal solver's.

    The solver is coremltools' vendored copy of kmeans1d (it takes weights; the pip package 0.5
    does not, and on the raw 65,536 values per group it takes ~90 s for the 256 groups)."""
    try:
        from coremltools._deps import kmeans1d
    except ImportError:
        return None
    rows = w.reshape(w.shape[0] // group, -1)
    lut = ours.lut.reshape(rows.shape[0], -1).astype(np.float64)
    worse, worst = 0, 0.0
    for g, row in enumerate(rows):
        vals, counts = np.unique(row.astype(np.float64), return_counts=True)
        opt = np.asarray(kmeans1d.cluster(vals, len(lut[g]), weights=counts.astype(np.float64)).centroids)
        sse = [float((counts * np.min((vals[:, None] - c[None].astype(np.float16).astype(np.float64)) ** 2, 1)).sum())
               for c in (lut[g], opt)]
        if sse[0] > sse[1] * (1 + 1e-12):
            worse, worst = worse + 1, max(worst, sse[0] / sse[1] - 1)
    return worse, worst, rows.shape[0]


def main(with_sklearn_peer=True):
    logging.disable(logging.WARNING)  # coremltools' import-time proxy warnings on Linux
    from coremltools.optimize import _utils as ct_utils
    from coremltools.optimize.coreml._quantization_passes import linear_quantize_weights, palettize_weights

    w = bench_weight()
    peer = run_sklearn_peer() if with_sklearn_peer else None
    print(f"weight {w.shape} {w.dtype}, {w.nbytes / 2**20:.0f} MiB\n")

    # (a) per-tensor 4-bit k-means
    ours_s, ours = best_of(lambda: palettize(w, 4))
    ct_s, ref = once(lambda: palettize_weights.grouped_channelwise_compress(np.array(w), "KMEANS", 4, 0, 0))
    m_ours, m_ref = mse(lut_to_dense(ours), w), mse(ct_utils.lut_to_dense(ref.indices, ref.lut), w)
    row("(a) k-means 4-bit per_tensor", ours_s, ct_s, 30,
        f"\n{'':<38} MSE ours {m_ours:.9e}  coremltools {m_ref:.9e}  (ours/theirs {m_ours / m_ref:.7f})")
    if peer:
        print_sklearn_row("a", ours_s, m_ours, peer["a"])
    bits = w.view(np.uint16).ravel()
    vals, cnts = np.unique(w.astype(np.float64), return_counts=True)
    seg = km.Segments(vals, cnts.astype(np.float64), np.array([0, len(vals)]))
    p = km.prefix_sums(seg)
    opt = km.cost(p, km.exact_boundaries(seg, p, 16))[0] / w.size
    print(f"{'':<38} optimum (exact DP, float64 LUT) {opt:.9e}; the rest of both MSEs is the fp16 LUT rounding")
    del bits

    # (b) per-grouped-channel, group_size 16
    ours_s, ours = best_of(lambda: palettize(w, 4, granularity="per_grouped_channel", group_size=16))
    ct_s, ref = once(lambda: palettize_weights.grouped_channelwise_compress(np.array(w), "KMEANS", 4, 0, 16))
    m_ours, m_ref = mse(lut_to_dense(ours), w), mse(ct_utils.lut_to_dense(ref.indices, ref.lut), w)
    row("(b) k-means 4-bit per_grouped_channel/16", ours_s, ct_s, 30,
        f"\n{'':<38} MSE ours {m_ours:.9e}  coremltools {m_ref:.9e}  (ours/theirs {m_ours / m_ref:.7f})")
    if peer:
        print_sklearn_row("b", ours_s, m_ours, peer["b"])
    check = exactness_per_group(w, ours, 16)
    if check is None:
        print(f"{'':<38} (coremltools' kmeans1d missing: groups not checked against the optimum)")
    else:
        print(f"{'':<38} groups worse than the optimal solver (kmeans1d, same fp16 rounding): "
              f"{check[0]} of {check[2]} (worst +{check[1]:.2e} relative SSE)")

    # (c) int8 per-channel symmetric
    ours_s, ours = best_of(lambda: affine_quantize(w, dtype="int8", granularity="per_channel", axis=0))
    ct_s, _ = best_of(lambda: linear_quantize_weights.blockwise_compress(np.array(w), 8, "LINEAR_SYMMETRIC", True, [1, 0]))
    ref = linear_quantize_weights.blockwise_compress(np.array(w), 8, "LINEAR_SYMMETRIC", True, [1, 0])
    m_ours = mse(affine_dequantize(ours.data, ours.scale, ours.zero_point, out_dtype=np.float64), w)
    m_ref = mse(ref.data * ref.scale.astype(np.float64), w)
    row("(c) int8 per-channel linear_symmetric", ours_s, ct_s, 5,
        f"\n{'':<38} MSE ours {m_ours:.9e}  coremltools {m_ref:.9e}  (coremltools best of 3 here)")

    # (d) peak memory
    print("\n(d) peak traced memory of ours, in multiples of the weight's bytes (target: a few)")
    for label, fn in (("k-means per_tensor", lambda: palettize(w, 4)),
                      ("k-means per_grouped_channel/16", lambda: palettize(w, 4, granularity="per_grouped_channel", group_size=16)),
                      ("int8 per-channel affine", lambda: affine_quantize(w))):
        print(f"    {label:<34} {peak_multiple(fn, w.nbytes):5.2f}x")


if __name__ == "__main__":
    if "--sklearn-peer-child" in sys.argv:
        sklearn_peer()
    else:
        main(with_sklearn_peer="--skip-sklearn-peer" not in sys.argv)
