"""Programs the contract tests run every preset on: small, real-shaped, quantized."""
import numpy as np

from ir.builder import TensorSpec, program

F32, F16 = np.float32, np.float16


def mlp(dtype=F32, seed=0):
    """Two linear layers; the second weight has fp16 values when dtype is fp16."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((64, 96)).astype(F32)
    w2 = (rng.standard_normal((48, 64)) * 0.1).astype(dtype)

    @program(inputs={"x": TensorSpec((2, 96), "fp32")})
    def net(b, x):
        h = b.relu(x=b.linear(x=x, weight=b.const(w1, name="w1"), bias=b.const(np.zeros(64, F32), name="b1")))
        if dtype == F16:
            h = b.cast(x=h, dtype="fp16")
        return b.linear(x=h, weight=b.const(w2, name="w2"), name="y")
    return net


def conv_net(seed=1):
    """A 3x3 conv of real shape [64, 32, 3, 3], relu, a 1x1 conv [16, 64, 1, 1] (below the size rule)."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((64, 32, 3, 3)) * 0.05).astype(F32)
    w.flat[::13] = 0.0  # some exact zeros, as pruned models have
    p = (rng.standard_normal((16, 64, 1, 1)) * 0.1).astype(F32)

    @program(inputs={"x": TensorSpec((1, 32, 6, 6), "fp32")})
    def net(b, x):
        h = b.relu(x=b.conv(x=x, weight=b.const(w, name="conv1.weight"), pad_type="same"))
        return b.conv(x=h, weight=b.const(p, name="conv2.weight"), name="y")
    return net


def attention(seed=2):
    """One fp16 attention head: q, k, v and output projections of [64, 64], softmax(q k^T) v."""
    rng = np.random.default_rng(seed)
    ws = {n: (rng.standard_normal((64, 64)) / 8).astype(F16) for n in ("wq", "wk", "wv", "wo")}

    @program(inputs={"x": TensorSpec((4, 64), "fp16")})
    def net(b, x):
        q, k, v = (b.linear(x=x, weight=b.const(ws[n], name=n)) for n in ("wq", "wk", "wv"))
        att = b.softmax(x=b.matmul(x=q, y=k, transpose_y=True), axis=-1)
        return b.linear(x=b.matmul(x=att, y=v), weight=b.const(ws["wo"], name="wo"), name="y")
    return net


def odd_sized(seed=3):
    """A [45, 49] weight (an odd element count) holding values at +-1e-3 and tiny ones."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((45, 49)).astype(F32)
    w.flat[::3] *= 1e-4
    w.flat[1::7] = F32(1e-3)
    w.flat[2::11] = -F32(1e-3)

    @program(inputs={"x": TensorSpec((2, 49), "fp32")})
    def net(b, x):
        return b.linear(x=x, weight=b.const(w, name="w3"), name="y")
    return net


def quantized_add(zero_point=3, scales=(0.03, 0.07, 0.05)):
    """An ordinary quantized add: two quantized inputs, add, requantize, dequantize."""
    sx, sy, sz = (F32(s) for s in scales)

    @program(inputs={"x": TensorSpec((4, 8), "fp32"), "y": TensorSpec((4, 8), "fp32")})
    def net(b, x, y):
        zp = np.int8(zero_point)
        qx = b.quantize(input=x, scale=sx, zero_point=zp, output_dtype="int8")
        qy = b.quantize(input=y, scale=sy, output_dtype="int8")
        s = b.add(x=b.dequantize(input=qx, scale=sx, zero_point=zp), y=b.dequantize(input=qy, scale=sy))
        z = b.quantize(input=s, scale=sz, output_dtype="int8", name="z")
        return b.dequantize(input=z, scale=sz, name="out")
    return net


WEIGHT_PROGRAMS = {"mlp": mlp, "mlp_fp16": lambda: mlp(F16), "conv": conv_net, "attention": attention,
                   "odd": odd_sized}
