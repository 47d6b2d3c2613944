"""Small programs for the AWQ tests: each foldable pattern (a norm's output read by several
weights, a mul + add by constant vectors, the attention V -> output path, a linear chain through
a relu and layout ops) and the patterns that must be refused, with random sizes and weights;
inputs drawn with a few loud channels (what AWQ scales for)."""
from __future__ import annotations

import numpy as np

from ir.builder import TensorSpec, program


def _w(rng, *shape, scale=0.3):
    return (rng.normal(size=shape) * scale).astype(np.float32)


def prenorm(seed=0, c=8, o=6, t=5):
    """x [1, t, c] -> layer_norm -> query (linear), key (matmul), value (matmul, transpose_y):
    one shared-input group of three readers."""
    rng = np.random.default_rng(seed)
    gamma = (rng.lognormal(0, 1, c)).astype(np.float32)

    @program(inputs={"x": TensorSpec((1, t, c), "fp32")})
    def net(b, x):
        h = b.layer_norm(x=x, gamma=b.const(gamma, name="gamma"), beta=b.const(_w(rng, c), name="beta"),
                         axes=[-1], epsilon=1e-5)
        q = b.linear(x=h, weight=b.const(_w(rng, o, c), name="wq"), bias=b.const(_w(rng, o), name="bq"))
        k = b.matmul(x=h, y=b.const(_w(rng, c, o), name="wk"))
        v = b.matmul(x=h, y=b.const(_w(rng, o, c), name="wv"), transpose_y=True)
        return q, b.add(x=k, y=v)

    return net


def mul_add(seed=0, c=8, o=6, t=5):
    """x -> mul by a constant vector -> add a constant vector -> matmul."""
    rng = np.random.default_rng(seed)

    @program(inputs={"x": TensorSpec((t, c), "fp32")})
    def net(b, x):
        h = b.mul(x=x, y=b.const(rng.lognormal(0, 1, c).astype(np.float32), name="g"))
        h = b.add(x=b.const(_w(rng, c), name="shift"), y=h)
        return b.matmul(x=h, y=b.const(_w(rng, c, o), name="w"))

    return net


def attention(seed=0, heads=2, d=4, t=5):
    """The V -> output projection path of an attention layer (P from a second input)."""
    rng = np.random.default_rng(seed)
    e = heads * d

    @program(inputs={"x": TensorSpec((1, t, e), "fp32"), "p": TensorSpec((1, heads, t, t), "fp32")})
    def net(b, x, p):
        v = b.add(x=b.matmul(x=x, y=b.const(_w(rng, e, e), name="wv")), y=b.const(_w(rng, e), name="bv"))
        v = b.transpose(x=b.reshape(x=v, shape=[1, t, heads, d]), perm=[0, 2, 1, 3])
        a = b.matmul(x=b.softmax(x=p, axis=-1), y=v)
        a = b.reshape(x=b.transpose(x=a, perm=[0, 2, 1, 3]), shape=[1, t, e])
        return b.add(x=b.matmul(x=a, y=b.const(_w(rng, e, e), name="wo")), y=b.const(_w(rng, e), name="bo"))

    return net


def chain(seed=0, c=8, h=6, o=4, t=5):
    """linear -> relu -> real_div by a scalar -> expand_dims / squeeze -> linear (hidden
    channel 0 loud: its row of w1 is large)."""
    rng = np.random.default_rng(seed)
    w1 = _w(rng, h, c)
    w1[0] *= 30

    @program(inputs={"x": TensorSpec((t, c), "fp32")})
    def net(b, x):
        y = b.linear(x=x, weight=b.const(w1, name="w1"), bias=b.const(_w(rng, h), name="b1"))
        y = b.real_div(x=b.relu(x=y), y=np.float32(2.0))
        y = b.squeeze(x=b.expand_dims(x=y, axes=[0]), axes=[0])
        return b.linear(x=y, weight=b.const(_w(rng, o, h), name="w2"))

    return net


FOLDABLE = {"prenorm": prenorm, "mul_add": mul_add, "attention": attention, "chain": chain}


# ---- refused -----------------------------------------------------------------------------------

def residual(seed=0, c=8, t=5):
    """A post-norm block: the norm's output is also added back (a residual): no fold."""
    rng = np.random.default_rng(seed)

    @program(inputs={"x": TensorSpec((t, c), "fp32")})
    def net(b, x):
        h = b.layer_norm(x=x, gamma=b.const(rng.lognormal(0, 1, c).astype(np.float32), name="gamma"),
                         beta=b.const(_w(rng, c), name="beta"), axes=[-1])
        return b.add(x=h, y=b.linear(x=h, weight=b.const(_w(rng, c, c), name="w")))

    return net


def nonlinear(seed=0, c=8, t=5):
    """linear -> tanh -> linear: tanh(x / s) is not tanh(x) / s."""
    rng = np.random.default_rng(seed)

    @program(inputs={"x": TensorSpec((t, c), "fp32")})
    def net(b, x):
        y = b.tanh(x=b.linear(x=x, weight=b.const(_w(rng, c, c), name="w1")))
        return b.linear(x=y, weight=b.const(_w(rng, c, c), name="w2"))

    return net


def model_output(seed=0, c=8, t=5):
    """The producer's output is also a model output: it would change."""
    rng = np.random.default_rng(seed)

    @program(inputs={"x": TensorSpec((t, c), "fp32")})
    def net(b, x):
        y = b.linear(x=x, weight=b.const(_w(rng, c, c), name="w1"))
        return y, b.linear(x=y, weight=b.const(_w(rng, c, c), name="w2"))

    return net


def shared_weight(seed=0, c=8, t=5):
    """The reader's weight is read by another op too (tied weights)."""
    rng = np.random.default_rng(seed)
    w = _w(rng, c, c)

    @program(inputs={"x": TensorSpec((t, c), "fp32"), "z": TensorSpec((t, c), "fp32")})
    def net(b, x, z):
        y = b.linear(x=x, weight=b.const(_w(rng, c, c), name="w1"))
        shared = b.const(w, name="tied")
        return b.matmul(x=y, y=shared), b.matmul(x=z, y=shared)

    return net


def left_operand(seed=0, c=8, t=5):
    """The scaled tensor is the left operand of a product with another activation (Q @ K^T)."""
    rng = np.random.default_rng(seed)

    @program(inputs={"x": TensorSpec((t, c), "fp32"), "k": TensorSpec((c, t), "fp32")})
    def net(b, x, k):
        q = b.linear(x=x, weight=b.const(_w(rng, c, c), name="w1"))
        return b.matmul(x=q, y=k), b.linear(x=q, weight=b.const(_w(rng, c, c), name="w2"))

    return net


def shared_constant(seed=0, c=8, t=5):
    """A constant added on the path is added elsewhere too: dividing it would change that use."""
    rng = np.random.default_rng(seed)

    @program(inputs={"x": TensorSpec((t, c), "fp32"), "z": TensorSpec((t, c), "fp32")})
    def net(b, x, z):
        shift = b.const(_w(rng, c), name="shift")
        y = b.add(x=b.linear(x=x, weight=b.const(_w(rng, c, c), name="w1")), y=shift)
        return b.linear(x=y, weight=b.const(_w(rng, c, c), name="w2")), b.add(x=z, y=shift)

    return net


# name -> (builder, the weight whose skip reason is checked, words the reason holds)
REFUSED = {"residual": (residual, "w", "another activation"),
           "nonlinear": (nonlinear, "w2", "tanh"),
           "model_output": (model_output, "w2", "model output"),
           "shared_weight": (shared_weight, "tied", "also read elsewhere"),
           "left_operand": (left_operand, "w2", "left operand"),
           "shared_constant": (shared_constant, "w2", "'shift' is also read elsewhere")}


def inputs_for(net, rng, n=1, loud=(0, 3), gain=8.0) -> list:
    """`n` input dicts for net's main inputs: normal values, channels `loud` of the last axis x `gain`."""
    out = []
    for _ in range(n):
        feeds = {}
        for v in net.main.inputs:
            x = rng.normal(size=v.shape).astype(np.float32)
            for c in loud:
                if c < x.shape[-1]:
                    x[..., c] *= gain
            feeds[v.name] = x
        out.append(feeds)
    return out



def onnx_attention(seed=0, heads=2, d=4):
    """The V -> output path as torch exports it to ONNX: symbolic batch and sequence, the head
    split's target shape built at run time from Shape / Gather / Concat, the merge's with -1."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from ir.formats.onnx import import_onnx

    rng = np.random.default_rng(seed)
    e = heads * d
    init = [numpy_helper.from_array(a, n) for n, a in (
        ("wv", _w(rng, e, e)), ("bv", _w(rng, e)), ("wo", _w(rng, e, e)), ("bo", _w(rng, e)),
        ("i0", np.array(0, np.int64)), ("i1", np.array(1, np.int64)), ("ax0", np.array([0], np.int64)),
        ("hd", np.array([heads, d], np.int64)), ("minus1", np.array([-1], np.int64)))]
    node = helper.make_node
    nodes = [
        node("MatMul", ["x", "wv"], ["v0"]), node("Add", ["bv", "v0"], ["v1"]),
        node("Shape", ["x"], ["sh"]), node("Gather", ["sh", "i0"], ["b"]), node("Gather", ["sh", "i1"], ["t"]),
        node("Unsqueeze", ["b", "ax0"], ["b1"]), node("Unsqueeze", ["t", "ax0"], ["t1"]),
        node("Concat", ["b1", "t1", "hd"], ["split"], axis=0), node("Reshape", ["v1", "split"], ["v2"]),
        node("Transpose", ["v2"], ["v3"], perm=[0, 2, 1, 3]), node("Softmax", ["p"], ["ps"], axis=-1),
        node("MatMul", ["ps", "v3"], ["a0"]), node("Transpose", ["a0"], ["a1"], perm=[0, 2, 1, 3]),
        node("Concat", ["b1", "t1", "minus1"], ["merge"], axis=0), node("Reshape", ["a1", "merge"], ["a2"]),
        node("MatMul", ["a2", "wo"], ["o0"]), node("Add", ["bo", "o0"], ["y"])]
    graph = helper.make_graph(
        nodes, "attention",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", e]),
         helper.make_tensor_value_info("p", TensorProto.FLOAT, ["batch", heads, "seq", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", e])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return import_onnx(model)
