"""Postconditions: what a canonicalization leaves no instance of.

A stage disabled by an off-by-one returns its input unchanged, which every equivalence check
accepts. A canonicalization promises more: afterwards, no site of its pattern is left. These
predicates find such sites with their own, plain reading of the pattern (not the stage's match
functions), so a match that silently declines is caught on any program that has a site.
"""
from __future__ import annotations

import numpy as np

from ir.core import Program, ios_version
from stages.contracts.graph import _block_outputs, _blocks_of, _const_of, _producers, _readers


def _same_param(prod, a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    va, vb = _const_of(prod, a), _const_of(prod, b)
    if va is None or vb is None:
        return a.name == b.name
    return np.shape(va) == np.shape(vb) and bool(np.all(np.asarray(va) == np.asarray(vb)))


def no_cancelling_pairs(program: Program) -> list:
    """dequantize_quantize_pair_elimination leaves no dequantize -> quantize with the same scale,
    zero point and axis, in one block, neither value a block output, the quantize giving back
    the dequantize's input type."""
    sites = []
    for fn in program.functions.values():
        prod, outs = _producers(fn), _block_outputs(fn)
        for block in _blocks_of(fn):
            here = {id(op) for op in block.ops}
            for q in block.ops:
                if q.op_type != "quantize" or q.outputs[0].name in outs:
                    continue
                d = prod.get(q.inputs["input"].name)
                if d is None or d.op_type != "dequantize" or id(d) not in here or d.outputs[0].name in outs:
                    continue
                if q.outputs[0].type != d.inputs["input"].type:
                    continue
                if all(_same_param(prod, d.inputs.get(k), q.inputs.get(k)) for k in ("scale", "zero_point", "axis")):
                    sites.append(f"{fn.name}: dequantize {d.name!r} -> quantize {q.name!r} still cancel out")
    return sites


_FP16_MAX = 65504.0


_FP16_TINY = float(np.nextafter(np.float16(0), np.float16(1)))


def _normalizable(s_a, s_b, s_z) -> bool:
    """Dividing by s_b (a scalar) keeps s_a / s_b and s_z / s_b inside fp16's range."""
    if s_b is None or np.size(s_b) != 1 or s_a is None or s_z is None:
        return False
    b = np.float32(np.asarray(s_b).reshape(()))
    with np.errstate(all="ignore"):
        q = np.abs(np.concatenate([np.asarray(s_a, np.float32).reshape(-1) / b,
                                   np.asarray(s_z, np.float32).reshape(-1) / b]))
    return bool(np.all(np.isfinite(q)) and q.max() <= _FP16_MAX and q.min() >= _FP16_TINY)


def no_unnormalized_binary_ops(program: Program) -> list:
    """distributive_quantized_binary_op_scale_normalization leaves no quantized add / sub
    (dequantize, dequantize -> add|sub (-> relu) -> quantize, each the only reader of the
    last, no value but the quantize's a block output) where neither input scale is 1 although
    dividing by one of them (a scalar) keeps every scale inside fp16's range."""
    sites = []
    for fn in program.functions.values():
        prod, readers, outs = _producers(fn), _readers(fn), _block_outputs(fn)
        for op in fn.block.walk():
            if op.op_type not in ("add", "sub"):
                continue
            dqs = [prod.get(op.inputs[k].name) for k in ("x", "y")]
            if any(d is None or d.op_type != "dequantize" for d in dqs):
                continue
            chain, tail, end = [op], None, op
            nxt = readers.get(op.outputs[0].name, [])
            if len(nxt) == 1 and nxt[0].op_type == "relu":
                tail = end = nxt[0]
                chain.append(tail)
            nxt = readers.get(end.outputs[0].name, [])
            if len(nxt) != 1 or nxt[0].op_type != "quantize":
                continue
            q = nxt[0]
            if any(v.outputs[0].name in outs for v in dqs + chain):
                continue
            scales = [_const_of(prod, d.inputs["scale"]) for d in dqs]
            s_z = _const_of(prod, q.inputs["scale"])
            if any(s is not None and np.all(np.asarray(s) == 1) for s in scales):
                continue
            scalar = [d.inputs.get("axis") is None for d in dqs]
            if any(scalar[i] and _normalizable(scales[1 - i], scales[i], s_z) for i in (0, 1)):
                sites.append(f"{fn.name}: {op.op_type} {op.name!r} -> quantize {q.name!r} could be "
                             f"normalized by a scalar input scale and was not")
    return sites


# ---- postconditions that compare with the step's input (leaves(after, before)) -------------

def _new_ops(fn, before_fn) -> list:
    """Ops of fn that before_fn has no op of the same name and type (what the step built)."""
    old = set() if before_fn is None else {(op.name, op.op_type) for op in before_fn.block.walk()}
    return [op for op in fn.block.walk() if (op.name, op.op_type) not in old]


def _before_fn(before, name):
    return None if before is None else before.functions.get(name)


def _blockwise_opset(opset) -> bool:
    """iOS18 brought constexpr_blockwise_shift_scale; an opset that is not Core ML's is the newest."""
    version = ios_version(opset)
    return version is None or version >= 18


def constexpr_forms_fit_opset(program: Program, before: Program = None) -> list:
    """dequantize_to_constexpr leaves no dequantize of constant data (data, scale, zero point
    and axis all consts), and the form it builds is the one of the function's opset:
    constexpr_blockwise_shift_scale from iOS18 on, constexpr_affine_dequantize before."""
    sites = []
    for fn in program.functions.values():
        prod = _producers(fn)
        for op in fn.block.walk():
            if op.op_type != "dequantize":
                continue
            ins = [op.inputs.get(k) for k in ("input", "scale", "zero_point", "axis")]
            if all(v is None or _const_of(prod, v) is not None for v in ins) and ins[0] is not None:
                sites.append(f"{fn.name}: dequantize {op.name!r} of constant data is left")
        want = "constexpr_blockwise_shift_scale" if _blockwise_opset(fn.opset) else "constexpr_affine_dequantize"
        wrong = {"constexpr_blockwise_shift_scale", "constexpr_affine_dequantize"} - {want}
        for op in _new_ops(fn, _before_fn(before, fn.name)):
            if op.op_type in wrong:
                sites.append(f"{fn.name}: new {op.op_type} {op.name!r} in a function of opset {fn.opset}, "
                             f"whose form is {want}")
    return sites


def int_ops_fit_opset(program: Program, before: Program = None) -> list:
    """int_op_canonicalization builds an integer reshape only where reshape has an int form:
    its iOS17 definition, so functions of opset iOS17 or later (or not Core ML's)."""
    sites = []
    for fn in program.functions.values():
        version = ios_version(fn.opset)
        if version is None or version >= 17:
            continue
        for op in _new_ops(fn, _before_fn(before, fn.name)):
            x = op.inputs.get("x") if op.op_type == "reshape" else None
            if x is not None and not isinstance(x, tuple) and not x.type.dt.is_float:
                sites.append(f"{fn.name}: new integer reshape {op.name!r} in a function of opset {fn.opset} "
                             f"(reshape has an int form from iOS17 on)")
    return sites


_LAYERS = ("linear", "conv", "matmul")


def _weight_axis(reader, weight, prod) -> object:
    """The output-channel axis of `weight` for one reader (None: not a layout the move takes)."""
    ins = reader.inputs
    if reader.op_type in ("linear", "conv"):
        ok = ins.get("weight") is weight and ins.get("x") is not weight
        bias = ins.get("bias")
        return 0 if ok and (bias is None or _const_of(prod, bias) is not None) else None
    as_x, as_y = ins.get("x") is weight, ins.get("y") is weight
    if as_x == as_y or weight.rank < 2:
        return None

    def flag(k):
        v = ins.get(k)
        return v is not None and bool(_const_of(prod, v))
    axis = (-2 if flag("transpose_y") else -1) if as_y else (-1 if flag("transpose_x") else -2)
    return axis + weight.rank


def no_unreordered_lut_scales(program: Program, before: Program = None) -> list:
    """reorder_lut_per_channel_scale leaves no LUT -> per-channel shift-scale -> layers site it
    could move: the LUT read only by a constexpr_blockwise_shift_scale (float data, const scale,
    no or an all-zero offset, the same dtype out), whose value, no block output, is read only
    by linear / conv (const or no bias) / matmul ops of the same block that agree on its output
    axis, with a scale of 1 on every other axis that broadcasts to each layer's output."""
    sites = []
    for fn in program.functions.values():
        prod, readers, outs = _producers(fn), _readers(fn), _block_outputs(fn)
        for block in _blocks_of(fn):
            here = {id(op) for op in block.ops}
            for lut in block.ops:
                if lut.op_type != "constexpr_lut_to_dense":
                    continue
                rs = readers.get(lut.outputs[0].name, [])
                if len(rs) != 1 or rs[0].op_type != "constexpr_blockwise_shift_scale" or id(rs[0]) not in here:
                    continue
                ss = rs[0]
                weight = ss.outputs[0]
                scale = _const_of(prod, ss.inputs.get("scale"))
                offset = ss.inputs.get("offset")
                if ss.inputs.get("data") is not lut.outputs[0] or scale is None or weight.name in outs \
                        or not lut.outputs[0].type.dt.is_float or lut.outputs[0].type != weight.type:
                    continue
                if offset is not None and (_const_of(prod, offset) is None or np.any(_const_of(prod, offset))):
                    continue
                layers = readers.get(weight.name, [])
                if not layers or any(r.op_type not in _LAYERS or id(r) not in here for r in layers):
                    continue
                axes = {_weight_axis(r, weight, prod) for r in layers}
                if len(axes) != 1 or None in axes:
                    continue
                axis = axes.pop()
                if any(d != 1 for i, d in enumerate(np.shape(scale)) if i != axis):
                    continue
                if not all(_broadcasts(r, scale, weight, prod) for r in layers):
                    continue
                sites.append(f"{fn.name}: the per-channel scale {ss.name!r} of LUT {lut.name!r} could move "
                             f"behind {', '.join(repr(r.name) for r in layers)} and was not")
    return sites


def _broadcasts(reader, scale, weight, prod) -> bool:
    """The scale, laid along the reader's output channels, keeps the reader's output shape."""
    out = tuple(reader.outputs[0].shape)
    if reader.op_type == "matmul":
        transposed = bool(_const_of(prod, reader.inputs["transpose_y"])) if reader.inputs.get("y") is weight \
            and reader.inputs.get("transpose_y") is not None else False
        if reader.inputs.get("x") is weight and reader.inputs.get("transpose_x") is not None:
            transposed = bool(_const_of(prod, reader.inputs["transpose_x"]))
        factor = np.swapaxes(scale, -1, -2) if transposed else np.asarray(scale)
        fshape = factor.shape
    elif reader.op_type == "linear":
        fshape = tuple(np.shape(scale))[::-1]  # [out, 1] -> [1, out]: along the output's last axis
    else:
        fshape = (1, int(np.size(scale))) + (1,) * max(len(out) - 2, 0)
    try:
        return tuple(np.broadcast_shapes(out, fshape)) == out and all(isinstance(d, int) for d in out)
    except ValueError:
        return False


_SCALED = {"quantize": "scale", "dequantize": "scale", "constexpr_affine_dequantize": "scale",
           "constexpr_blockwise_shift_scale": "scale", "constexpr_sparse_blockwise_shift_scale": "scale"}


def _bad_scales(program: Program) -> dict:
    """{(function, op name): (offending value, why)} for const scales that are not finite and > 0."""
    found = {}
    for fn in program.functions.values():
        prod = _producers(fn)
        for op in fn.block.walk():
            slot = _SCALED.get(op.op_type)
            s = None if slot is None else _const_of(prod, op.inputs.get(slot))
            if s is None or np.asarray(s).dtype.kind != "f":
                continue
            s = np.asarray(s, np.float64)
            with np.errstate(invalid="ignore"):
                bad = ~np.isfinite(s) | ~(s > 0)
            if bad.any():
                value = float(s.reshape(-1)[np.flatnonzero(bad)[0]])
                found[(fn.name, op.name)] = (repr(value), f"{op.op_type} {op.name!r} has scale {value!r}")
    return found


def no_new_bad_scales(after: Program, before: Program) -> list:
    """A step introduces no quantization scale that is not finite and > 0 (inf from an fp16
    overflow, 0 from an underflow or an empty range): one its input had already is not its own."""
    old = _bad_scales(before)
    inherited = {value for value, _ in old.values()}  # carried over, maybe into a new op
    return [f"{fn}: {why}" for (fn, name), (value, why) in _bad_scales(after).items()
            if (fn, name) not in old and value not in inherited]
