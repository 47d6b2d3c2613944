"""Where calibration statistics live: inside the program, so that every calibrated stage
stays a pure function of (program, options) and caching by digest keeps working.

    program.attrs["calibration"]       = {weight name: {statistic: value}}   (a PMap of PMaps)
    program.attrs["calibration_info"]  = {"data_digest": str, "batches": int, "rows": int,
                                          "evaluator": str, "probe_batches": (feeds...)}

``probe_batches`` (with a measured sensitivity, when small: sensitivity.py) are the batches the
sensitivity was measured on, {input name: read-only array} each, so that mixed_precision can
measure a candidate form end to end on the same samples.

The weight name is the value name its consumers read (``WeightView.name``; for a function
other than main, ``"fn/name"`` as the compression stats key it). Per weight:

- ``"input_moment"``: 1-D float64, the mean of x_c**2 over every row the weight saw, one
  entry per input channel c (the reduction axis of linear / matmul; the input channels of
  a conv's input: C_in, ``groups`` times the weight's C_in/groups);
- ``"gram"``: 2-D float64 ``X^T X / n`` over the same rows (linear / matmul weights, and a
  conv's unfolded patch rows when groups == 1: [C_in * prod(k)]^2, columns in the order of the
  weight flattened to [C_out, C_in * prod(k)], collect.py / patches.py), where GPTQ needs the
  full matrix; absent when the collection was asked not to keep it or it would be too large;
- ``"group_gram"``: 3-D float64 [groups, D, D], a grouped (e.g. depthwise) conv's patch Gram
  per group of output channels, D = C_in/groups * prod(k) (instead of ``gram``);
- ``"count"``: int, n, the rows (tokens, pixels) the statistics average over;
- ``"gram_rows"``: int, with a Gram: the rows it averages over (for a conv, its patch rows,
  after the per-batch subsampling collect.py states; for linear / matmul weights, n);
- ``"token_counts"``: 1-D float64 for an embedding table read by a gather along axis 0:
  how often each row was looked up;
- ``"sensitivity"``: float, only when calibrate was asked for it: the weight's end-to-end
  output error per unit of its output-error proxy (sensitivity.py);
- ``"sensitivity_per_batch"``: 1-D float64, with it: the same ratio for each probe batch (a
  sample when the data is fed one sample at a time), what the worst-sample allocation reads.

A weight read by several ops (a shared weight) has one entry summing all of them. Every
array is read-only. The digest of the program covers the statistics (program attrs are
part of it), so a stage run on different statistics has a different cache key; exporters
ignore both attrs (they read only the keys they know).

``calibration_stats(program, weight_name) -> Mapping | None`` is the one accessor every
consumer (the calibrated stages, the mixed-precision allocator) uses.
"""
from __future__ import annotations

from typing import Mapping, Optional

import numpy as np
from pyrsistent import pmap

ATTR = "calibration"
INFO_ATTR = "calibration_info"
STATISTICS = ("input_moment", "gram", "group_gram", "gram_rows", "count", "token_counts", "sensitivity",
              "sensitivity_per_batch")


def calibration_stats(program, weight_name: str) -> Optional[Mapping]:
    """The statistics recorded for one weight (see the module docstring), or None."""
    table = program.attrs.get(ATTR)
    if table is None:
        return None
    return table.get(weight_name)


def calibration_info(program) -> Optional[Mapping]:
    """What the statistics were collected from (data digest, batches, rows, evaluator), or None."""
    return program.attrs.get(INFO_ATTR)


def has_calibration(program) -> bool:
    return bool(program.attrs.get(ATTR))


def _read_only(value):
    """The value itself, or a read-only copy of a writeable array (the statistics are never written)."""
    if isinstance(value, np.ndarray):
        if value.flags.writeable:
            value = value.copy()
            value.flags.writeable = False
        return value
    return value


def with_calibration(program, table: Mapping, info: Mapping):
    """A new program carrying `table` ({weight: {statistic: value}}) and `info`; the input is untouched."""
    from ir.core import Program

    frozen = pmap({name: pmap({k: _read_only(v) for k, v in stats.items()}) for name, stats in table.items()})
    attrs = program.attrs.set(ATTR, frozen).set(INFO_ATTR, pmap(dict(info)))
    return Program(program.functions, attrs)


def without_calibration(program):
    """The program without the statistics (what a written model holds); the input itself when it has none."""
    if ATTR not in program.attrs and INFO_ATTR not in program.attrs:
        return program
    from ir.core import Program

    return Program(program.functions, program.attrs.discard(ATTR).discard(INFO_ATTR))


def importance(stats: Optional[Mapping], floor: float = 1e-6) -> Optional[np.ndarray]:
    """Per input channel, the weight an error there carries (E[x_c^2]), floored at `floor` times
    the mean so that a channel never seen non-zero still counts a little (k-means needs
    positive weights). None without statistics."""
    if stats is None or "input_moment" not in stats:
        return None
    m = np.asarray(stats["input_moment"], np.float64)
    mean = float(m.mean()) if m.size else 0.0
    return np.maximum(m, floor * mean if mean > 0 else 1.0)
