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

Block size rule (per_block): blocks are ``b`` elements of the input axis, ``b``
the largest size <= ``block_size`` that divides that axis (a [64, 100] weight
with block_size=32 gets blocks of 25; an axis shorter than block_size is one
block). Core ML's constexpr_blockwise_shift_scale needs every block whole, so a
ragged last block is not an option even though ONNX's blocked DequantizeLinear
(opset 21) would express one; coremltools instead skips such weights. The
stats record ``block_size`` and, when it differs, ``block_size_requested``.

Skips (weight unchanged, the reason in its stats): empty weights; per_block on
a weight of rank < 2 (a bias); a LUT asked to be quantized per_block; any form
that would not be smaller than the weight (e.g. per_channel on a 1-D weight, a
scale per element; with the default selection, see weights.transform_weights). Errors: NaN/Inf weights,
bad parameters.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from ir.fold import evaluate_ops
from ir.ops.quant import block_view
from stages.base import DEFAULT_CONTEXT
from stages.contracts import affine_bound, lossy
from stages.compression.checked import ParameterError, compression_stage, dtype_name, one_of
from stages.compression.figures import CHUNK, FigureSums, const_nbytes, record, round_to_float16, work_dtype
from stages.compression.forms import Emitter, require_constexpr, require_ios18
from stages.compression.numeric.affine import GRANULARITIES, MODES, QUANT_DTYPES, affine_quantize
from stages.compression.numeric.errors import CompressionError, NotCompressible
from stages.compression.weights import Replacement, Skip, transform_weights

# the spellings of dtype (numpy types and coremltools' dtype classes are accepted too, see dtype_name)
DTYPE_NAMES = tuple(QUANT_DTYPES)


def check_affine(params: dict) -> None:
    one_of(params, "mode", MODES)
    if params.get("dtype") is not None:
        one_of({"dtype": dtype_name(params["dtype"])}, "dtype", tuple(QUANT_DTYPES))
    one_of(params, "granularity", GRANULARITIES)
    bs = params.get("block_size")
    if bs is not None and (isinstance(bs, bool) or not isinstance(bs, (int, np.integer)) or bs <= 0):
        raise ParameterError(f"block_size={bs!r} must be a positive integer")


def _axes(view, w):
    """(output axis, input axis) of the weight, from how its consumers use it."""
    axis = view.output_axis()
    axis = 0 if axis is None else axis
    in_axis = view.input_axis()
    in_axis = (1 if w.ndim > 1 else 0) if in_axis is None or in_axis == axis else in_axis
    return axis, in_axis


def _block_size(w, params, in_axis):
    """The block size per_block uses along the input axis, or a Skip saying why none.

    The largest b <= block_size that divides the input axis: Core ML's
    constexpr_blockwise_shift_scale needs equal blocks (no ragged last block, although ONNX's
    blocked DequantizeLinear would take one). Larger blocks are the smaller form; when even
    this one is not smaller than the weight, the default selection leaves the weight
    (transform_weights).
    """
    if w.ndim < 2:
        return Skip(f"per_block needs a weight of rank >= 2 (one block axis besides the output axis); "
                    f"this one is {w.ndim}-D")
    dim, wanted = w.shape[in_axis], int(params["block_size"])
    return next(b for b in range(min(wanted, dim), 0, -1) if dim % b == 0)  # dim > 0: empty weights are skipped


def affine_grid(view, w, axes, params):
    """(AffineParams, stats recording the block size chosen) or a Skip: the grid this stage
    puts w on, given its (output, input) axes. GPTQ rounds onto the same grid."""
    axis, in_axis = axes
    block_size, chosen = params["block_size"], {}
    if params["granularity"] == "per_block":
        block_size = _block_size(w, params, in_axis)
        if isinstance(block_size, Skip):
            return block_size
        chosen = {"block_size": block_size}
        if block_size != params["block_size"]:
            chosen["block_size_requested"] = params["block_size"]
    q = affine_quantize(w, mode=params["mode"], dtype=dtype_name(params["dtype"]), granularity=params["granularity"],
                        axis=axis, block_size=block_size, input_axis=in_axis, name=view.name)
    return q, chosen


def _quantize(view, w, params):
    """(AffineParams, output axis, stats recording the block size chosen) or a Skip
    (an incompressible weight is one too)."""
    axes = _axes(view, w)
    try:
        found = affine_grid(view, w, axes, params)
    except NotCompressible as e:
        return Skip(str(e))
    return found if isinstance(found, Skip) else (found[0], axes[0], found[1])


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
    found = _quantize(view, w, params)
    if isinstance(found, Skip):
        return found
    q, axis, chosen = found
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
    offset = q.zero_point if np.any(q.zero_point != 0) else None  # subtracting zeros changes nothing
    figures = dequantized_figures(w, q.data, q.scale, offset, np.float32 if version < 18 else None)
    return Replacement(tuple(em.ops), {**_stats(view, params, ("weight",), em.ops, q, figures=figures), **chosen})


def _stats(view, params, removed, added, q, **figures):
    return record(params["mode"], const_nbytes([view.sources[r] for r in removed]), const_nbytes(added),
                  dtype=q.dtype, nbits=QUANT_DTYPES[q.dtype][0], granularity=params["granularity"],
                  max_scale=float(np.max(q.scale)), kind=view.kind, **figures)


def dequantized_figures(w, data, scale, offset=None, work=None) -> dict:
    """Error figures of scale * (data - offset) against w, the dequantization computed chunk by chunk
    and discarded (never the whole reconstruction at once).

    Mirrors the kernels of the emitted ops (ir/ops/quant.py): blockwise_shift_scale (scale and
    offset in the block layout, 8-bit integer data and offset) computes in fp32 for an fp16 / fp32
    scale and rounds once to the scale's dtype, in the scale's dtype otherwise; iOS16's
    affine_dequantize always computes in fp32 (``work=np.float32``).  The fp16 rounding is done in
    fp32 (figures.round_to_float16), bit for bit numpy's cast, unless a product could leave fp16's
    range, where numpy's cast (inf beyond 65504) is used.  Figures' precision: figures.py.
    """
    work = np.dtype(work or (np.float32 if scale.dtype in (np.float16, np.float32) else scale.dtype))
    if w.ndim == 0:
        w, data, scale = w.reshape(1), data.reshape(1), scale.reshape(1)
        offset = None if offset is None else offset.reshape(1)
    sums = FigureSums(work_dtype(w.dtype, work))
    scale_w = scale.astype(work)
    offset_w = None if offset is None else offset.astype(work)
    to_fp16 = scale.dtype == np.float16 and work == np.float32
    # |data - offset| <= 383 for 8-bit codes: beyond this scale a product may round to fp16 inf
    fast_fp16 = to_fp16 and float(np.max(np.abs(scale_w), initial=0.0)) * 383.0 < 65504.0
    rows = data.shape[0]
    per_block = rows // scale.shape[0]  # rows of data per scale entry on axis 0
    step = max(1, CHUNK // max(1, data.size // max(rows, 1)))
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        pick = np.arange(r0, r1) // per_block  # each row gets its block's parameters
        x = sums.buffer("r", (r1 - r0) * (data.size // rows), work).reshape(data[r0:r1].shape)
        np.copyto(x, data[r0:r1])
        xb, sb = block_view(x, scale_w[pick])
        if offset_w is not None:
            np.subtract(xb, block_view(x, offset_w[pick])[1], out=xb)
        np.multiply(xb, sb, out=xb)
        r = x.reshape(-1)
        if fast_fp16:
            # an fp16 scale times an integer is a multiple of 2**-24: exact wherever fp16 is
            # subnormal, so the rounding needs no subnormal case
            round_to_float16(r, sums.buffer("round", r.size, np.int32), subnormals=False)
        elif to_fp16 or np.dtype(scale.dtype) != work:
            with np.errstate(over="ignore"):  # inf past fp16 range, as the kernel gives
                np.copyto(r, r.astype(scale.dtype))  # the kernel's rounding to the scale's dtype
        sums.add(sums.exact(w[r0:r1], "w"), r.astype(sums.work, copy=False))
    return sums.figures()


def _sparse(view, params, names):
    require_ios18(view, "quantizing a sparse weight (joint compression)")
    w = view.value
    found = _quantize(view, w, params)
    if isinstance(found, Skip):
        return found
    q, _, chosen = found
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
    return Replacement(tuple(em.ops), {**_stats(view, params, ("nonzero_data",), em.ops, q, weight=w,
                                                reconstruction=recon), **chosen},
                       claims=("nonzero_data",), replace={nz_var.name: op.outputs[1]})


def _lut(view, params, names):
    require_ios18(view, "quantizing a LUT (joint compression)")
    lut_var = view.sources["lut"].outputs[0]
    lut = lut_var.val
    rank = lut.ndim
    if params["granularity"] == "per_block":  # a per-weight fact, not a bad parameter: the others still go
        return Skip("already palettized: its LUT can be quantized per_tensor or per_channel (one scale "
                    "per LUT), not per_block")
    blocks = [0] * rank if params["granularity"] == "per_tensor" else [1] * (rank - 2) + [0, 0]
    q = affine_quantize(lut, mode=params["mode"], dtype=dtype_name(params["dtype"]), block_sizes=blocks,
                        name=f"{view.name} (LUT)")
    em = Emitter(names)
    data, scale, offset = _shift_scale_consts(em, q, "lut_")
    lut_op = view.sources["lut"]
    final = lut_var.name if lut_op.name == lut_var.name else names("lut")
    out = em.op("constexpr_blockwise_shift_scale", final, data=data, scale=scale, offset=offset)
    recon = view.reconstruct({lut_var.name: evaluate_ops(em.ops, out.outputs[0])})
    return Replacement(tuple(em.ops), _stats(view, params, ("lut",), em.ops, q, weight=view.value,
                                             reconstruction=recon),
                       claims=("lut",), replace={lut_var.name: out.outputs[0]})


_BY_KIND = {"dense": _dense, "sparse": _sparse, "lut": _lut}


def compress_affine(view, params, names):
    return _BY_KIND[view.kind](view, params, names)


def _full_check(params):
    check_affine(params)
    for key in ("mode", "dtype", "granularity"):
        if params.get(key) is None:
            raise ParameterError(f"affine_quantize_weights needs {key}")


@compression_stage("affine_quantize_weights", check_affine, version="2", contract=lossy(affine_bound))  # 2: block size fallback, skip reasons
def affine_quantize_weights(program, *, mode: Literal[MODES] = "linear_symmetric",
                            dtype: Literal[DTYPE_NAMES] = "int8", granularity: Literal[GRANULARITIES] = "per_channel",
                            block_size=32, op_selector=None, config=None, context=DEFAULT_CONTEXT):
    """Affine-quantize every selected weight (see the module docstring for forms and rules)."""
    params = {"mode": mode, "dtype": dtype, "granularity": granularity, "block_size": block_size}
    _full_check(params)
    return transform_weights(program, compress_affine, params, context, config, op_selector,
                             kinds=("dense", "sparse", "lut"), desc="affine_quantize_weights", check=_full_check)
