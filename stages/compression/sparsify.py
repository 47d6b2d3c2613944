"""sparsify_weights: zero the small weights and store only the nonzero ones.

Modes (the seed's): threshold_based zeroes |w| <= threshold; percentile_based
zeroes exactly floor(size * target_percentile) smallest magnitudes (ties by
position; target_percentile in [0, 1]). ``target_sparsity`` is only an alias
of ``target_percentile`` (the name coremltools' magnitude pruner and this
project's CLI use): giving it means percentile_based with that fraction, and
giving both with different values is an error. ``n_m_ratio=(n, m)``: in every run of
m consecutive weights along the consuming op's input axis (axis 1 of linear /
conv weights), the n smallest magnitudes become 0; it overrides ``mode``.

Forms: iOS18 (and IR programs without a Core ML opset)
``constexpr_sparse_to_dense`` with a uint1 mask of the dense shape and 1-D
nonzero_data (row-major); iOS16 / iOS17 the flat form (flat mask + shape).

Skips (recorded in the stats): empty weights; n:m with m larger than half the
axis (as coremltools); with the default selection, a sparse form not smaller than
the dense weight (too few zeros to pay for the 1-bit mask; see
weights.transform_weights). Zeros already
in the weight are never stored.
"""
from __future__ import annotations

import math

import numpy as np

from stages.base import DEFAULT_CONTEXT
from stages.contracts import lossy, sparsify_bound
from stages.compression.checked import ParameterError, compression_stage, one_of
from stages.compression.figures import const_nbytes, record
from stages.compression.forms import Emitter, require_constexpr
from stages.compression.materialize import evaluate_ops
from stages.compression.numeric.errors import NotCompressible
from stages.compression.numeric.sparse import nm_mask, percentile_mask, threshold_mask
from stages.compression.weights import Replacement, Skip, transform_weights

MODES = ("threshold_based", "percentile_based")


def _fraction(params, key):
    v = params.get(key)
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float, np.number))
                          or not 0.0 <= float(v) <= 1.0):
        raise ParameterError(f"{key}={v!r} must be a number in [0, 1]")


def check_sparsify(params: dict) -> None:
    one_of(params, "mode", MODES)
    t = params.get("threshold")
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float, np.number))
                          or not math.isfinite(float(t)) or t < 0):
        raise ParameterError(f"threshold={t!r} must be a finite number >= 0")
    _fraction(params, "target_percentile")
    _fraction(params, "target_sparsity")
    alias, pct = params.get("target_sparsity"), params.get("target_percentile")
    if alias is not None and pct is not None and float(pct) not in (1.0, float(alias)):
        raise ParameterError(f"target_sparsity={alias!r} is an alias of target_percentile={pct!r}; give one of them")
    nm = params.get("n_m_ratio")
    if nm is not None:
        ok = (isinstance(nm, (tuple, list)) and len(nm) == 2
              and all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in nm)
              and 0 <= nm[0] <= nm[1] and nm[1] >= 1)
        if not ok:
            raise ParameterError(f"n_m_ratio={nm!r} must be a pair of integers (n, m) with 0 <= n <= m, m >= 1")


def _mask(view, w, params):
    if params.get("n_m_ratio") is not None:
        n, m = params["n_m_ratio"]
        axis = view.input_axis()
        return nm_mask(w, int(n), int(m), axis=0 if axis is None else axis, name=view.name), f"n_m_{n}:{m}"
    if params.get("target_sparsity") is not None:
        return percentile_mask(w, float(params["target_sparsity"]), name=view.name), "percentile_based"
    if params["mode"] == "percentile_based":
        return percentile_mask(w, float(params["target_percentile"]), name=view.name), "percentile_based"
    return threshold_mask(w, float(params["threshold"]), name=view.name), "threshold_based"


def compress_sparsify(view, params, names):
    w = view.value
    if w.size == 0:
        return Skip("empty weight")
    version = require_constexpr(view)
    try:
        sp, mode = _mask(view, w, params)
    except NotCompressible as e:
        return Skip(str(e))
    em = Emitter(names)
    final = view.name if view.producer.name == view.name else names("dense")
    data = em.const("nonzero", sp.nonzero_data)
    if version >= 18:
        out = em.op("constexpr_sparse_to_dense", final, nonzero_data=data,
                    mask=em.const("mask", sp.mask.astype(np.uint8), "uint1"))
    else:
        out = em.op("constexpr_sparse_to_dense", final, nonzero_data=data,
                    mask=em.const("mask", sp.mask.reshape(-1).astype(np.uint8), "uint1"),
                    shape=em.const("shape", np.array(w.shape, np.uint32)))
    recon = evaluate_ops(em.ops, out.outputs[0])
    stats = record(mode, const_nbytes([view.producer]), const_nbytes(em.ops), w, recon,
                   sparsity=1.0 - sp.nonzero_data.size / w.size, kind=view.kind)
    return Replacement(tuple(em.ops), stats)


@compression_stage("sparsify_weights", check_sparsify, version="2", contract=lossy(sparsify_bound))  # 2: skip reasons in the stats
def sparsify_weights(program, *, mode="threshold_based", threshold=1e-3, target_percentile=1.0,
                     target_sparsity=None, n_m_ratio=None, op_selector=None, config=None,
                     context=DEFAULT_CONTEXT):
    """Sparsify every selected weight (see the module docstring for modes and forms)."""
    params = dict(mode=mode, threshold=threshold, target_percentile=target_percentile,
                  target_sparsity=target_sparsity, n_m_ratio=None if n_m_ratio is None else tuple(n_m_ratio))
    check_sparsify(params)
    return transform_weights(program, compress_sparsify, params, context, config, op_selector,
                             kinds=("dense",), desc="sparsify_weights", check=check_sparsify)
