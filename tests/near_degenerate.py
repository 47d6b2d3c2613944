"""The hard case for the banded k-means, shared by the numeric and the stage tests.

Group 67 (rows 1072..1087) of the benchmark weight (normal * 0.02, 4096x4096 fp16, seed 0):
two partitions whose middle boundaries sit ~2,000 histogram positions apart (both near 0,
where fp16 values are densest) differ by 8.8e-4 in SSE, and the banded DP's 128-run coarse
start picks the worse one.
"""
from functools import lru_cache

import numpy as np

from stages.compression.numeric import kmeans1d as km


@lru_cache(maxsize=1)
def near_degenerate_group() -> np.ndarray:
    """(16, 4096) fp16, read-only."""
    w = (np.random.default_rng(0).standard_normal((4096, 4096)) * 0.02).astype(np.float16)
    group = np.ascontiguousarray(w[1072:1088])
    group.flags.writeable = False
    return group


def near_degenerate_problem():
    """The group as one k-means segment (distinct values, counts) and its prefix sums."""
    uniq, counts = np.unique(near_degenerate_group().astype(np.float64), return_counts=True)
    seg = km.Segments(uniq, counts.astype(np.float64), np.array([0, len(uniq)]))
    return seg, km.prefix_sums(seg)
