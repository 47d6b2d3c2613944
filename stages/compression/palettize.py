"""palettize_weights: every weight element (or vector) becomes an index into a small LUT.

Modes: kmeans (1-D k-means; see numeric/kmeans1d.py), uniform (2**nbits
evenly spaced values from min to max), unique (the distinct values, in the
smallest nbits that holds them; a weight with more than 256 distinct values,
or more than 2**nbits when nbits is given, is skipped and the skip recorded in
the stats), custom (``lut_function(weight) -> (lut, indices)``, validated: a
wrong shape or out-of-range index raises naming the weight).

``kmeans_method``: 'exact' proves every LUT optimal (the DP inside a Lloyd
bracket); with the ``[fast]`` extra (numba) that solver runs compiled and is the
fastest of all (the 256 groups of a 4096x4096 fp16 weight in ~0.07 s).
'fast' runs the numpy DP in bands around a coarse optimum, not guaranteed
optimal (on that weight in groups of 16 channels, 3 of 256 groups end up to
9e-4 above the optimum in SSE) but faster than the numpy exact solver there
(about 0.5 s against 1.5 s). 'auto' (the default) is exact when compiled, and
without numba exact while a batch of groups is small (histogram positions x
2**nbits <= 4M) and fast beyond.

Forms emitted:

* iOS18 (and IR programs without a Core ML opset): ``constexpr_lut_to_dense``
  with indices of dtype uint{nbits} in the weight's shape and a LUT
  [blocks..., 2**nbits, cluster_dim] (one LUT per group of ``group_size``
  channels on the channel axis for per_grouped_channel); ``vector_axis`` when
  cluster_dim > 1. With ``enable_per_channel_scale`` the weight is divided by
  each output channel's max |w| before palettizing, and a
  ``constexpr_blockwise_shift_scale`` multiplies it back (as coremltools does).
* iOS16 / iOS17: the flat iOS16 ``constexpr_lut_to_dense`` (1-D LUT, 1-D
  indices, shape); per_tensor scalar LUTs with nbits in {1, 2, 4, 6, 8} only,
  anything else raises naming the parameter.

The channel axis is ``channel_axis`` when given, else the consuming op's output
axis (0 for linear / conv, 1 for conv_transpose).

Group size rule (per_grouped_channel): each LUT serves ``g`` channels, ``g`` the
largest size <= ``group_size`` that divides the channel count and is a multiple
of ``cluster_dim`` (20 channels with group_size=16 get two groups of 10; fewer
channels than group_size make one group). Core ML's constexpr_lut_to_dense needs
every group whole, so a ragged last group is not an option; coremltools instead
skips such weights. The stats record ``group_size`` and, when it differs,
``group_size_requested``. No such ``g`` (cluster_dim does not fit), or (with the
default selection) LUTs that would not be smaller than the weight (a 1-D bias:
groups of single values), is a skip with its reason in the stats.

Error figures (stats): those of what the emitted ops decompress to. For fp16
weights with a scalar LUT and no per-channel scale the kernel computes them
exactly from its per-group histograms (palettize_with_error), without building
the reconstruction; otherwise the op kernels reconstruct the weight and
figures.py compares it chunk by chunk.

Joint compression (iOS18): a sparse weight (``constexpr_sparse_to_dense`` over
const nonzero values) has only its nonzero values palettized:
``constexpr_lut_to_sparse`` + ``constexpr_sparse_to_dense``. Per-grouped-channel
LUTs are fitted on each group's nonzero values. cluster_dim > 1 and
enable_per_channel_scale are refused there.

This differs from coremltools 9.0 on purpose: its joint palettization
restores the dense weight (zeros included) and clusters that, so the zeros,
often half the weight or more, pull one LUT entry to 0 or near it and the
other entries are fitted around them; yet the zeros never read the LUT (the
mask keeps them exactly 0). Here every LUT entry serves the values that do
read it: the error on the nonzero values is optimal 1-D k-means over them (up
to the solver's documented tolerance), never more than coremltools' LUT gives
them and usually less. The LUTs (not the sizes) differ from coremltools'.
"""
from __future__ import annotations

from typing import Literal, Optional

import numpy as np

from ir.fold import evaluate_ops
from stages.base import DEFAULT_CONTEXT
from stages.contracts import lossy, palettize_bound
from stages.compression.checked import ParameterError, compression_stage, one_of, positive_int
from stages.compression.figures import const_nbytes, figures_from_sums, record
from stages.compression.forms import Emitter, require_constexpr, require_ios18, require_lut_nbits
from stages.compression.numeric.errors import CompressionError, NotCompressible
from stages.compression.numeric.palettize import (GRANULARITIES, METHODS, MODES, NBITS, palettize,
                                                  palettize_with_error, to_ios16)
from stages.compression.weights import Replacement, Skip, transform_weights


def check_palettize(params: dict) -> None:
    one_of(params, "nbits", NBITS)
    one_of(params, "mode", MODES)
    one_of(params, "granularity", GRANULARITIES)
    one_of(params, "kmeans_method", METHODS)
    positive_int(params, "group_size")
    positive_int(params, "cluster_dim")
    ca = params.get("channel_axis")
    if ca is not None and (isinstance(ca, bool) or not isinstance(ca, (int, np.integer))):
        raise ParameterError(f"channel_axis={ca!r} must be an integer or None")
    mode, nbits = params.get("mode"), params.get("nbits")
    if mode == "custom" and params.get("lut_function") is not None and not callable(params["lut_function"]):
        raise ParameterError("lut_function must be callable")
    if mode == "custom" and nbits is not None:
        raise ParameterError("nbits must not be given with mode='custom' (lut_function decides it)")
    if mode is not None and mode != "custom" and params.get("lut_function") is not None:
        raise ParameterError(f"lut_function is only used with mode='custom', not mode={mode!r}")


def full_check(params: dict) -> None:
    check_palettize(params)
    mode = params.get("mode") or "kmeans"
    if mode in ("kmeans", "uniform") and params.get("nbits") is None:
        raise ParameterError(f"mode={mode!r} needs nbits (one of {list(NBITS)})")
    if mode == "custom" and params.get("lut_function") is None:
        raise ParameterError("mode='custom' needs a lut_function")


def _channel_axis(view, params):
    if params.get("channel_axis") is not None:
        return int(params["channel_axis"])
    axis = view.output_axis()
    return 0 if axis is None else axis


def _group_size(shape, params, axis):
    """The group size per_grouped_channel uses on a weight of `shape`, or a Skip saying why none.

    The largest g <= group_size that divides the channels and is a multiple of cluster_dim:
    Core ML's constexpr_lut_to_dense needs each LUT to serve whole, equal groups (no ragged
    last group). Fewer, larger groups are the smaller form; when even this one is not
    smaller than the weight, the default selection leaves the weight (transform_weights).
    """
    channels, wanted, cd = shape[axis], params["group_size"], params["cluster_dim"]
    g = next((g for g in range(min(wanted, channels), 0, -1) if channels % g == 0 and g % cd == 0), None)
    if g is None:
        return Skip(f"per_grouped_channel: no group size <= {wanted} divides the {channels} channels "
                    f"and is a multiple of cluster_dim {cd}")
    return g


def _grouped(params, shape, axis):
    """(params with the group size to use, stats recording it) or a Skip; per_tensor unchanged."""
    if params["granularity"] != "per_grouped_channel":
        return params, {}
    g = _group_size(shape, params, axis)
    if isinstance(g, Skip):
        return g
    chosen = {"group_size": g}
    if g != params["group_size"]:
        chosen["group_size_requested"] = params["group_size"]
    return {**params, "group_size": g}, chosen


def _kernel(view, w, params, axis):
    """(LutParams or None, the kernel's error sums or None: see palettize_with_error)."""
    p, error = palettize_with_error(
        w, nbits=params["nbits"], mode=params["mode"], granularity=params["granularity"],
        group_size=params["group_size"], channel_axis=axis, cluster_dim=params["cluster_dim"],
        enable_per_channel_scale=params["enable_per_channel_scale"], lut_function=params["lut_function"],
        method=_kmeans_method(params), name=view.name)
    return (None if p is None else _read_only(p)), error


def _kmeans_method(params) -> str:
    return params.get("kmeans_method") or "auto"  # a config entry may set it to None


def _read_only(p):
    """The kernel's arrays are its own fresh ones: marked read-only, the consts hold them as
    they are instead of copying them (the indices are half the weight's bytes)."""
    for a in (p.lut, p.indices, p.per_channel_scale):
        if a is not None:
            a.flags.writeable = False
    return p


def _too_many_unique(params):
    limit = 256 if params["nbits"] is None else 1 << params["nbits"]
    return Skip(f"mode 'unique': more than {limit} distinct values")


def _stats(view, params, removed, added, recon, nbits, figures=None):
    """The weight's stats; the error figures given, or from the reconstruction `recon`."""
    return record(params["mode"], const_nbytes([view.sources[r] for r in removed]), const_nbytes(added),
                  view.value, recon, figures=figures, nbits=nbits, granularity=params["granularity"],
                  cluster_dim=params["cluster_dim"], kind=view.kind)


def _dense(view, params, names):
    w = view.value
    if w.size == 0:
        return Skip("empty weight")
    version = require_constexpr(view)
    if version < 18:
        for key, bad in (("granularity", params["granularity"] != "per_tensor"),
                         ("cluster_dim", params["cluster_dim"] != 1),
                         ("enable_per_channel_scale", bool(params["enable_per_channel_scale"]))):
            if bad:
                require_ios18(view, f"palettization with {key}={params[key]!r}")
    axis = _channel_axis(view, params)
    if not -w.ndim <= axis < w.ndim:  # (scalars never get here: transform_weights skips them)
        return Skip(f"channel_axis {axis} is out of range for a {w.ndim}-D weight")
    grouped = _grouped(params, w.shape, axis % w.ndim)
    if isinstance(grouped, Skip):
        return grouped
    params, chosen = grouped
    try:
        p, error = _kernel(view, w, params, axis)
    except NotCompressible as e:
        return Skip(str(e))
    if p is None:
        return _too_many_unique(params)
    em = Emitter(names)
    final = view.name if view.producer.name == view.name else names("dense")
    if version < 18:
        require_lut_nbits(view, p.nbits)  # the error names --target iOS18
        lut, idx, shape = to_ios16(p)
        out = em.op("constexpr_lut_to_dense", final, indices=em.const("indices", idx, f"uint{p.nbits}"),
                    lut=em.const("lut", lut), shape=em.const("shape", np.array(shape, np.uint32)))
    else:
        vector_axis = None if p.vector_axis is None else em.const("axis", np.int32(p.vector_axis))
        name = final if p.per_channel_scale is None else names("palettized")
        out = em.op("constexpr_lut_to_dense", name, indices=em.const("indices", p.indices, f"uint{p.nbits}"),
                    lut=em.const("lut", p.lut), vector_axis=vector_axis)
        if p.per_channel_scale is not None:
            out = em.op("constexpr_blockwise_shift_scale", final, data=out.outputs[0],
                        scale=em.const("pcs", p.per_channel_scale))
    if error is not None:  # the kernel's exact sums (the reconstruction is lut[group][index])
        stats = _stats(view, params, ("weight",), em.ops, None, p.nbits, figures_from_sums(*error))
    else:
        stats = _stats(view, params, ("weight",), em.ops, evaluate_ops(em.ops, out.outputs[0]), p.nbits)
    return Replacement(tuple(em.ops), {**stats, **chosen})


# ---- joint: palettize the nonzero values of a sparse weight --------------------------------

def _nbits_for(count: int):
    return next((n for n in NBITS if count <= (1 << n)), None)


def _sparse_luts(view, nz, mask, params, axis):
    """(lut [blocks..., 2**nbits, 1], indices of the nonzero values, nbits) fitted on nonzero values."""
    rank = mask.ndim
    if params["granularity"] == "per_tensor":
        groups = np.zeros(nz.size, np.int64)
        n_groups = 1
    else:
        size = params["group_size"]
        if mask.shape[axis] % size:
            raise NotCompressible(f"{view.name}: {mask.shape[axis]} channels not divisible by group_size {size}")
        n_groups = mask.shape[axis] // size
        groups = np.nonzero(mask)[axis] // size  # row-major order, as nonzero_data is stored
    members = [np.flatnonzero(groups == g) for g in range(n_groups)] if n_groups > 1 else [np.arange(nz.size)]
    nbits = params["nbits"]
    if params["mode"] == "unique":
        need = max((len(np.unique(nz[m])) for m in members), default=1)
        nbits = _nbits_for(need) if nbits is None else (nbits if need <= 1 << nbits else None)
        if nbits is None:
            return None
    luts, indices = [], np.zeros(nz.size, np.uint8)
    for m in members:
        if m.size == 0:  # a group with no nonzero value: its LUT is never read
            luts.append(np.zeros((1 << (nbits or 1), 1), nz.dtype))
            continue
        p = palettize(np.ascontiguousarray(nz[m]), nbits, mode=params["mode"], lut_function=params["lut_function"],
                      method=_kmeans_method(params), name=view.name)
        if p is None:
            return None
        nbits = p.nbits
        luts.append(p.lut.reshape(-1, 1))
        indices[m] = p.indices.ravel()
    entries = 1 << nbits
    luts = [l if l.shape[0] == entries else np.resize(l, (entries, 1)) for l in luts]
    shape = [1] * rank + [entries, 1]
    shape[axis] = n_groups
    lut = np.stack(luts)  # (groups, entries, 1)
    lut = np.moveaxis(lut.reshape([n_groups] + [1] * (rank - 1) + [entries, 1]), 0, axis) if rank else lut
    return lut.reshape(shape), indices, nbits


def _sparse(view, params, names):
    require_ios18(view, "palettizing a sparse weight (joint compression)")
    for key, bad in (("cluster_dim", params["cluster_dim"] != 1),
                     ("enable_per_channel_scale", bool(params["enable_per_channel_scale"]))):
        if bad:
            raise CompressionError(f"{view.name}: {key}={params[key]!r} is not supported when palettizing a "
                                   "sparse weight (joint compression)")
    nz_var = view.sources["nonzero_data"].outputs[0]
    mask_var = view.sources["mask"].outputs[0]
    if nz_var.val.size == 0:
        return Skip("sparse weight with no nonzero value")
    axis = _channel_axis(view, params)
    mask = mask_var.val
    if not -mask.ndim <= axis < mask.ndim:
        return Skip(f"channel_axis {axis} is out of range for a {mask.ndim}-D weight")
    axis = axis % mask.ndim
    grouped = _grouped(params, mask.shape, axis)
    if isinstance(grouped, Skip):
        return grouped
    params, chosen = grouped
    try:
        found = _sparse_luts(view, nz_var.val, mask_var.val, params, axis)
    except NotCompressible as e:
        return Skip(str(e))
    if found is None:
        return _too_many_unique(params)
    lut, idx, nbits = found
    em = Emitter(names)
    inner = em.op("constexpr_lut_to_sparse", names("palettized"), indices_mask=mask_var,
                  indices_nonzero_data=em.const("indices", idx, f"uint{nbits}"), lut=em.const("lut", lut))
    end = view.sources["end"]
    out = em.op("constexpr_sparse_to_dense", end.name, nonzero_data=inner.outputs[1], mask=inner.outputs[0])
    recon = evaluate_ops(em.ops, out.outputs[0])
    return Replacement(tuple(em.ops), {**_stats(view, params, ("nonzero_data",), em.ops, recon, nbits), **chosen},
                       claims=("nonzero_data", "end"), replace={view.name: out.outputs[0]})


_BY_KIND = {"dense": _dense, "sparse": _sparse}


def compress_palettize(view, params, names):
    return _BY_KIND[view.kind](view, params, names)


@compression_stage("palettize_weights", check_palettize, version="2", contract=lossy(palettize_bound))  # 2: group size fallback, skip reasons
def palettize_weights(program, *, nbits: Optional[Literal[NBITS]] = None, mode: Literal[MODES] = "kmeans",
                      lut_function=None, granularity: Literal[GRANULARITIES] = "per_tensor",
                      group_size=32, channel_axis=None, enable_per_channel_scale=False, cluster_dim=1,
                      kmeans_method: Literal[METHODS] = "auto", op_selector=None, config=None,
                      context=DEFAULT_CONTEXT):
    """Palettize every selected weight (see the module docstring for forms and rules)."""
    params = dict(nbits=nbits, mode=mode, lut_function=lut_function, granularity=granularity,
                  group_size=group_size, channel_axis=channel_axis,
                  enable_per_channel_scale=enable_per_channel_scale, cluster_dim=cluster_dim,
                  kmeans_method=kmeans_method)
    if config is None:
        full_check(params)
    return transform_weights(program, compress_palettize, params, context, config, op_selector,
                             kinds=("dense", "sparse"), desc="palettize_weights", check=full_check)
