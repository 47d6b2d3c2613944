"""affine_quantize_weights: w ~= scale * (q - zero_point), q in int8/uint8/int4/uint4.

Formulas are the seed's (see numeric/affine.py): linear_symmetric maps
[-max|w|, max|w|] onto [-127, 127] (int8; uint8 [0, 254] with zero point 127;
4-bit alike), linear maps [min(w, 0), max(w, 0)] onto the full integer range.

Granularity: per_tensor; per_channel on the consuming op's output axis (0 for
linear/conv weights, 1 for conv_transpose); per_block: per output channel and
blocks of `block_size` along the input axis.

Which op is emitted (the opset rule):

* functions targeting iOS18 or newer (and IR programs without a Core ML
  opset): ``constexpr_blockwise_shift_scale`` (data as an int8/uint8/int4/uint4
  const, scale, an offset const only when some zero point is nonzero);
* iOS16 / iOS17: ``constexpr_affine_dequantize`` (per_tensor or per_channel
  8-bit only; 4-bit and per_block raise, as they need iOS18).

Joint compression (iOS18): a weight that is already sparse
(``constexpr_sparse_to_dense`` over const nonzero values) gets
``constexpr_sparse_blockwise_shift_scale`` + ``constexpr_sparse_to_dense``
(the dense weight's parameters, the nonzero values quantized); a palettized
weight gets its LUT quantized (a ``constexpr_blockwise_shift_scale`` feeding
``constexpr_lut_to_dense`` / ``constexpr_lut_to_sparse``): per_tensor gives
one scale, per_channel one scale per LUT, per_block is refused.

Skips (recorded in the stats, weight unchanged): empty weights; a block size
that does not divide the input axis. Errors: NaN/Inf weights, bad parameters.
"""
from __future__ import annotations

import numpy as np

from stages.base import DEFAULT_CONTEXT
from stages.compression.checked import ParameterError, compression_stage, dtype_name, one_of
from stages.compression.figures import const_nbytes, record
from stages.compression.forms import Emitter, require_constexpr, require_ios18
from stages.compression.materialize import evaluate_ops
from stages.compression.numeric.affine import GRANULARITIES, MODES, QUANT_DTYPES, affine_quantize
from stages.compression.numeric.errors import CompressionError, NotCompressible
from stages.compression.weights import Replacement, Skip, transform_weights


def check_affine(params: dict) -> None:
    one_of(params, "mode", MODES)
    if params.get("dtype") is not None:
        one_of({"dtype": dtype_name(params["dtype"])}, "dtype", tuple(QUANT_DTYPES))
    one_of(params, "granularity", GRANULARITIES)
    bs = params.get("block_size")
    if bs is not None and (isinstance(bs, bool) or not isinstance(bs, (int, np.integer)) or bs <= 0):
        raise ParameterError(f"block_size={bs!r} must be a positive integer")


def _quantize(view, w, params, block_sizes=None):
    dt = dtype_name(params["dtype"])
    axis = view.output_axis()
    axis = 0 if axis is None else axis
    in_axis = view.input_axis()
    in_axis = (1 if w.ndim > 1 else 0) if in_axis is None or in_axis == axis else in_axis
    return affine_quantize(w, mode=params["mode"], dtype=dt, granularity=params["granularity"],
                           axis=axis, block_size=params["block_size"], input_axis=in_axis,
                           block_sizes=block_sizes, name=view.name), axis


def _shift_scale_consts(em, q, prefix=""):
    data = em.const(prefix + "q", q.data, q.dtype)
    scale = em.const(prefix + "scale", q.scale)
    offset = em.const(prefix + "offset", q.zero_point, q.dtype) if np.any(q.zero_point != 0) else None
    return data, scale, offset


def _dense(view, params, names):
    w = view.value
    if w.size == 0:
        return Skip("empty weight")
    version = require_constexpr(view)
    dt = dtype_name(params["dtype"])
    if version < 18 and (QUANT_DTYPES[dt][0] < 8 or params["granularity"] == "per_block"):
        what = f"dtype={dt}" if QUANT_DTYPES[dt][0] < 8 else "granularity='per_block'"
        require_ios18(view, what)
    try:
        q, axis = _quantize(view, w, params)
    except NotCompressible as e:
        return Skip(str(e))
    em = Emitter(names)
    final = view.name if view.producer.name == view.name else names("dense")
    if version >= 18:
        data, scale, offset = _shift_scale_consts(em, q)
        out = em.op("constexpr_blockwise_shift_scale", final, data=data, scale=scale, offset=offset)
    else:  # iOS16 constexpr_affine_dequantize: scalar or per-axis scale / zero point
        per_tensor = q.scale.size == 1
        shape = () if per_tensor else (-1,)
        data = em.const("q", q.data, dt)
        zp = em.const("offset", q.zero_point.reshape(shape), dt)
        scale = em.const("scale", q.scale.reshape(shape))
        ax = em.const("axis", np.int32(axis))
        out = em.op("constexpr_affine_dequantize", final, quantized_data=data, zero_point=zp, scale=scale, axis=ax)
    recon = evaluate_ops(em.ops, out.outputs[0])
    return Replacement(tuple(em.ops), _stats(view, params, ("weight",), em.ops, w, recon, q))


def _stats(view, params, removed, added, w, recon, q):
    return record(params["mode"], const_nbytes([view.sources[r] for r in removed]), const_nbytes(added), w, recon,
                  dtype=q.dtype, nbits=QUANT_DTYPES[q.dtype][0], granularity=params["granularity"],
                  max_scale=float(np.max(q.scale)), kind=view.kind)


def _sparse(view, params, names):
    require_ios18(view, "quantizing a sparse weight (joint compression)")
    w = view.value
    try:
        q, _ = _quantize(view, w, params)
    except NotCompressible as e:
        return Skip(str(e))
    mask_var = view.sources["mask"].outputs[0]
    keep = mask_var.val != 0
    em = Emitter(names)
    data = em.const("q", q.data[keep], q.dtype)
    scale = em.const("scale", q.scale)
    offset = em.const("offset", q.zero_point, q.dtype) if np.any(q.zero_point != 0) else None
    op = em.op("constexpr_sparse_blockwise_shift_scale", names("sparse"), data_mask=mask_var, nonzero_data=data,
               scale=scale, offset=offset)
    nz_var = view.sources["nonzero_data"].outputs[0]
    values = evaluate_ops(em.ops, op.outputs[1])
    recon = view.reconstruct({nz_var.name: values})
    return Replacement(tuple(em.ops), _stats(view, params, ("nonzero_data",), em.ops, w, recon, q),
                       claims=("nonzero_data",), replace={nz_var.name: op.outputs[1]})


def _lut(view, params, names):
    require_ios18(view, "quantizing a LUT (joint compression)")
    lut_var = view.sources["lut"].outputs[0]
    lut = lut_var.val
    rank = lut.ndim
    if params["granularity"] == "per_block":
        raise CompressionError(f"{view.name}: quantizing a palettized weight's LUT supports granularity "
                               "'per_tensor' or 'per_channel' (one scale per LUT), not 'per_block'")
    blocks = [0] * rank if params["granularity"] == "per_tensor" else [1] * (rank - 2) + [0, 0]
    q = affine_quantize(lut, mode=params["mode"], dtype=dtype_name(params["dtype"]), block_sizes=blocks,
                        name=f"{view.name} (LUT)")
    em = Emitter(names)
    data, scale, offset = _shift_scale_consts(em, q, "lut_")
    lut_op = view.sources["lut"]
    final = lut_var.name if lut_op.name == lut_var.name else names("lut")
    out = em.op("constexpr_blockwise_shift_scale", final, data=data, scale=scale, offset=offset)
    recon = view.reconstruct({lut_var.name: evaluate_ops(em.ops, out.outputs[0])})
    return Replacement(tuple(em.ops), _stats(view, params, ("lut",), em.ops, view.value, recon, q),
                       claims=("lut",), replace={lut_var.name: out.outputs[0]})


_BY_KIND = {"dense": _dense, "sparse": _sparse, "lut": _lut}


def compress_affine(view, params, names):
    return _BY_KIND[view.kind](view, params, names)


def _full_check(params):
    check_affine(params)
    for key in ("mode", "dtype", "granularity"):
        if params.get(key) is None:
            raise ParameterError(f"affine_quantize_weights needs {key}")


@compression_stage("affine_quantize_weights", check_affine)
def affine_quantize_weights(program, *, mode="linear_symmetric", dtype="int8", granularity="per_channel",
                            block_size=32, op_selector=None, config=None, context=DEFAULT_CONTEXT):
    """Affine-quantize every selected weight (see the module docstring for forms and rules)."""
    params = {"mode": mode, "dtype": dtype, "granularity": granularity, "block_size": block_size}
    _full_check(params)
    return transform_weights(program, compress_affine, params, context, config, op_selector,
                             kinds=("dense", "sparse", "lut"), desc="affine_quantize_weights", check=_full_check)
