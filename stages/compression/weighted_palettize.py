"""weighted_palettize_weights: k-means palettization where each value counts as much as its
error costs at the output, from the statistics `calibrate` attached.

- linear / matmul weights: a value in input channel c weighs E[x_c^2] (``input_moment``, the
  diagonal of H = X^T X / n; floored at 1e-6 of the mean so no value is ignored): the LUT
  minimises sum_c E[x_c^2] (w - lut[idx])^2, the output error with the cross terms of H
  dropped (SqueezeLLM's sensitivity-weighted k-means, with the activations' second moment
  as the sensitivity);
- conv weights (groups == 1): the same with the conv input's channel moments;
- embedding tables (read by gather along axis 0): a row weighs how often it was looked up
  plus ``token_prior`` (a pseudo-count, so rows the calibration text never used still get a
  LUT that serves them a little).

The optimum is exact: numeric/weighted.py's weighted 1-D k-means on weighted histograms
(kmeans1d, the solver palettize_weights uses), per tensor or per group of ``group_size``
output channels (palettize_weights's group size rule). Every value then reads its nearest
entry. The emitted form is palettize_weights's iOS18 ``constexpr_lut_to_dense`` (indices
uint{nbits} in the weight's shape, LUT [blocks..., 2**nbits, 1]); for Core ML before iOS18
per-tensor LUTs of 1/2/4/6/8 bits take the flat iOS16 form.

A weight without statistics is skipped with that reason (chain palettize_weights after it
for the rest). Stats per weight, besides sizes and figures: ``weighting`` (input_moment /
token_counts), and for linear / matmul weights ``output_error`` = tr(dW H dW^T) / tr(W H W^T)
(the output error on the calibration rows relative to the output's energy).
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from ir.fold import evaluate_ops
from stages.base import DEFAULT_CONTEXT
from stages.calibration.stats import importance
from stages.compression.calibrated import (NO_STATS, as_matrix, from_matrix, gram_of, matrix_axes, proxy_stats,
                                           stats_for, with_table)
from stages.compression.checked import ParameterError, compression_stage, one_of
from stages.contracts.calibrated import weighted_lut_bound
from stages.compression.figures import const_nbytes, record
from stages.compression.forms import Emitter, require_constexpr, require_ios18, require_lut_nbits
from stages.compression.numeric.weighted import weighted_luts
from stages.compression.weights import Replacement, Skip, dense_value, transform_weights
from stages.contracts import lossy

NBITS = (1, 2, 3, 4, 6, 8)
GRANULARITIES = ("per_tensor", "per_grouped_channel")


def check_weighted(params: dict) -> None:
    one_of(params, "nbits", NBITS)
    one_of(params, "granularity", GRANULARITIES)
    g = params.get("group_size")
    if g is not None and (isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g <= 0):
        raise ParameterError(f"group_size={g!r} must be a positive integer")
    p = params.get("token_prior")
    if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or p < 0):
        raise ParameterError(f"token_prior={p!r} must be a non-negative number")


def _gather_reader(view) -> bool:
    return all(op.op_type in ("gather", "onnx.Gather") for op in view.consumers)


def _conv_reader(view) -> bool:
    return all(op.op_type == "conv" and op.inputs.get("weight") is not None and op.inputs["weight"].name == view.name
               for op in view.consumers)


def _problem(view, stats, params):
    """(matrix [rows, cols], out axis, element weights [rows, cols], weighting, axes or None) or a Skip.

    The matrix's rows are output channels (a LUT group takes whole rows)."""
    w = view.value
    if stats is None:
        return Skip(NO_STATS)
    if "token_counts" in stats and _gather_reader(view):
        counts = np.asarray(stats["token_counts"], np.float64) + float(params["token_prior"])
        if counts.shape[0] != w.shape[0] or not np.any(counts > 0):
            return Skip("token counts do not match the table (or are all zero with token_prior 0)")
        m = w.reshape(w.shape[0], -1)
        return m, 0, np.broadcast_to(np.maximum(counts, 1e-12)[:, None], m.shape), "token_counts", None
    imp = importance(stats)
    if imp is None:
        return Skip(NO_STATS)
    axes = matrix_axes(view)
    if axes is not None and imp.shape[0] == w.shape[axes[1]]:
        m = as_matrix(w, axes)
        return m, axes[0], np.broadcast_to(imp[None, :], m.shape), "input_moment", axes
    if _conv_reader(view) and w.ndim >= 2 and imp.shape[0] == w.shape[1]:
        m = w.reshape(w.shape[0], -1)
        per_col = np.repeat(imp, int(np.prod(w.shape[2:], dtype=np.int64)))
        return m, 0, np.broadcast_to(per_col[None, :], m.shape), "input_moment", None
    return Skip("statistics recorded do not fit this weight's use (grouped conv, or another reader)")


def _groups(rows: int, params):
    if params["granularity"] == "per_tensor":
        return 1, rows, {}
    wanted = params["group_size"]
    g = next(g for g in range(min(wanted, rows), 0, -1) if rows % g == 0)
    chosen = {"group_size": g}
    if g != wanted:
        chosen["group_size_requested"] = wanted
    return rows // g, g, chosen


def compress_weighted(table, view, params, names):
    w = dense_value(view, "weighted palettization")
    if isinstance(w, Skip):
        return w
    version = require_constexpr(view)
    if version < 18 and params["granularity"] != "per_tensor":
        require_ios18(view, "palettization with granularity='per_grouped_channel'")
    stats = stats_for(table, view)
    found = _problem(view, stats, params)
    if isinstance(found, Skip):
        return found
    m, out_axis, a, weighting, axes = found
    groups, per, chosen = _groups(m.shape[0], params)
    nbits = params["nbits"]
    luts, idx_m = weighted_luts(m, nbits, groups, a, w.dtype)
    indices = (from_matrix(idx_m, axes) if axes is not None else idx_m.reshape(w.shape)).astype(np.uint8)
    em = Emitter(names)
    final = view.name if view.producer.name == view.name else names("dense")
    if version < 18:
        require_lut_nbits(view, nbits)
        op = em.op("constexpr_lut_to_dense", final, indices=em.const("indices", indices.reshape(-1), f"uint{nbits}"),
                   lut=em.const("lut", luts.reshape(-1)), shape=em.const("shape", np.array(w.shape, np.uint32)))
    else:
        shape = [1] * w.ndim + [1 << nbits, 1]
        shape[out_axis] = groups
        op = em.op("constexpr_lut_to_dense", final, indices=em.const("indices", indices, f"uint{nbits}"),
                   lut=em.const("lut", luts.reshape(shape)))
    recon = evaluate_ops(em.ops, op.outputs[0])
    extra = {}
    h = gram_of(stats, m.shape[1]) if axes is not None else None
    if h is not None:
        extra = proxy_stats(m, as_matrix(recon, axes), h)
    out = record("weighted_kmeans", const_nbytes([view.sources["weight"]]), const_nbytes(em.ops), w, recon,
                 nbits=nbits, granularity=params["granularity"], kind=view.kind, weighting=weighting,
                 **extra, **chosen)
    return Replacement(tuple(em.ops), out)


@compression_stage("weighted_palettize_weights", check_weighted, version="1", contract=lossy(weighted_lut_bound))
def weighted_palettize_weights(program, *, nbits: Literal[NBITS] = 4,
                               granularity: Literal[GRANULARITIES] = "per_tensor", group_size=32,
                               token_prior=1.0, op_selector=None, config=None, context=DEFAULT_CONTEXT):
    """Activation-weighted (token-frequency-weighted for embeddings) k-means palettization."""
    params = {"nbits": nbits, "granularity": granularity, "group_size": group_size, "token_prior": token_prior}
    check_weighted(params)
    return transform_weights(program, with_table(compress_weighted, program), params, context, config,
                             op_selector, kinds=("dense",), desc="weighted_palettize_weights", check=check_weighted)
