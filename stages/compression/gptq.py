"""gptq_quantize_weights / gptq_palettize_weights: GPTQ (numeric/gptq.py) on the weights of
linear / matmul / conv ops, with the calibration statistics `calibrate` attached (the Gram
matrix H = X^T X / n of each weight's inputs; for a conv, of its input's patch rows).

A conv weight [C_out, C_in/g, k...] is the matrix [C_out, C_in/g * prod(k)] (calibrated.py's
matrix_form: the columns in the order of the patch rows, so GPTQ minimises the conv's own
output error); a grouped conv (depthwise included) runs GPTQ once per group of C_out/g output
channels against that group's H. The grid is still the affine stage's for the 4-D weight
(per channel; per block: blocks of b input channels x the whole kernel, b by the affine
stage's rule on C_in/g), which in the flattened matrix are runs of b * prod(k) columns.

gptq_quantize_weights: the grid is exactly the one affine_quantize_weights would choose for
the same parameters (mode, dtype, granularity per_channel / per_block with its block size
rule, per_tensor), computed from the original weight; GPTQ only chooses the codes, column by
column, so that the layer's output error on the calibration rows is small rather than each
weight's own error. The emitted form is the affine stage's iOS18 form:
``constexpr_blockwise_shift_scale`` (codes as int8 / uint8 / int4 / uint4 data, the scale,
an offset const when a zero point is nonzero).

gptq_palettize_weights: a fixed LUT per tensor or per group of output channels (the
activation-weighted k-means LUT of weighted_palettize_weights, or plain k-means with
``lut="kmeans"``; a group of more than LUT_BINS values is binned first), then GPTQ assigns each element an index, compensating as it goes. The
emitted form is palettize_weights's iOS18 ``constexpr_lut_to_dense``.

Both need iOS18 for Core ML programs (IR and ONNX programs take them as they are), skip a
weight with no Gram matrix (embeddings, convs whose patch Gram was too large to keep, weights
calibrate did not see) with the reason in the stats, and record per weight, besides the usual sizes and figures,
``output_error`` = tr(dW H dW^T) / tr(W H W^T) and ``output_error_data_free`` (the same for
the data-free rounding to the same grid / LUT): the proxy GPTQ minimizes, and what it bought.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from ir.fold import evaluate_ops
from stages.base import DEFAULT_CONTEXT
from stages.calibration.stats import importance
from stages.compression.affine import DTYPE_NAMES, affine_grid, check_affine, dequantized_figures
from stages.compression.calibrated import NO_STATS, gram_of, matrix_form, proxy_stats, stats_for, with_table
from stages.compression.checked import ParameterError, compression_stage, one_of, positive_int
from stages.contracts.calibrated import gptq_affine_bound, gptq_lut_bound
from stages.compression.figures import const_nbytes, record
from stages.compression.forms import Emitter, require_ios18
from stages.compression.numeric.affine import (GRANULARITIES, MODES, QUANT_DTYPES, _code_limits,
                                               expand_blocks, quant_range)
from stages.compression.numeric.errors import NotCompressible
from stages.compression.numeric.clip_search import search_scales
from stages.compression.numeric.gptq import affine_quantizer, factor_groups, gptq, lut_quantizer
from stages.compression.numeric.weighted import weighted_luts
from stages.compression.weights import Replacement, Skip, dense_value, transform_weights
from stages.contracts import lossy

LUT_SOURCES = ("weighted", "kmeans")
LUT_GRANULARITIES = ("per_tensor", "per_grouped_channel")


def _check_gptq(params: dict) -> None:
    positive_int(params, "block_columns")
    d = params.get("damp")
    if d is not None and (isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 <= d <= 1):
        raise ParameterError(f"damp={d!r} must be a number in [0, 1]")


def check_gptq_affine(params: dict) -> None:
    check_affine(params)
    _check_gptq(params)


def check_gptq_lut(params: dict) -> None:
    one_of(params, "nbits", (1, 2, 3, 4, 6, 8))
    one_of(params, "granularity", LUT_GRANULARITIES)
    one_of(params, "lut", LUT_SOURCES)
    positive_int(params, "group_size")
    _check_gptq(params)


def _prepare(view, table, what: str):
    """(weight, matrix form, matrix, H) or a Skip; `what` names the form for the iOS18 requirement."""
    w = dense_value(view, "GPTQ")
    if isinstance(w, Skip):
        return w
    form = matrix_form(view)
    if form is None:
        return Skip("GPTQ takes the weights of linear / matmul ops (2-D) and conv ops only")
    m = form.matrix(w)
    h = gram_of(stats_for(table, view), m.shape[1], form.groups)
    if h is None:
        return Skip(NO_STATS if stats_for(table, view) is None else "no input Gram matrix recorded for this weight")
    require_ios18(view, what)
    return w, form, m, h


def _gptq_by_group(m, h, form, quantizer_for, params):
    """GPTQ on m against H, once per group of rows for a grouped conv (H [groups, cols, cols]);
    quantizer_for(row slice) gives the quantizer of those rows. (reconstruction, codes)."""
    if h.ndim == 2:
        r = gptq(m, h, quantizer_for(slice(None)), block=params["block_columns"], damp=params["damp"],
                 act_order=params["act_order"], with_loss=False)
        return r.reconstruction, r.codes
    recon, codes = np.empty(m.shape, np.float64), np.empty(m.shape, np.int64)
    orders, us = factor_groups(h, params["damp"], params["act_order"])  # every group's at once
    for j, rows in enumerate(form.row_blocks(m.shape[0])):
        r = gptq(m[rows], h[j], quantizer_for(rows), block=params["block_columns"], damp=params["damp"],
                 act_order=params["act_order"], with_loss=False, factors=(orders[j], us[j]))
        recon[rows], codes[rows] = r.reconstruction, r.codes
    return recon, codes


def _column_weights(h, form, shape) -> np.ndarray:
    """diag(H) of each element's column (its group's H for a grouped conv), as a [rows, cols] matrix."""
    if h.ndim == 2:
        return np.broadcast_to(np.diagonal(h)[None, :], shape)
    per = shape[0] // h.shape[0]
    return np.repeat(np.diagonal(h, axis1=1, axis2=2), per, axis=0)


# ---- affine ----------------------------------------------------------------------------

def compress_gptq_affine(table, view, params, names):
    found = _prepare(view, table, "GPTQ quantization")
    if isinstance(found, Skip):
        return found
    w, form, m, h = found
    try:
        grid = affine_grid(view, w, form.axes, params)
    except NotCompressible as e:
        return Skip(str(e))
    if isinstance(grid, Skip):
        return grid
    q, chosen = grid
    lo, hi = quant_range(q.dtype, q.mode)
    if params["clip_search"]:
        imp = form.weight(np.ascontiguousarray(_column_weights(h, form, m.shape)))
        scale, ratio = search_scales(w, q.scale, q.zero_point, lo, hi, imp)
        q = q._replace(scale=scale)
        chosen["clipped_blocks"] = int(np.sum(ratio < 1))
    lo, hi = _code_limits(q.scale, q.zero_point.astype(np.float64), lo, hi)
    full = lambda a: form.matrix(expand_blocks(np.asarray(a), w.shape))  # noqa: E731
    grid = [full(q.scale), full(q.zero_point), lo if np.isscalar(lo) else full(lo), hi if np.isscalar(hi) else full(hi)]
    recon, codes = _gptq_by_group(
        m, h, form, lambda rows: affine_quantizer(*[a if np.isscalar(a) else a[rows] for a in grid], w.dtype), params)
    data = form.weight(codes).astype(q.data.dtype)
    em = Emitter(names)
    final = view.name if view.producer.name == view.name else names("dense")
    codes = em.const("q", data, q.dtype)
    scale = em.const("scale", q.scale)
    has_offset = bool(np.any(q.zero_point != 0))
    offset = em.const("offset", q.zero_point, q.dtype) if has_offset else None
    em.op("constexpr_blockwise_shift_scale", final, data=codes, scale=scale, offset=offset)
    figures = dequantized_figures(w, data, q.scale, q.zero_point if has_offset else None)
    baseline = form.matrix(_nearest_on_grid(w, q.scale, q.zero_point, lo, hi))
    stats = record(params["mode"], const_nbytes([view.sources["weight"]]), const_nbytes(em.ops),
                   figures=figures, dtype=q.dtype, nbits=QUANT_DTYPES[q.dtype][0],
                   granularity=params["granularity"], max_scale=float(np.max(q.scale)), kind=view.kind,
                   method="gptq", **proxy_stats(m, recon, h, baseline), **chosen)
    return Replacement(tuple(em.ops), stats)


def _nearest_on_grid(w, scale, zero_point, lo, hi) -> np.ndarray:
    """The reconstruction of plain rounding to the grid (what GPTQ is compared with)."""
    s = expand_blocks(scale.astype(np.float64), w.shape)
    z = expand_blocks(zero_point.astype(np.float64), w.shape)
    lo = lo if np.isscalar(lo) else expand_blocks(np.asarray(lo), w.shape)
    hi = hi if np.isscalar(hi) else expand_blocks(np.asarray(hi), w.shape)
    return (np.clip(np.rint(w.astype(np.float64) / s) + z, lo, hi) - z) * s


@compression_stage("gptq_quantize_weights", check_gptq_affine, version="1", contract=lossy(gptq_affine_bound))
def gptq_quantize_weights(program, *, mode: Literal[MODES] = "linear_symmetric",
                          dtype: Literal[DTYPE_NAMES] = "int8", granularity: Literal[GRANULARITIES] = "per_channel",
                          block_size=32, block_columns=128, damp=0.01, act_order=True, clip_search=False,
                          op_selector=None, config=None, context=DEFAULT_CONTEXT):
    """GPTQ onto the affine grid of every selected linear / matmul / conv weight (module docstring)."""
    params = {"mode": mode, "dtype": dtype, "granularity": granularity, "block_size": block_size,
              "block_columns": block_columns, "damp": damp, "act_order": act_order, "clip_search": clip_search}
    check_gptq_affine(params)
    return transform_weights(program, with_table(compress_gptq_affine, program), params, context, config,
                             op_selector, kinds=("dense",), desc="gptq_quantize_weights", check=check_gptq_affine)


# ---- LUT --------------------------------------------------------------------------------

def _group_rows(rows: int, params):
    """(groups, rows per group) or a Skip: palettize_weights's group size rule."""
    if params["granularity"] == "per_tensor":
        return 1, rows
    wanted = params["group_size"]
    g = next((g for g in range(min(wanted, rows), 0, -1) if rows % g == 0), None)
    return rows // g, g


# GPTQ's LUT is the grid its indices are chosen on, not the answer: a group of more values than
# this is binned first (numeric/weighted.py). On all-MiniLM-L6-v2's matmuls the binned k-means cost
# is within 0.08% of the exact optimum's, and 6-bit LUTs per 16 channels take 0.07 s instead of 1.4 s.
LUT_BINS = 4096


def compress_gptq_lut(table, view, params, names):
    found = _prepare(view, table, "GPTQ palettization")
    if isinstance(found, Skip):
        return found
    w, form, m, h = found
    groups, per = _group_rows(m.shape[0], params)
    stats = stats_for(table, view)
    moment = None if params["lut"] == "kmeans" else _element_importance(stats, form, m.shape)
    luts, base_idx = weighted_luts(m, params["nbits"], groups, moment, w.dtype, bins=LUT_BINS)
    row_lut = np.arange(m.shape[0]) // per
    chosen_recon, codes = _gptq_by_group(m, h, form, lambda rows: lut_quantizer(luts, row_lut[rows]), params)
    em = Emitter(names)
    final = view.name if view.producer.name == view.name else names("dense")
    out_axis = form.axes[0]
    indices = form.weight(codes).astype(np.uint8)
    lut_shape = [1] * w.ndim + [1 << params["nbits"], 1]
    lut_shape[out_axis] = groups
    lut = luts.reshape(lut_shape)
    op = em.op("constexpr_lut_to_dense", final, indices=em.const("indices", indices, f"uint{params['nbits']}"),
               lut=em.const("lut", lut))
    recon = evaluate_ops(em.ops, op.outputs[0])
    baseline = np.asarray(luts, np.float64)[row_lut[:, None], base_idx]
    chosen = {"group_size": per} if params["granularity"] == "per_grouped_channel" else {}
    if chosen and per != params["group_size"]:
        chosen["group_size_requested"] = params["group_size"]
    out = record("gptq", const_nbytes([view.sources["weight"]]), const_nbytes(em.ops), w, recon,
                 nbits=params["nbits"], granularity=params["granularity"], kind=view.kind, method="gptq",
                 lut=params["lut"], calibrated=stats is not None,
                 **proxy_stats(m, chosen_recon, h, baseline), **chosen)
    return Replacement(tuple(em.ops), out)


def _element_importance(stats, form, shape) -> np.ndarray:
    """Each element's weight in the LUT's k-means: E[x_c^2] of the input channel c it multiplies
    (weighted_palettize_weights's weighting; a conv's kernel positions share their channel's,
    a grouped conv's rows read their group's channels), broadcastable to [rows, cols]."""
    imp = importance(stats)
    if len(form.shape) <= 2:
        return imp[None, :]
    k = int(np.prod(form.shape[2:], dtype=np.int64))
    per_group = imp.reshape(form.groups, -1)                        # [groups, C_in/g]
    cols = np.repeat(per_group, k, axis=1)                           # [groups, C_in/g * k]
    return np.repeat(cols, shape[0] // form.groups, axis=0)          # [rows, cols]


@compression_stage("gptq_palettize_weights", check_gptq_lut, version="1", contract=lossy(gptq_lut_bound))
def gptq_palettize_weights(program, *, nbits: Literal[1, 2, 3, 4, 6, 8] = 4,
                           granularity: Literal[LUT_GRANULARITIES] = "per_tensor", group_size=32,
                           lut: Literal[LUT_SOURCES] = "weighted", block_columns=128, damp=0.01, act_order=True,
                           op_selector=None, config=None, context=DEFAULT_CONTEXT):
    """A fixed LUT per tensor / group of output channels, indices chosen by GPTQ (module docstring)."""
    params = {"nbits": nbits, "granularity": granularity, "group_size": group_size, "lut": lut,
              "block_columns": block_columns, "damp": damp, "act_order": act_order}
    check_gptq_lut(params)
    return transform_weights(program, with_table(compress_gptq_lut, program), params, context, config,
                             op_selector, kinds=("dense",), desc="gptq_palettize_weights", check=check_gptq_lut)
