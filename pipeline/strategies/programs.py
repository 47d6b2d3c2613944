"""Whole programs built with the IR builder: the patterns each quantization pass matches.

    from hypothesis import given
    from pipeline.strategies import quantization_programs, pattern_programs

    @given(quantization_programs())          # any pattern below
    def test_pass(prog): ...

    @given(pattern_programs("quantized_binary"))   # one pattern
    def test_one(prog): ...

    from pipeline.strategies.programs import example_program
    prog = example_program("const_dequantize", seed=3)   # deterministic, for harnesses

Every generator varies what the pass it targets decides on: shapes and ranks, the
quantized axis (positive or negative), int8 / uint8 data, fp16 / fp32 scales, scalar or
per-axis scales, absent / zero / +-128 / other zero points, the opset (iOS16/17/18 where
the pass cares) and near misses the pass must leave alone (parameters that differ,
extra readers, block outputs). Every program is valid; most match their pass and some
deliberately do not (a stage must leave those unchanged).

PATTERNS maps a pattern name to (generator, the stage it is aimed at).
"""
from __future__ import annotations

import numpy as np

from ir.builder import Builder, TensorSpec
from ir.core import Program
from pipeline.strategies.choices import example_of, integers, normal, rng_of, strategy_of
from pipeline.strategies.inputs import FLOAT_BOUND

FLOAT_DTYPES = {"fp32": np.float32, "fp16": np.float16}
INT_DTYPES = {"int8": np.int8, "uint8": np.uint8}
OPSETS = ("iOS16", "iOS17", "iOS18")


# ---- small choices ------------------------------------------------------------------------

def _shape(c, rank_lo=1, rank_hi=3, dim_hi=5) -> tuple:
    shape = tuple(c.integer(1, dim_hi) for _ in range(c.integer(rank_lo, rank_hi)))
    c.tag(f"rank:{len(shape)}")
    return shape


def _opset(c) -> str:
    opset = c.pick(OPSETS)
    c.tag(f"opset:{opset}")
    return opset


def _scales(c, n, fdt, ordinary=False):
    """n positive scales (n=None: a scalar): powers of two (exact products) or arbitrary
    (ordinary: only arbitrary ones in [0.01, 1), never exactly 1 nor extreme)."""
    shape = () if n is None else (n,)
    if ordinary:
        return rng_of(c).uniform(0.01, 1.0, shape).astype(fdt)
    if c.integer(0, 7) == 0:  # extremes: ratios of two scales past fp16's range
        c.tag("scales:extreme")
        lo = -14 if fdt == np.float16 else -24
        s = (2.0 ** integers(c, shape, lo, 10, np.int32)).astype(fdt)
    elif c.boolean():
        s = (2.0 ** integers(c, shape, -6, 2, np.int32)).astype(fdt)
    else:
        s = rng_of(c).uniform(0.01, 1.0, shape).astype(fdt)
    if float(np.max(s)) * 128 < FLOAT_BOUND:
        c.tag("scales:saturating")  # generated float inputs reach past the 8-bit codes
    return s


def _zero_point(c, idt: str, n, kind=None):
    """A zero point of kind none / zero / flip (-128 int8, 128 uint8) / random (n=None: scalar).

    A random one is sometimes one off the flip point (must not be taken for it) and, per
    axis, sometimes partly zero (some channels 0, others not: must not be taken for 0)."""
    kind = kind or c.pick(("none", "zero", "flip", "random"))
    if kind == "random":
        kind = c.pick(("random", "random", "near_flip") + (("partly_zero",) if n is not None and n > 1 else ()))
    c.tag(f"zp:{kind}")
    c.tag(f"zp:{kind}:{idt}:{'tensor' if n is None else 'axis'}")
    if kind == "none":
        return None
    np_dt = INT_DTYPES[idt]
    shape = () if n is None else (n,)
    if kind == "zero":
        return np.zeros(shape, np_dt)
    if kind == "flip":
        return np.full(shape, -128 if idt == "int8" else 128, np_dt)
    if kind == "near_flip":
        return np.full(shape, -127 if idt == "int8" else 127, np_dt)
    lo, hi = (-20, 20) if idt == "int8" else (100, 150)
    zp = integers(c, shape, lo, hi, np_dt)
    if kind == "partly_zero":
        zp[0] = 0
        zp[1:][zp[1:] == 0] = 1  # at least one zero and one nonzero channel
    return zp


def _zp_class(zp) -> str:
    """none / zero / 128 / -128 / 127 / -127 / other (per-axis: only when all elements agree)."""
    if zp is None:
        return "none"
    values = set(np.asarray(zp).reshape(-1).tolist())
    if len(values) != 1:
        return "other"
    v = values.pop()
    return "zero" if v == 0 else (str(v) if abs(v) in (127, 128) else "other")


def _const_data(c, shape, idt: str, lo=None, hi=None):
    """Constant integer data in [lo, hi] (the dtype's range by default); sometimes holding
    both ends of the range (values a shifted or narrowed copy must still represent)."""
    info = np.iinfo(INT_DTYPES[idt])
    lo, hi = (info.min if lo is None else lo), (info.max if hi is None else hi)
    data = integers(c, shape, lo, hi, INT_DTYPES[idt])
    if data.size >= 2 and c.boolean():
        c.tag("data:range_ends")
        flat = data.reshape(-1)
        flat[0], flat[-1] = lo, hi
    return data


def _qparams(c, shape, fdt, idt, per_axis_ok=True, zp_kind=None, ordinary=False) -> dict:
    """scale / zero_point / axis for a (de)quantize of a tensor of `shape`."""
    if per_axis_ok and shape and c.boolean():
        axis = c.integer(-len(shape), len(shape) - 1)
        n = shape[axis]
        return {"scale": _scales(c, n, fdt, ordinary), "zero_point": _zero_point(c, idt, n, zp_kind), "axis": axis}
    return {"scale": _scales(c, None, fdt, ordinary), "zero_point": _zero_point(c, idt, None, zp_kind), "axis": None}


def _reshaped(c, shape) -> list:
    n = int(np.prod(shape))
    return list(c.pick(([n], [1, n], list(reversed(shape)), [n, 1])))


def _program(b: Builder, outputs, opset: str = "iOS18") -> Program:
    return Program.make([b.function("main", outputs, opset)])


# ---- int_op_canonicalization --------------------------------------------------------------

def quantized_reshape(c) -> Program:
    """q -> dequantize -> reshape -> quantize (same per-tensor parameters, so exact)."""
    idt, fname = c.pick(tuple(INT_DTYPES)), c.pick(tuple(FLOAT_DTYPES))
    shape = _shape(c, 1, 3)
    b = Builder()
    x = b.input("x", TensorSpec(shape, idt))
    p = _qparams(c, shape, FLOAT_DTYPES[fname], idt, per_axis_ok=False)
    dq = b.dequantize(input=x, **p, name="dq")
    r = b.reshape(x=dq, shape=_reshaped(c, shape), name="reshape")
    out_dt = idt if c.integer(0, 4) else c.pick(tuple(INT_DTYPES))  # sometimes re-quantized to the other type
    zp = p["zero_point"] if out_dt == idt else None
    q = b.quantize(input=r, scale=p["scale"], zero_point=zp, output_dtype=out_dt, name="q")
    c.tag("out:same_type" if out_dt == idt else "out:other_type")
    other = c.boolean()
    if other:
        c.tag("dequantize:other_reader")
    outs = [q, b.relu(x=dq, name="other_reader")] if other else [q]
    return _program(b, outs, _opset(c))


# ---- nullify_redundant_quantization_zero_point --------------------------------------------

def zero_point_round_trip(c) -> Program:
    """x -> quantize(zp) -> dequantize(zp') with zero / +-128 / other zero points."""
    idt, fname = c.pick(tuple(INT_DTYPES)), c.pick(tuple(FLOAT_DTYPES))
    fdt = FLOAT_DTYPES[fname]
    shape = _shape(c, 1, 3)
    b = Builder()
    x = b.input("x", TensorSpec(shape, fname))
    p = _qparams(c, shape, fdt, idt, zp_kind=c.pick(("zero", "flip", "flip", "random", "none")))
    if c.boolean():  # codes clipped at both ends for generated inputs: the clip window matters
        p["scale"] = np.full(np.shape(p["scale"]), 2.0 ** -c.integer(6, 8), fdt)
        c.tag("saturates")
        c.tag(f"saturates:{idt}:{_zp_class(p['zero_point'])}")
    q = b.quantize(input=x, output_dtype=idt, **p, name="q")
    same = c.integer(0, 3) != 0
    c.tag("zp:same_both" if same else "zp:differs")
    dq_p = dict(p) if same else {**p, "zero_point": _zero_point(c, idt, None if p["axis"] is None
                                                               else shape[p["axis"]], "random")}
    dq = b.dequantize(input=q, **dq_p, name="dq")
    q_out = c.integer(0, 4) == 0
    if q_out:
        c.tag("quantized:block_output")
    outs = [dq, q] if q_out else [dq]  # the quantized value as a block output too
    return _program(b, outs)


def const_dequantize_flip(c) -> Program:
    """const int data -> dequantize(zp = +-128 or 0) -> add to a float input."""
    idt, fname = c.pick(tuple(INT_DTYPES)), c.pick(tuple(FLOAT_DTYPES))
    shape = _shape(c, 1, 3)
    b = Builder()
    x = b.input("x", TensorSpec(shape, fname))
    data = b.const(_const_data(c, shape, idt), name="data")
    p = _qparams(c, shape, FLOAT_DTYPES[fname], idt, zp_kind=c.pick(("flip", "flip", "zero", "random")))
    w = b.dequantize(input=data, **p, name="w")
    y = b.add(x=x, y=w, name="y")
    shared = c.integer(0, 4) == 0
    if shared:
        c.tag("data:other_reader")
    outs = [y, b.relu(x=b.cast(x=data, dtype="fp32"), name="data_reader")] if shared else [y]
    return _program(b, outs)


# ---- dequantize_quantize_pair_elimination -------------------------------------------------

def dequantize_quantize_pair(c) -> Program:
    """q -> dequantize -> quantize (equal or slightly different parameters) -> dequantize."""
    idt, fname = c.pick(tuple(INT_DTYPES)), c.pick(tuple(FLOAT_DTYPES))
    fdt = FLOAT_DTYPES[fname]
    shape = _shape(c, 1, 3)
    b = Builder()
    x = b.input("x", TensorSpec(shape, idt))
    p = _qparams(c, shape, fdt, idt, zp_kind=c.pick(("none", "zero", "random")))
    dq = b.dequantize(input=x, **p, name="dq1")
    q_out = c.integer(0, 5) == 0  # near miss: the quantize is a block output, the pair otherwise cancels
    differs = "nothing" if q_out else c.pick(("nothing", "nothing", "nothing", "scale", "zero_point", "dtype"))
    if differs == "dtype" and p["zero_point"] is not None:
        differs = "nothing"  # a zero point has the quantized dtype: only a pair without one can differ
    c.tag(f"pair_differs:{differs}")
    out_dt = idt
    p2 = p
    if differs == "scale":
        p2 = {**p, "scale": (np.asarray(p["scale"]) * fdt(2)).astype(fdt)}
    elif differs == "zero_point":
        n = None if p["axis"] is None else shape[p["axis"]]
        zp = p["zero_point"] if p["zero_point"] is not None else np.zeros(() if n is None else (n,), INT_DTYPES[idt])
        p2 = {**p, "zero_point": (zp.astype(np.int16) + 1).clip(np.iinfo(INT_DTYPES[idt]).min,
                                                                  np.iinfo(INT_DTYPES[idt]).max - 1).astype(zp.dtype)}
        if np.array_equal(p2["zero_point"], zp):
            p2["zero_point"] = (zp.astype(np.int16) - 1).astype(zp.dtype)
    elif differs == "dtype":
        out_dt = "uint8" if idt == "int8" else "int8"  # re-quantized to the other 8-bit type
    q = b.quantize(input=dq, output_dtype=out_dt, **p2, name="q")
    out = b.dequantize(input=q, **p2, name="dq2")
    outs = [out]
    if c.boolean():
        c.tag("dequantize:other_reader")
        outs.append(b.relu(x=dq, name="other_reader"))
    if q_out:
        c.tag("quantize:block_output")
        outs.append(q)  # the quantize is a block output: its name must stay
    return _program(b, outs)


# ---- distributive_quantized_binary_op_scale_normalization ---------------------------------

def quantized_binary(c) -> Program:
    """dequantize(x), dequantize(y) -> add | sub (-> relu) -> quantize.

    A near miss (an inner value of the chain is a block output) is otherwise a chain the
    pass rewrites (ordinary scales, a scalar s_y), so that it tests that one refusal."""
    idt_x, idt_y, idt_z = (c.pick(tuple(INT_DTYPES)) for _ in range(3))
    fname = c.pick(tuple(FLOAT_DTYPES))
    fdt = FLOAT_DTYPES[fname]
    shape = _shape(c, 1, 3)
    near_miss = c.integer(0, 4) == 0
    b = Builder()
    x = b.input("x", TensorSpec(shape, idt_x))
    y = b.input("y", TensorSpec(shape, idt_y))
    ratio = "any" if near_miss else c.pick(("any", "any", "any", "past_fp16", "one"))
    c.tag(f"scales:{ratio}:{fname}")
    px = _qparams(c, shape, fdt, idt_x, zp_kind=c.pick(("none", "random", "zero")), ordinary=near_miss)
    py = _qparams(c, shape, fdt, idt_y, zp_kind=c.pick(("none", "random", "zero")), ordinary=near_miss,
                  per_axis_ok=ratio == "any" and not near_miss)
    pz = _qparams(c, shape, fdt, idt_z, per_axis_ok=False, zp_kind=c.pick(("none", "random")), ordinary=near_miss)
    if ratio == "past_fp16":
        # s_x / s_y beyond fp16's largest finite value (2**16 * (1 - 2**-11)): dividing by s_y must
        # be refused in fp16 (the quotient would be inf), dividing by s_x is still fine
        big, tiny = 2.0 ** c.integer(6, 10), 2.0 ** -c.integer(11, 13)
        px["scale"] = np.full(np.shape(px["scale"]), big, fdt)
        py["scale"] = np.asarray(tiny, fdt)
        pz["scale"] = np.asarray(big * 2.0 ** c.integer(-3, 3), fdt)
    elif ratio == "one":
        py = {**py, "scale": np.ones(np.shape(py["scale"]), fdt)}  # already normalized: left alone
    kind = c.pick(("add", "sub"))
    c.tag(f"op:{kind}")
    z = getattr(b, kind)(x=b.dequantize(input=x, **px, name="dx"),
                         y=b.dequantize(input=y, **py, name="dy"), name="binop")
    if c.boolean():
        c.tag("relu")
        z = b.relu(x=z, name="relu")
    outs = [b.quantize(input=z, output_dtype=idt_z, **pz, name="z")]
    if near_miss:
        c.tag("chain:inner_block_output")
        outs.append(z)  # an inner value of the chain is a block output: it must not change
    return _program(b, outs)


# ---- dequantize_to_constexpr --------------------------------------------------------------

def const_dequantize(c) -> Program:
    """const int data -> dequantize (per tensor / per axis, zero point or not) -> add; any opset."""
    idt, fname = c.pick(tuple(INT_DTYPES)), c.pick(tuple(FLOAT_DTYPES))
    shape = _shape(c, 1, 3)
    b = Builder()
    x = b.input("x", TensorSpec(shape, fname))
    info = np.iinfo(INT_DTYPES[idt])
    small = c.boolean()  # data that fits in 4 bits may be narrowed to int4 / uint4 on iOS18
    lo, hi = ((-8, 7) if idt == "int8" else (0, 15)) if small else (info.min, info.max)
    c.tag("data:fits_4_bits" if small else "data:8_bits")
    data = b.const(_const_data(c, shape, idt, lo, hi), name="data")
    past = small and c.integer(0, 3) == 0  # a zero point past 4 bits: the data alone fits, with it not
    p = _qparams(c, shape, FLOAT_DTYPES[fname], idt, zp_kind="none" if past else c.pick(("none", "zero", "random")))
    if past:
        c.tag("zp:past_4_bits")
        n = () if p["axis"] is None else (shape[p["axis"]],)
        p["zero_point"] = np.full(n, hi + 1 if idt == "uint8" else lo - 1, INT_DTYPES[idt])
    elif p["zero_point"] is not None and small:
        p["zero_point"] = np.clip(p["zero_point"], lo, hi).astype(INT_DTYPES[idt])
    w = b.dequantize(input=data, **p, name="w")
    outs = [b.add(x=x, y=w, name="y")]
    if c.integer(0, 4) == 0:
        c.tag("dequantized:block_output")
        outs.append(w)  # the dequantized value is a block output: its name must stay
    return _program(b, outs, _opset(c))


# ---- merge_affine_dequantize_with_consecutive_ops -----------------------------------------

_LAYOUT = ("transpose", "reshape", "expand_dims", "squeeze")


def _layout_step(c, b, v, i):
    kind = c.pick(_LAYOUT)
    c.tag(f"layout:{kind}")
    shape = list(v.shape)
    if kind == "transpose":
        perm = [int(p) for p in rng_of(c).permutation(len(shape))]
        if c.boolean():
            perm = [p - len(shape) for p in perm]  # negative permutation entries
        return b.transpose(x=v, perm=perm, name=f"layout{i}")
    if kind == "reshape":
        return b.reshape(x=v, shape=_reshaped(c, shape), name=f"layout{i}")
    if kind == "expand_dims":
        return b.expand_dims(x=v, axes=[c.integer(0, len(shape))], name=f"layout{i}")
    ones = [a for a, d in enumerate(shape) if d == 1]
    if not ones or len(shape) == 1:
        return b.expand_dims(x=v, axes=[0], name=f"layout{i}")
    return b.squeeze(x=v, axes=[c.pick(ones)], name=f"layout{i}")


def affine_dequantize_layout(c) -> Program:
    """constexpr_affine_dequantize (per tensor or per channel) -> 1-3 layout ops -> add."""
    idt, fname = c.pick(tuple(INT_DTYPES)), c.pick(tuple(FLOAT_DTYPES))
    fdt = FLOAT_DTYPES[fname]
    shape = _shape(c, 2, 3)
    b = Builder()
    info = np.iinfo(INT_DTYPES[idt])
    data = integers(c, shape, info.min, info.max, INT_DTYPES[idt])
    if c.boolean():
        axis = c.integer(0, len(shape) - 1)
        n = shape[axis]
        # a scalar zero point with per-channel scales is per channel too (and may not be reshaped)
        scale, zp = _scales(c, n, fdt), _zero_point(c, idt, c.pick((n, None)), c.pick(("zero", "random")))
        c.tag("scale:per_channel")
    else:
        axis, scale, zp = c.integer(0, len(shape) - 1), _scales(c, None, fdt), _zero_point(c, idt, None, "random")
    v = b.constexpr_affine_dequantize(quantized_data=data, zero_point=zp, scale=scale, axis=np.int32(axis), name="w")
    for i in range(c.integer(1, 3)):
        v = _layout_step(c, b, v, i)
    x = b.input("x", TensorSpec(tuple(v.shape), fname))
    outs = [b.add(x=x, y=v, name="y")]
    return _program(b, outs, _opset(c))


# ---- reorder_lut_per_channel_scale --------------------------------------------------------

def _lut_dense(c, b, shape, fdt, nbits=None, name="w"):
    nbits = nbits or c.pick((1, 2, 4))
    idx = b.const(integers(c, shape, 0, 2 ** nbits - 1, np.uint8), dtype=f"uint{nbits}", name=f"{name}_idx")
    lut = np.sort(normal(c, (1,) * len(shape) + (2 ** nbits, 1), fdt), axis=-2)
    return b.constexpr_lut_to_dense(indices=idx, lut=lut, name=f"{name}_palettized")


def lut_per_channel_scale(c) -> Program:
    """LUT -> per-output-channel shift-scale -> linear | matmul | conv (optional const bias)."""
    fname = c.pick(tuple(FLOAT_DTYPES))
    fdt = FLOAT_DTYPES[fname]
    layer = c.pick(("linear", "matmul", "conv"))
    c.tag(f"layer:{layer}")
    n_out, n_in = c.integer(1, 4), c.integer(1, 4)
    b = Builder()
    if layer == "linear":
        wshape, axis, xshape = (n_out, n_in), 0, (c.integer(1, 3), n_in)
    elif layer == "conv":
        k = c.integer(1, 3)
        wshape, axis, xshape = (n_out, n_in, k), 0, (1, n_in, k + c.integer(0, 3))
    else:
        ty = c.boolean()
        batch = n_out if c.boolean() else c.integer(1, 3)
        c.tag(f"matmul:transpose_y:{ty}")
        if batch == n_out > 1:  # a square output: a per-channel factor on the wrong axis still broadcasts
            c.tag("matmul:square_output")
            c.tag(f"matmul:square_output:transpose_y:{ty}")
        wshape, axis, xshape = ((n_out, n_in), 0, (batch, n_in)) if ty else ((n_in, n_out), 1, (batch, n_in))
    x = b.input("x", TensorSpec(xshape, fname))
    dense = _lut_dense(c, b, wshape, fdt)
    sshape = [1] * len(wshape)
    scaled_axis = axis if c.integer(0, 4) else 1 - axis  # sometimes along the input axis (must stay)
    c.tag("scale:output_axis" if scaled_axis == axis else "scale:input_axis")
    c.tag(f"layer:{layer}:{'output_axis' if scaled_axis == axis else 'input_axis'}")
    sshape[scaled_axis] = wshape[scaled_axis]
    scale = rng_of(c).uniform(0.1, 2.0, sshape).astype(fdt)
    offset = c.pick((None, None, "zero", "nonzero"))  # a nonzero offset must stay where it is
    c.tag(f"offset:{offset}")
    if offset is not None:
        offset = np.zeros(sshape, fdt) if offset == "zero" else rng_of(c).uniform(-1, 1, sshape).astype(fdt)
    w = b.constexpr_blockwise_shift_scale(data=dense, scale=scale, offset=offset, name="w")
    bias = normal(c, (n_out,), fdt) if layer != "matmul" and c.boolean() else None
    if bias is not None:
        c.tag("bias")
    if layer == "linear":
        y = b.linear(x=x, weight=w, bias=bias, name="layer")
    elif layer == "conv":
        y = b.conv(x=x, weight=w, bias=bias, name="layer")
    else:
        y = b.matmul(x=x, y=w, transpose_y=bool(axis == 0), name="layer")
    return _program(b, [b.relu(x=y, name="out")])


# ---- canonicalize_quantized_lut_pattern ---------------------------------------------------

def quantized_lut(c) -> Program:
    """int8 LUT -> lut_to_dense -> shift-scale (per tensor or per channel, offset or not) -> add."""
    fname = c.pick(tuple(FLOAT_DTYPES))
    fdt = FLOAT_DTYPES[fname]
    shape = _shape(c, 1, 3, 4)
    if c.boolean():
        shape = (c.pick((4, 6)),) + shape[1:]  # room for 2 LUTs under finer (per channel) scales
    nbits = c.pick((1, 2, 4))
    c.tag(f"nbits:{nbits}")
    b = Builder()
    idx = b.const(integers(c, shape, 0, 2 ** nbits - 1, np.uint8), dtype=f"uint{nbits}", name="idx")
    lut_blocks = [1] * len(shape)
    if c.boolean():  # several LUTs along axis 0
        lut_blocks[0] = c.pick([d for d in (2, 2, shape[0]) if shape[0] % d == 0] or [1])
    c.tag("luts:several" if lut_blocks[0] > 1 else "luts:one")
    lut = integers(c, tuple(lut_blocks) + (2 ** nbits, 1), -128, 127, np.int8)
    dense = b.constexpr_lut_to_dense(indices=idx, lut=lut, name="lut")
    sshape = [1] * len(shape)
    if c.boolean():
        sshape[0] = shape[0]  # per output channel
    c.tag("scale:per_channel" if sshape[0] > 1 else "scale:per_tensor")
    scale = rng_of(c).uniform(0.01, 0.5, sshape).astype(fdt)
    offset = integers(c, sshape, -10, 10, np.int8) if c.boolean() else None
    c.tag("offset" if offset is not None else "offset:none")
    w = b.constexpr_blockwise_shift_scale(data=dense, scale=scale, offset=offset, name="w")
    x = b.input("x", TensorSpec(shape, fname))
    return _program(b, [b.add(x=x, y=w, name="y")])


# ---- the table ----------------------------------------------------------------------------

PATTERNS = {
    "quantized_reshape": (quantized_reshape, "int_op_canonicalization"),
    "zero_point_round_trip": (zero_point_round_trip, "nullify_redundant_quantization_zero_point"),
    "const_dequantize_flip": (const_dequantize_flip, "nullify_redundant_quantization_zero_point"),
    "dequantize_quantize_pair": (dequantize_quantize_pair, "dequantize_quantize_pair_elimination"),
    "quantized_binary": (quantized_binary, "distributive_quantized_binary_op_scale_normalization"),
    "const_dequantize": (const_dequantize, "dequantize_to_constexpr"),
    "affine_dequantize_layout": (affine_dequantize_layout, "merge_affine_dequantize_with_consecutive_ops"),
    "lut_per_channel_scale": (lut_per_channel_scale, "reorder_lut_per_channel_scale"),
    "quantized_lut": (quantized_lut, "canonicalize_quantized_lut_pattern"),
}


def pattern_programs(name: str):
    """Strategy: programs of one pattern of PATTERNS."""
    return strategy_of(PATTERNS[name][0])


def quantization_programs():
    """Strategy: a program of any pattern of PATTERNS."""
    from hypothesis import strategies as st

    return st.one_of([strategy_of(gen) for gen, _ in PATTERNS.values()])


def example_program(name: str, seed: int) -> Program:
    """The deterministic program of pattern `name` for `seed` (same in every process)."""
    return example_of(PATTERNS[name][0], seed)


__all__ = ["PATTERNS", "pattern_programs", "quantization_programs", "example_program"]
