"""The compressed-weight op forms each deployment target has, and the conversions between them.

    iOS16 / iOS17                       iOS18 and newer
    constexpr_affine_dequantize         constexpr_blockwise_shift_scale
    constexpr_lut_to_dense (flat:       constexpr_lut_to_dense (indices in the weight's
      1-D indices and LUT, shape)         shape, LUT [blocks..., 2**nbits, vector])
    constexpr_sparse_to_dense (flat     constexpr_sparse_to_dense (mask in the weight's shape)
      mask, shape)
    -                                   constexpr_lut_to_sparse, constexpr_sparse_blockwise_shift_scale
                                          (joint compression)

iOS15 has none of them. The compression stages emit the forms of their
function's target already; `for_target` converts what is left (a model read
at iOS17 and raised to iOS18, a program built by hand) and refuses, naming the
op and the target it needs, what the target cannot express. The conversions
are exact: the same dense weight comes out.
"""
from __future__ import annotations

import numpy as np

from ir.analysis import use_def
from ir.construct import const_op, new_op
from ir.core import Function, Op, Var
from ir.dtypes import dtype as lookup_dtype
from ir.formats.coreml import targets
from ir.rewrite import Pattern, Rewrite, sweep_function

IOS16_LUT_NBITS = (1, 2, 4, 6, 8)


class CoreMLExportError(ValueError):
    """A program that cannot be written as Core ML for the target; names the op and says why."""


def _needs(op, what: str, floor: str, target: str):
    return CoreMLExportError(f"{op.op_type} {op.name!r}: {what} needs Core ML {floor} or newer, the model "
                             f"targets {target} (raise it with --target {floor}, or set_target in a pipeline)")


def _known(op, key):
    v = op.get(key)
    if v is None:
        return None
    if v.val is None:
        raise CoreMLExportError(f"{op.op_type} {op.name!r}: {key} must be a constant to change its form")
    return v.val


class _Emit:
    """New ops replacing one op: consts named after it, fresh in the function."""

    def __init__(self, op, ctx):
        self.op, self.ctx, self.ops = op, ctx, []

    def const(self, role: str, value, dt=None):
        c = const_op(self.ctx.fresh_name(f"{self.op.name}_{role}"), np.asarray(value), dt)
        self.ops.append(c)
        return c.outputs[0]

    def final(self, op_type: str, **inputs) -> Rewrite:
        op = new_op(op_type, self.op.name, inputs)
        out = op.outputs[0]
        if out.type != self.op.outputs[0].type:
            raise CoreMLExportError(f"{self.op.op_type} {self.op.name!r}: its {op_type} form gives "
                                    f"{out.type}, not {self.op.outputs[0].type}")
        op = op.replace(outputs=(Var(self.op.outputs[0].name, out.type),))  # consumers keep their name
        self.ops.append(op)
        return Rewrite(claims=(self.op,), new_ops=tuple(self.ops), replace={self.op.outputs[0].name: op.outputs[0]})


# ---- iOS16 forms -> iOS18 forms -----------------------------------------------------------------

def _affine_to_ios18(op, ctx):
    q, zp, scale = op.quantized_data, _known(op, "zero_point"), _known(op, "scale")
    axis = int(_known(op, "axis") if op.axis is not None else 0) % max(q.rank, 1)
    shape = [1] * q.rank
    if scale.ndim or zp.ndim:
        shape[axis] = max(scale.size, zp.size)
    n = int(np.prod(shape))
    along = lambda a: np.broadcast_to(np.asarray(a).reshape(-1), (n,)).reshape(shape)  # noqa: E731
    e = _Emit(op, ctx)
    return e.final("constexpr_blockwise_shift_scale", data=q, scale=e.const("scale", along(scale).astype(scale.dtype)),
                   offset=e.const("offset", along(zp), op.zero_point.dtype))


def _lut_flat_to_ios18(op, ctx):
    idx, lut, shape = _known(op, "indices"), _known(op, "lut"), [int(s) for s in _known(op, "shape")]
    e = _Emit(op, ctx)
    return e.final("constexpr_lut_to_dense", indices=e.const("indices", idx.reshape(shape), op.indices.dtype),
                   lut=e.const("lut", lut.reshape([1] * len(shape) + [lut.size, 1])))


def _sparse_flat_to_ios18(op, ctx):
    mask = _known(op, "mask")
    e = _Emit(op, ctx)
    return e.final("constexpr_sparse_to_dense", nonzero_data=op.nonzero_data,
                   mask=e.const("mask", mask.reshape(op.outputs[0].shape), "uint1"))


# ---- iOS18 forms -> iOS16 forms -----------------------------------------------------------------

def _lut_to_flat(op, ctx, target):
    idx, lut = _known(op, "indices"), _known(op, "lut")
    if lut.shape[-1] != 1 or int(np.prod(lut.shape[:-2])) != 1:
        raise _needs(op, "a per-block or vector LUT", "iOS18", target)
    nbits = lookup_dtype(op.indices.dtype).bits
    if nbits not in IOS16_LUT_NBITS:
        raise _needs(op, f"a {nbits}-bit LUT", "iOS18", target)
    e = _Emit(op, ctx)
    return e.final("constexpr_lut_to_dense", indices=e.const("indices", idx.reshape(-1), op.indices.dtype),
                   lut=e.const("lut", lut.reshape(-1)),
                   shape=e.const("shape", np.array(op.outputs[0].shape, np.uint32)))


def _sparse_to_flat(op, ctx, target):
    mask = _known(op, "mask")
    if op.nonzero_data.val is None:
        raise _needs(op, "a sparse weight whose values are compressed further (joint compression)",
                     "iOS18", target)
    e = _Emit(op, ctx)
    return e.final("constexpr_sparse_to_dense", nonzero_data=op.nonzero_data,
                   mask=e.const("mask", mask.reshape(-1), "uint1"),
                   shape=e.const("shape", np.array(op.outputs[0].shape, np.uint32)))


def _blockwise_to_affine(op, ctx, target):
    data, scale = op.data, _known(op, "scale")
    offset = _known(op, "offset") if op.offset is not None else None
    big = [i for i, p in enumerate(scale.shape) if p > 1]
    per_axis = not big or (len(big) == 1 and scale.shape[big[0]] == data.shape[big[0]])
    if data.dtype not in ("int8", "uint8") or data.val is None or not per_axis:
        raise _needs(op, f"{data.dtype} data with a scale of shape {list(scale.shape)} (only per-tensor or "
                         "per-channel 8-bit data has an older form)", "iOS18", target)
    axis = big[0] if big else 0
    zp = np.zeros(scale.shape, lookup_dtype(data.dtype).storage) if offset is None else offset
    flat = (lambda a: a.reshape(-1)) if big else (lambda a: a.reshape(()))
    e = _Emit(op, ctx)
    return e.final("constexpr_affine_dequantize", quantized_data=data, zero_point=e.const("zp", flat(zp), data.dtype),
                   scale=e.const("scale", flat(scale)), axis=e.const("axis", np.int32(axis)))


def _ios18_only(what):
    def refuse(op, ctx, target):
        raise _needs(op, what, "iOS18", target)
    return refuse


_TO_IOS18 = {  # op type -> (is it in its iOS16 form?, conversion)
    "constexpr_affine_dequantize": (lambda op: True, _affine_to_ios18),
    "constexpr_lut_to_dense": (lambda op: op.get("shape") is not None, _lut_flat_to_ios18),
    "constexpr_sparse_to_dense": (lambda op: op.get("shape") is not None, _sparse_flat_to_ios18),
}
_TO_IOS16 = {  # op type -> (is it in its iOS18 form?, conversion)
    "constexpr_lut_to_dense": (lambda op: op.get("shape") is None, _lut_to_flat),
    "constexpr_sparse_to_dense": (lambda op: op.get("shape") is None, _sparse_to_flat),
    "constexpr_blockwise_shift_scale": (lambda op: True, _blockwise_to_affine),
    "constexpr_lut_to_sparse": (lambda op: True, _ios18_only("joint compression (a LUT over sparse values)")),
    "constexpr_sparse_blockwise_shift_scale": (lambda op: True,
                                               _ios18_only("joint compression (quantized sparse values)")),
}


def _pattern(target: str) -> Pattern:
    ios18 = targets.at_least(target, "iOS18")
    table = _TO_IOS18 if ios18 else _TO_IOS16

    def match(op: Op, ctx):
        if op.op_type.startswith("constexpr_") and not targets.at_least(target, "iOS16"):
            raise _needs(op, "a compressed weight", "iOS16", target)
        entry = table.get(op.op_type)
        return op if entry is not None and entry[0](op) else None

    def rewrite(op: Op, ctx):
        convert = table[op.op_type][1]
        return convert(op, ctx) if ios18 else convert(op, ctx, target)

    return Pattern(f"coreml_forms_{target}", match, rewrite)


def for_target(fn: Function, target: str) -> Function:
    """`fn` with every compressed weight in the form `target` has (fn itself when all are)."""
    targets.target(target)
    if not any(op.op_type.startswith("constexpr_") for op in fn.block.walk()):
        return fn
    use_def(fn)  # the driver's context reads it
    return sweep_function(fn, (_pattern(target),))
