"""Hypothesis strategies that build random *valid* programs.

`programs()` draws a chain of steps over one fp32 input: elementwise ops with
small or large constants, layout ops (transpose, reshape, expand_dims +
squeeze), linear, quantize -> dequantize, and constexpr weights (affine
dequantize of int8 / uint8 data, iOS18 LUTs with sub-byte indices) folded in
with an add. `inputs_for(program, seed)` makes matching input arrays.

Import with `from tests.ir.programs import programs` (run pytest from the
repository root, as `python -m pytest` does).
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ir.builder import Builder
from ir.core import Program

FLOATS = st.floats(-4, 4, allow_nan=False, width=32)


def _floats(draw, shape, big_ok=True):
    size = int(np.prod(shape))
    if big_ok and size > 16:  # drawing hundreds of floats is slow: seed a generator instead
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        return rng.standard_normal(shape).astype(np.float32)
    return np.array(draw(st.lists(FLOATS, min_size=size, max_size=size)), np.float32).reshape(shape)


def _unary(draw, b, x):
    op = draw(st.sampled_from(["relu", "sigmoid", "tanh", "neg", "abs"]))
    return getattr(b, op)(x=x)


def _binary(draw, b, x):
    op = draw(st.sampled_from(["add", "sub", "mul"]))
    shape = draw(st.sampled_from([(), tuple(x.shape), tuple(x.shape[1:])]))
    return getattr(b, op)(x=x, y=b.const(_floats(draw, shape)))


def _transpose(draw, b, x):
    perm = draw(st.permutations(list(range(x.rank))))
    return b.transpose(x=x, perm=list(perm))


def _reshape(draw, b, x):
    n = int(np.prod(x.shape))
    shape = draw(st.sampled_from([[1, n], [n, 1], list(reversed(x.shape))]))
    return b.reshape(x=x, shape=shape)


def _expand_squeeze(draw, b, x):
    axis = draw(st.integers(0, x.rank))
    return b.squeeze(x=b.expand_dims(x=x, axes=[axis]), axes=[axis])


def _linear(draw, b, x):
    out = draw(st.integers(1, 5))
    w = b.const(_floats(draw, (out, x.shape[-1])), name=draw(st.sampled_from(["w", "weight", None])))
    bias = b.const(_floats(draw, (out,))) if draw(st.booleans()) else None
    return b.linear(x=x, weight=w, bias=bias)


def _quant_roundtrip(draw, b, x):
    out_dtype = draw(st.sampled_from(["int8", "uint8"]))
    scale = np.float32(draw(st.sampled_from([0.5, 0.125, 0.03125])))
    zp = np.array(draw(st.integers(-5, 5) if out_dtype == "int8" else st.integers(0, 10)),
                  np.int8 if out_dtype == "int8" else np.uint8)
    q = b.quantize(input=x, scale=scale, zero_point=zp, output_dtype=out_dtype)
    return b.dequantize(input=q, scale=scale, zero_point=zp)


def _affine_weight(draw, b, x):
    dt = draw(st.sampled_from([np.int8, np.uint8]))
    info = np.iinfo(dt)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    data = rng.integers(info.min, info.max, size=x.shape, endpoint=True).astype(dt)
    w = b.constexpr_affine_dequantize(quantized_data=data, zero_point=dt(draw(st.integers(0, 3))),
                                      scale=np.float32(0.25), axis=0)
    return b.add(x=x, y=w)


def _lut_weight(draw, b, x):
    nbits = draw(st.sampled_from([1, 2, 3, 4, 6]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    idx = b.const(rng.integers(0, 2**nbits, size=x.shape).astype(np.uint8), dtype=f"uint{nbits}")
    lut = _floats(draw, (1,) * x.rank + (2**nbits, 1))
    return b.add(x=x, y=b.constexpr_lut_to_dense(indices=idx, lut=lut))


STEPS = [_unary, _binary, _transpose, _reshape, _expand_squeeze, _linear, _quant_roundtrip,
         _affine_weight, _lut_weight]


@st.composite
def programs(draw, max_steps: int = 6) -> Program:
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=2, max_size=3)))
    b = Builder()
    x = b.input("x", _spec(shape))
    cur = x
    for _ in range(draw(st.integers(1, max_steps))):
        cur = draw(st.sampled_from(STEPS))(draw, b, cur)
    return Program.make([b.function("main", cur)])


def _spec(shape):
    from ir.builder import TensorSpec

    return TensorSpec(shape, "fp32")


def inputs_for(program: Program, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {v.name: rng.standard_normal(v.shape).astype(v.type.dt.storage)
            for v in program.main.inputs}


def sample_program() -> Program:
    """A small hand-made program touching every kind of node the IR has: a large
    and a small const, a sub-byte const, a string const, a foreign op with
    attributes, a cond with two nested blocks, and two functions."""
    from ir.builder import Builder

    b = Builder()
    x = b.input("x", _spec((1, 4)))
    w = b.const(np.arange(80, dtype=np.float32).reshape(20, 4) / 7, name="w")
    idx = b.const(np.array([[1, 2, 3, 15]], np.uint8), name="idx", dtype="uint4")
    lut = b.const(np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 1, 16, 1), name="lut")
    y = b.linear(x=b.add(x=x, y=b.constexpr_lut_to_dense(indices=idx, lut=lut)), weight=w, name="lin")
    z = b.foreign("onnx.Softmax", [y.type], x=y, attrs={"axis": -1, "mode": "fast"})
    p = b.const(True, name="p")
    r = b.cond(p, lambda c: c.relu(x=z), lambda c: c.sigmoid(x=c.mul(x=z, y=np.float32(0.5))))
    main = b.function("main", b.transpose(x=r, perm=[1, 0]))
    b2 = Builder()
    u = b2.input("u", _spec((3,)))
    other = b2.function("other", b2.mul(x=u, y=np.float16(1.5).astype(np.float32)), opset="iOS16")
    return Program.make([main, other], attrs={"source": "hand", "version": 3})
