"""mixed_precision: each weight in the form that buys the least distortion for its bytes.

For every selected dense float weight (the default selection of the other compression
stages: more than 2048 elements, or an op_selector), every candidate of ``candidates``
is built by the compression stage it names (palettize_weights', affine_quantize_weights',
and with calibration statistics gptq_palettize_weights', gptq_quantize_weights' and
weighted_palettize_weights' own compress functions, on the weight's own view, so the form,
block / group sizes and skips are exactly theirs) and measured. A calibrated form that
applies supersedes the data-free form of the same bits (SUPERSEDED_BY: GPTQ's LUT over plain
k-means, GPTQ's int4 over rounding, the token-weighted LUT of an embedding table), which is
then not built.

* **size**: the bytes of the candidate's stored arrays (figures.const_nbytes: sub-byte
  data bit-packed, LUTs, scales, offsets): what the exporters write for the weight's data;
* **distortion**: an estimate of the output error it causes. The error energy of the op's
  output, E(dW): the calibrated proxy ``tr(dW H dW^T)`` (dW the weight's error with the
  input axis last, H = the gram X^T X / n of the weight's inputs) when calibration
  statistics travel in the program (``calibration_stats``), ``sum_c E[x_c^2] |dW[:, c]|^2``
  with only the input moments, and for an embedding table (read by gather) with token
  counts the frequency-weighted ``sum_t p_t |dW_t|^2``. Without statistics: ``|dW|^2``,
  the same for inputs of unit second moment; for an embedding table ``|dW|^2 / rows``,
  the error of one lookup of a uniformly drawn row.

  ``proxy="absolute"`` (the default) uses E(dW) as it is. ``proxy="relative"`` divides it
  by the same energy of the weight itself, E(dW) / E(W): the noise-to-signal ratio of the
  op's output, on the argument that every sublayer output of a transformer is added to
  the residual stream and re-normalised. Neither ranks all-MiniLM-L6-v2's weights as
  measured: a 2-bit embedding table alone costs as much cosine (0.941) as all 36 matmul
  weights at int4 per block (0.939); absolute rates the table ~100x too cheap, relative
  ~3x. End to end at 4.5 bits per weight the absolute proxy gives the better worst
  sentence (min cosine 0.947 against 0.897 data-free, 0.942 against 0.892 calibrated;
  means within 0.003), hence the default (README, "Quality on a real encoder").

  **Measured sensitivity.** When calibrate measured it (``calibrate(sensitivity=N)``; the
  pipeline's ``calibration=`` asks for it whenever a mixed_precision stage follows), each
  weight's absolute proxy is multiplied by its ``sensitivity``: the end-to-end output error
  per unit of proxy, measured on the calibration samples (stages/calibration/sensitivity.py).
  The proxy keeps ranking a weight's own candidates; the measurement sets the exchange rate
  between weights, which the proxy alone got wrong by up to ~1000x on all-MiniLM-L6-v2 (query
  and key projections far cheaper than it says, the last attention output projection and the
  embedding table far dearer). The distortion is then an estimate of the end-to-end relative
  squared error, and the allocation's ``proxy`` says "measured sensitivity".

  **Tables measured end to end.** An embedding table's proxy, the lookup-weighted row error,
  cannot see which rows matter downstream, so one exchange rate does not fit all its
  candidates (see _end_to_end). When calibrate kept its probe batches (calibration_info's
  ``probe_batches``), each candidate of a table is run end to end on them instead
  (sensitivity.measure_forms): its per-batch errors replace sensitivity x proxy, in the same
  units. On paraphrase-MiniLM-L3-v2 at 4.5 bits per weight this moved the table from int4 per
  block (5 bits per weight) to the 4-bit LUT, and the held-out worst cosine from 0.9756 to
  0.9905. The allocation's ``measured_end_to_end`` lists the weights measured so.

**Objective.** ``objective="worst"`` (the default) minimises the estimated error of the worst
calibration sample rather than the mean: when calibrate measured the sensitivity per probe batch
(``sensitivity_per_batch``; a sample each when fed one at a time), each candidate's error on
sample s is its proxy times the weight's rate for s, and numeric/worst_case.py picks the choice
whose largest per-sample total is least (multiplicative weights over the samples, starting from
the mean objective's choice, with a lower bound and its gap). The last layers' FFN
down-projections of all-MiniLM-L6-v2 put 10-15x their mean error on a few sentences; on the 64
held-out sentences this objective raised the worst cosine at 4.5 bits per weight from 0.9726 to
0.9770, the mean unchanged. Without per-batch figures (no measured sensitivity, or
``proxy="relative"``) the mean objective stands; ``objective="mean"`` asks for it.

Candidates that are skipped for the weight (per_block on a 1-D weight) or not smaller than
it are left out; ``keep`` (the weight as it is, distortion 0) is always one. Then
numeric/allocation.py picks one candidate per weight minimising the total distortion with
the total size within the budget (a multiple-choice knapsack: Lagrangian dual bound,
greedy, branch and bound), and the chosen forms are written by the same compress
functions.

Budget (exactly one):

* ``target_bpw``: average bits per element over the selected weights (their chosen
  forms' bytes * 8 / their elements);
* ``target_size``: bytes of every stored constant of the program once compressed (the
  selected weights in their chosen forms plus every other constant as it is): the file
  adds its graph structure and metadata (ONNX: a few KB).

A budget below the smallest configuration raises InfeasibleBudget naming that minimum
(as bpw and as bytes).

Stats: the usual per-weight records (the chosen compressor's figures plus ``candidate``,
``method``, ``bits``, ``bpw``, ``distortion``; a weight kept as it is is "skipped" with
that reason) and ``allocation``: budget, size, distortion, dual bound, gap (always >= 0;
0, or ``proved``, means optimal), the per-weight table (weight, candidate, method, bits,
bytes, distortion), every candidate measured, the rate-distortion frontier, ``objective`` and,
for the worst-sample objective, ``worst_sample``: the estimate, its bound and gap, the rounds.
"""
from __future__ import annotations

import math
import time
from functools import partial
from dataclasses import replace as dc_replace
from typing import Literal, Mapping, Optional

import numpy as np
from pyrsistent import freeze, pmap

from ir.analysis import use_def
from ir.core import Function
from ir.fold import evaluate_ops
from ir.rewrite import map_functions
from stages.base import DEFAULT_CONTEXT, StageResult
from stages.compression.affine import compress_affine
from stages.compression.checked import ParameterError, compression_stage
from stages.compression.figures import const_nbytes, error_figures, record
from stages.compression.forms import Emitter, require_constexpr
from stages.compression.numeric.allocation import InfeasibleBudget, allocate, frontier
from stages.compression.numeric.worst_case import allocate_worst_case, allocate_worst_case_of
from stages.compression.palettize import compress_palettize
from stages.compression.weights import (Names, Replacement, Skip, resolve_params, tracked_map,
                                        transform_weights, weight_views)
from stages.contracts import affine_bound, lossy, palettize_bound

from stages.calibration.sensitivity import measure_forms, sensitivity_of, sensitivity_per_batch
from stages.calibration.stats import calibration_stats
from stages.compression.calibrated import input_axis, is_table, proxy_distortion, stats_for, with_table
from stages.compression.gptq import compress_gptq_affine, compress_gptq_lut
from stages.compression.weighted_palettize import compress_weighted
from stages.contracts.calibrated import gptq_affine_bound, gptq_lut_bound, weighted_lut_bound

_PALETTIZE = dict(mode="kmeans", lut_function=None, granularity="per_grouped_channel", group_size=16,
                  channel_axis=None, enable_per_channel_scale=False, cluster_dim=1, kmeans_method="auto")
_AFFINE = dict(mode="linear_symmetric", block_size=32)

_GPTQ = dict(block_columns=128, damp=0.01, act_order=True)
_GPTQ_LUT = dict(granularity="per_grouped_channel", group_size=16, lut="weighted", **_GPTQ)

# name -> (method, the compressor's parameters, nominal bits per element)
CANDIDATES = {
    **{f"palettize_{b}": ("palettize", {**_PALETTIZE, "nbits": b}, b) for b in (2, 3, 4, 6, 8)},
    "int4_block32": ("affine", {**_AFFINE, "dtype": "int4", "granularity": "per_block"}, 4),
    "int8_channel": ("affine", {**_AFFINE, "dtype": "int8", "granularity": "per_channel"}, 8),
    "fp16": ("fp16", {}, 16),
    "keep": ("keep", {}, None),
    # calibrated forms (gptq.py, weighted_palettize.py): skipped for a weight without the statistics
    # they need (GPTQ: a linear / matmul weight with its input gram; weighted k-means: input moments,
    # or an embedding table's token counts)
    **{f"gptq_palettize_{b}": ("gptq_palettize", {**_GPTQ_LUT, "nbits": b}, b) for b in (2, 3, 4, 6)},
    # one LUT for the whole weight: its entries cost nothing per channel (a 6-bit LUT per 16 channels
    # of a 384-column weight is a third of a bit per weight), at 1.0-1.7x the error of the grouped form
    **{f"gptq_palettize_{b}_tensor": ("gptq_palettize", {**_GPTQ_LUT, "nbits": b, "granularity": "per_tensor"}, b)
       for b in (4, 6)},
    "gptq_int4_block32": ("gptq_affine", {**_AFFINE, "dtype": "int4", "granularity": "per_block",
                                          "clip_search": False, **_GPTQ}, 4),
    # asymmetric (a uint4 zero point per block, 1/8 bit more): on all-MiniLM-L6-v2 GPTQ onto it
    # leaves 30% less output error than onto the symmetric grid; on offer, not by default
    "gptq_uint4_block32": ("gptq_affine", {"mode": "linear", "block_size": 32, "dtype": "uint4",
                                           "granularity": "per_block", "clip_search": False, **_GPTQ}, 4),
    **{f"weighted_palettize_{b}": ("weighted_palettize", {"nbits": b, "granularity": "per_tensor",
                                                         "group_size": 32, "token_prior": 1.0}, b)
       for b in (2, 3, 4, 6)},
}
# palettize_8 is on offer but not by default: exact 8-bit k-means of an fp32 weight costs 20-30 s
# per 590k elements here, and on all-MiniLM-L6-v2 it gives int8_channel's error at int8_channel's
# bytes (mse 2.3e-7 at 590848 bytes against 2.4e-7 at 595968)
DEFAULT_CANDIDATES = tuple(name for name in CANDIDATES if name not in ("palettize_8", "gptq_uint4_block32"))
CALIBRATED_METHODS = ("gptq_palettize", "gptq_affine", "weighted_palettize")
# A data-free form is not measured when a calibrated form of the same bits applies to the weight:
# each minimises the calibrated proxy the allocation ranks by where the data-free one ignores it
# (GPTQ over plain rounding to the same LUT / grid; the token-weighted LUT of a table), and on
# all-MiniLM-L6-v2 it is 1.3-16x lower for every weight; measuring both doubled the time.
SUPERSEDED_BY = {
    **{f"palettize_{b}": (f"gptq_palettize_{b}", f"weighted_palettize_{b}") for b in (2, 3, 4, 6)},
    **{f"weighted_palettize_{b}": (f"gptq_palettize_{b}",) for b in (2, 3, 4, 6)},
    "int4_block32": ("gptq_int4_block32",),
}
PROXIES = ("absolute", "relative")
OBJECTIVES = ("worst", "mean")
# up to this many bytes of selected weights, every candidate built while measuring is kept until the
# allocation has chosen (a few times the weights' bytes), so the chosen forms are not built twice
KEEP_BUILT_BYTES = 512 << 20


# ---- the fp16 form (constexpr_cast) ---------------------------------------------------------

def compress_fp16(view, params, names):
    """The weight stored as fp16 and cast back: constexpr_cast(fp16 const) -> the weight's dtype."""
    w = view.value
    if w.dtype != np.float32:
        return Skip(f"fp16: only fp32 weights are stored as fp16 (this one is {w.dtype})")
    require_constexpr(view)
    with np.errstate(over="ignore"):
        half = w.astype(np.float16)
    if not np.all(np.isfinite(half)):
        return Skip("fp16: values beyond fp16's range (65504)")
    half.flags.writeable = False
    em = Emitter(names)
    final = view.name if view.producer.name == view.name else names("dense")
    data = em.const("fp16", half)
    em.op("constexpr_cast", final, source_val=data, output_dtype=em.const("dtype", np.array("fp32")))
    return Replacement(tuple(em.ops), record("fp16", const_nbytes([view.producer]), half.nbytes, w,
                                             half.astype(np.float32), dtype="fp16", nbits=16, kind=view.kind))


_COMPRESS = {"palettize": compress_palettize, "affine": compress_affine, "fp16": compress_fp16}
# the calibrated compressors take the calibration table first (stages/compression/calibrated.py)
_CALIBRATED = {"gptq_palettize": compress_gptq_lut, "gptq_affine": compress_gptq_affine,
               "weighted_palettize": compress_weighted}


def _compress(method: str, view, params, names, stats):
    """Build one candidate form: the compressor of `method` on the weight's view."""
    if method in _CALIBRATED:
        table = {view.name: stats} if stats is not None and view.function == "main" else {}
        return _CALIBRATED[method](table, view, params, names)
    return _COMPRESS[method](view, params, names)


def _params_for(view, method: str, params: Mapping) -> dict:
    """The candidate's parameters for this weight. An embedding table's LUT groups run along
    its columns (axis 1): along its rows (30522 tokens) each group would be a handful of rows,
    and the LUTs would outweigh the indices they save."""
    params = dict(params)
    if method == "palettize" and params.get("granularity") == "per_grouped_channel" and _is_table(view) \
            and len(view.shape) == 2:
        params["channel_axis"] = 1
    return params


# ---- distortion -----------------------------------------------------------------------------

# the proxy lives with the other calibrated figures (stages/compression/calibrated.py): calibrate's
# sensitivity measurement divides by exactly the same quantity
distortion = proxy_distortion
_is_table = is_table
_input_axis = input_axis


def _data_free_sum(st: Mapping, view) -> Optional[float]:
    """|dW|^2 from the compressor's exact mse (no reconstruction needed without statistics)."""
    mse = st.get("mse")
    return None if mse is None or not math.isfinite(float(mse)) else float(mse) * view.size


# ---- measuring the candidates of one weight ---------------------------------------------------

def _measure(task):
    """([(candidate, bytes or None, distortion, reason)], seconds, {candidate: Replacement} when
    `keep`) for one weight; module level (process pools)."""
    view, names, candidates, stats, proxy, keep = task
    start = time.perf_counter()
    original = const_nbytes([view.producer])
    table, in_axis = _is_table(view), _input_axis(view)
    # the measured exchange rate between weights (calibrate(sensitivity=N)): the estimate becomes
    # end-to-end error; it is defined against the absolute proxy, so 'relative' goes without it
    scale, gain = 1.0, (sensitivity_of(stats) or 1.0) if proxy == "absolute" else 1.0
    if proxy == "relative":  # E(W): the signal the error is measured against
        signal = distortion(np.asarray(view.value, np.float64), stats, in_axis, table)
        scale = 1.0 / signal if signal > 0 else 1.0
    found, built = {}, {}
    # calibrated forms first, so the data-free forms they supersede need not be built
    rank = {"gptq_palettize": 0, "gptq_affine": 0, "weighted_palettize": 1}
    for name in sorted(candidates, key=lambda n: rank.get(CANDIDATES[n][0], 2)):
        method, params, _ = CANDIDATES[name]
        better = next((b for b in SUPERSEDED_BY.get(name, ()) if found.get(b, (None, None))[1] is not None), None)
        if better is not None:
            found[name] = (name, None, None, f"superseded by {better} (calibrated, same bits)")
            continue
        if method == "keep":
            found[name] = (name, original, 0.0, None)
            continue
        rep = _compress(method, view, _params_for(view, method, params), Names(view.name, set(names)), stats)
        if not isinstance(rep, Replacement):
            found[name] = (name, None, None, str(rep))
            continue
        size = int(rep.stats["compressed_bytes"])
        if size >= original:
            found[name] = (name, None, None, f"not smaller ({size} bytes against {original})")
            continue
        plain = _data_free_sum(rep.stats, view)
        if stats is None and plain is not None:
            d = plain / (view.shape[0] if table and view.shape else 1)
        else:
            recon = evaluate_ops(rep.ops, rep.ops[-1].outputs[0])
            d = distortion(np.asarray(recon, np.float64) - np.asarray(view.value, np.float64), stats, in_axis, table)
        found[name] = (name, size, d * scale * gain, None)
        if keep:
            built[name] = rep
    rows = [found[name] for name in candidates]
    return rows, time.perf_counter() - start, built


def _key(fn: Function, name: str) -> str:
    return name if fn.name == "main" else f"{fn.name}/{name}"


def _selected(program, op_selector):
    """[(key, view)] of the weights every compression stage would select, and the names in use."""
    found = []
    for fn in program.functions.values():
        taken = set(use_def(fn).names)
        for view in weight_views(fn, ("dense",)):
            if view.shape and not isinstance(resolve_params(view, {}, None, op_selector), Skip):
                found.append((_key(fn, view.name), view, taken))
    return found


def _other_const_bytes(program, selected_keys) -> int:
    total = 0
    for fn in program.functions.values():
        for op in fn.block.walk():
            if op.op_type == "const" and _key(fn, op.outputs[0].name) not in selected_keys:
                total += const_nbytes([op])
    return total


def _budget(target_bpw, target_size, elements: int, other: int) -> int:
    if target_bpw is not None:
        return int(math.floor(float(target_bpw) * elements / 8))
    return int(target_size) - other


def _infeasible(e, target_bpw, target_size, elements, other, min_size):
    if target_bpw is not None:
        return InfeasibleBudget(f"mixed_precision: target_bpw={target_bpw} is below the smallest configuration: "
                                f"{min_size * 8 / elements:.4f} bits per weight ({min_size} bytes for "
                                f"{elements} weight elements)")
    return InfeasibleBudget(f"mixed_precision: target_size={target_size} bytes is below the smallest "
                            f"configuration: {min_size + other} bytes ({min_size} for the compressed weights, "
                            f"{other} for every other constant)")


# ---- the contract: each weight keeps the promise of the compressor chosen for it ------------------

def _fp16_bound(case) -> list:
    w = np.asarray(case.original)
    want = w.astype(np.float16).astype(w.dtype)
    if not np.array_equal(np.asarray(case.decoded), want):
        return [f"weight {case.name!r}: decoded value is not the weight rounded to fp16"]
    return []


_BOUNDS = {"palettize": palettize_bound, "affine": affine_bound, "fp16": _fp16_bound,
           "gptq_palettize": gptq_lut_bound, "gptq_affine": gptq_affine_bound, "weighted_palettize": weighted_lut_bound}


def mixed_bound(case) -> list:
    """The chosen candidate's own bound, with the candidate's parameters as the stage's."""
    name = case.stats.get("candidate")
    if name not in CANDIDATES:
        return [f"weight {case.name!r}: reported compressed without a known candidate ({name!r})"]
    method, params, _ = CANDIDATES[name]
    return _BOUNDS[method](dc_replace(case, params=dict(case.stats.get("params") or params)))



# ---- the stage --------------------------------------------------------------------------------

def check_mixed(params: dict) -> None:
    bpw, size = params.get("target_bpw"), params.get("target_size")
    if bpw is not None and size is not None:
        raise ParameterError("mixed_precision: give target_bpw or target_size, not both")
    if bpw is not None and (isinstance(bpw, bool) or not isinstance(bpw, (int, float)) or not 0 < bpw <= 64):
        raise ParameterError(f"target_bpw={bpw!r} must be a number of bits per weight in (0, 64]")
    if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0):
        raise ParameterError(f"target_size={size!r} must be a positive number of bytes")
    cands = params.get("candidates")
    if cands is not None:
        unknown = [c for c in cands if c not in CANDIDATES]
        if unknown or not cands:
            raise ParameterError(f"candidates={list(cands)!r}: expected a non-empty list of {list(CANDIDATES)}")
    if params.get("objective") is not None and params["objective"] not in OBJECTIVES:
        raise ParameterError(f"objective={params['objective']!r} is not supported; expected one of {list(OBJECTIVES)}")
    if params.get("proxy") is not None and params["proxy"] not in PROXIES:
        raise ParameterError(f"proxy={params['proxy']!r} is not supported; expected one of {list(PROXIES)}")
    nl = params.get("node_limit")
    if nl is not None and (isinstance(nl, bool) or not isinstance(nl, int) or nl < 0):
        raise ParameterError(f"node_limit={nl!r} must be an integer >= 0")


def _full_check(params: dict) -> None:
    check_mixed(params)
    if params.get("target_bpw") is None and params.get("target_size") is None:
        raise ParameterError("mixed_precision needs a budget: target_bpw (bits per weight) or target_size (bytes)")


def _apply(built, table, view, params, names):
    """Write the allocation's choice for one weight: the form measured (`built`, by weight key)
    or built again (module level: process pools)."""
    key = view.name if view.function == "main" else f"{view.function}/{view.name}"
    chosen = params["choices"].get(key)
    if chosen is None:
        return Skip("mixed_precision: not among the weights allocated")
    name, extra = chosen["candidate"], dict(chosen)
    method, cparams, _ = CANDIDATES[name]
    if method == "keep":
        return Skip(f"mixed_precision: kept as it is (the allocation's choice; distortion 0, "
                    f"{extra['bytes']} bytes)")
    used = _params_for(view, method, cparams)
    rep = built.get(key)
    if rep is None:
        rep = _compress(method, view, used, names, stats_for(table, view))
    if not isinstance(rep, Replacement):  # measured a moment ago: the compressors are deterministic
        raise RuntimeError(f"{view.name}: candidate {name} could not be rebuilt: {rep}")
    return Replacement(rep.ops, {**rep.stats, **extra, "params": used}, rep.claims, rep.replace)


@compression_stage("mixed_precision", check_mixed, version="2", contract=lossy(mixed_bound))
def mixed_precision(program, *, target_bpw: Optional[float] = None, target_size: Optional[int] = None,
                    candidates: tuple = DEFAULT_CANDIDATES, proxy: Literal[PROXIES] = "absolute",
                    objective: Literal[OBJECTIVES] = "worst", node_limit: int = 100_000, op_selector=None,
                    context=DEFAULT_CONTEXT):
    """Choose a form per weight under the budget (see the module docstring)."""
    params = dict(target_bpw=target_bpw, target_size=target_size, candidates=candidates, node_limit=node_limit,
                  proxy=proxy, objective=objective)
    _full_check(params)
    candidates = tuple(dict.fromkeys(tuple(candidates) + ("keep",)))
    selected = _selected(program, op_selector)
    if not selected:
        return transform_weights(program, with_table(partial(_apply, {}), program), {"choices": pmap()}, context, None,
                                 op_selector,
                                 kinds=("dense",), desc="mixed_precision")
    # the measured forms are kept for writing the chosen ones when they fit in memory comfortably
    keep = sum(const_nbytes([view.producer]) for _, view, _ in selected) <= KEEP_BUILT_BYTES
    tasks = [(view, frozenset(taken), candidates, calibration_stats(program, key), proxy, keep)
             for key, view, taken in selected]
    measured = tracked_map(context, _measure, tasks, "mixed_precision: candidates")
    keys = [key for key, _, _ in selected]
    views = [view for _, view, _ in selected]
    usable = [[r for r in rows if r[1] is not None] for rows, _, _ in measured]
    end_to_end, terms = _end_to_end(program, selected, usable, measured) if proxy == "absolute" else ({}, None)
    # the pooled mean over the probe batches, as the sensitivity of every other weight is pooled
    usable = [[(r[0], r[1], float(e), r[3]) for r, e in zip(rows, end_to_end[i] @ terms / terms.sum())]
              if i in end_to_end else rows for i, rows in enumerate(usable)]
    sizes = [np.array([r[1] for r in rows], np.int64) for rows in usable]
    dists = [np.array([r[2] for r in rows], np.float64) for rows in usable]
    elements = sum(v.size for v in views)
    other = _other_const_bytes(program, set(keys))
    budget = _budget(target_bpw, target_size, elements, other)
    try:
        alloc = allocate(sizes, dists, budget, node_limit=node_limit)
    except InfeasibleBudget as e:
        min_size = int(sum(int(s.min()) for s in sizes))
        raise _infeasible(e, target_bpw, target_size, elements, other, min_size) from None
    stats_of = [t[3] for t in tasks]
    worst = _worst_case(sizes, dists, stats_of, end_to_end, budget, node_limit) \
        if objective == "worst" and proxy == "absolute" else None
    choice = alloc.choice if worst is None else worst.choice
    table, choices = [], {}
    built = {}
    for key, view, rows, j, (_, seconds, kept) in zip(keys, views, usable, choice, measured):
        name, size, dist, _ = rows[j]
        method, _, bits = CANDIDATES[name]
        row = {"weight": key, "candidate": name, "method": method, "bits": bits, "bytes": int(size),
               "bpw": size * 8 / view.size, "distortion": float(dist), "elements": view.size,
               "original_bytes": const_nbytes([view.producer]), "measure_seconds": seconds}
        table.append(row)
        choices[key] = {"candidate": name, "method": method, "bits": bits, "bytes": int(size),
                        "bpw": size * 8 / view.size, "distortion": float(dist)}
        if name in kept:
            built[key] = kept[name]
    # as the allocation saw them: a table's candidates with their measured end-to-end errors
    candidate_rows = [[(r[0], r[1], {u[0]: u[2] for u in usable[i]}.get(r[0], r[2]), r[3]) for r in rows]
                      for i, (rows, _, _) in enumerate(measured)]
    del measured  # the forms not chosen
    result = transform_weights(program, with_table(partial(_apply, built), program), {"choices": freeze(choices)},
                               context, None,
                               op_selector,
                               kinds=("dense",), desc="mixed_precision")
    summary = {
        "budget_bytes": budget, "target_bpw": target_bpw, "target_size": target_size,
        "size_bytes": alloc.size, "bpw": alloc.size * 8 / elements, "elements": elements,
        "other_const_bytes": other, "min_size_bytes": alloc.min_size,
        "distortion": alloc.distortion, "dual_bound": alloc.dual_bound, "gap": alloc.gap,
        "relative_gap": alloc.relative_gap, "proved": alloc.proved, "optimal": alloc.optimal,
        "multiplier": alloc.multiplier, "nodes": alloc.nodes, "objective": "mean",
        "proxy": ("calibrated" if any(t[3] is not None for t in tasks) else "data-free") + f", {proxy}"
                 + (", measured sensitivity" if any(sensitivity_of(t[3]) for t in tasks) else "")
                 + (f", {len(end_to_end)} table(s) measured end to end" if end_to_end else ""),
        # tuples, not lists: freeze keeps them tuples, which the caches' stats encoding takes
        "table": tuple(table),
        "candidates": {key: tuple({"candidate": r[0], "bytes": r[1], "distortion": r[2], "skipped": r[3]}
                                  for r in rows) for key, rows in zip(keys, candidate_rows)},
        "frontier": tuple(tuple(p) for p in frontier(sizes, dists)),
        "measured_end_to_end": tuple(keys[i] for i in sorted(end_to_end)),
    }
    if worst is not None:
        summary.update(_worst_summary(worst, sizes, dists, alloc, elements))
    return StageResult(result.program, result.stats.set("allocation", freeze(summary)))


def _worst_case(sizes, dists, stats_of, end_to_end, budget, node_limit):
    """The worst-sample allocation when every weight with a measured sensitivity has it per
    probe batch (the same batches for all); None otherwise (the mean objective stands).
    Each weight's candidates in proxy units (its distortions over its mean sensitivity) times
    its per-batch rates; a weight without a measurement counts the same on every batch; a weight
    whose candidates were measured end to end (`end_to_end`, by index) counts those errors."""
    per = [sensitivity_per_batch(st) for st in stats_of]
    lengths = {len(p) for p in per if p is not None}
    if len(lengths) != 1 or any(p is None and sensitivity_of(st) for p, st in zip(per, stats_of)):
        return None
    n = lengths.pop()
    gains = [sensitivity_of(st) or 1.0 for st in stats_of]
    proxies = [d / g for d, g in zip(dists, gains)]
    rates = np.array([p if p is not None else np.ones(n) for p in per])
    if not end_to_end:
        return allocate_worst_case(sizes, proxies, rates, budget, node_limit=min(node_limit, 2000))
    errors = [end_to_end[i] if i in end_to_end else np.outer(p, r) for i, (p, r) in enumerate(zip(proxies, rates))]
    return allocate_worst_case_of(sizes, errors, budget, node_limit=min(node_limit, 2000))


# Embedding tables' candidates are measured end to end on calibrate's probe batches rather than
# estimated as sensitivity x proxy. Their proxy, the lookup-weighted row error, cannot tell which
# rows matter downstream: on all-MiniLM-L6-v2 and paraphrase-MiniLM-L3-v2 it puts int4 per block
# 2.2x below the token-weighted 4-bit LUT, where end to end (on the calibration sentences and on
# held-out ones alike) the difference is 1.2x, for a bit more per weight on the largest weight of
# the model; a GPTQ weight's proxy, tr(dW H dW^T), has no such blind spot. A table has a few
# candidates and a run per probe batch each costs milliseconds.
def _end_to_end(program, selected, usable, measured) -> tuple:
    """({index of a selected table: errors [its usable candidates, probe batches]}, the probe
    batches' terms) (measure_forms)."""
    forms, index = {}, {}
    for i, ((key, view, taken), rows, (_, _, kept)) in enumerate(zip(selected, usable, measured)):
        stats = calibration_stats(program, key)
        if not _is_table(view) or view.function != "main" or sensitivity_per_batch(stats) is None:
            continue
        forms[view.name] = [partial(_decoded, view, name, kept, taken, stats) for name, _, _, _ in rows]
        index[view.name] = i
    if not forms:
        return {}, None
    found = measure_forms(program, forms)
    return {index[name]: errors for name, errors in found.errors.items()}, found.terms


def _decoded(view, name: str, kept: Mapping, taken, stats) -> np.ndarray:
    """The weight as candidate `name` decodes it: the form kept while measuring, or built again."""
    method, params, _ = CANDIDATES[name]
    if method == "keep":
        return np.asarray(view.value)
    rep = kept.get(name)
    if rep is None:
        rep = _compress(method, view, _params_for(view, method, params), Names(view.name, set(taken)), stats)
    return np.asarray(evaluate_ops(rep.ops, rep.ops[-1].outputs[0]), view.value.dtype)


def _worst_summary(worst, sizes, dists, alloc, elements: int) -> dict:
    """The summary's figures for the worst-sample choice: its size and total (mean) distortion
    against the mean problem's dual bound, and the worst-sample estimate with its own bound."""
    size = int(sum(int(s[j]) for s, j in zip(sizes, worst.choice)))
    total = float(sum(float(d[j]) for d, j in zip(dists, worst.choice)))
    gap = max(0.0, total - alloc.dual_bound)
    return {"objective": "worst", "size_bytes": size, "bpw": size * 8 / elements, "distortion": total, "gap": gap,
            "relative_gap": gap / total if total > 0 else 0.0, "proved": False, "optimal": gap == 0,
            "worst_sample": {"estimate": worst.worst, "mean": worst.mean, "bound": worst.bound, "gap": worst.gap,
                             "relative_gap": worst.gap / worst.worst if worst.worst > 0 else 0.0,
                             "rounds": worst.rounds, "best_round": worst.best_round,
                             "per_sample": worst.per_sample}}
