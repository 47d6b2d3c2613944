"""ONNX models built with onnx.helper, shaped the way PyTorch's exporter writes them."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto as T, helper as h, numpy_helper as nh

RNG = np.random.default_rng(1234)


def rand(*shape, scale=0.2):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def model(nodes, inputs, outputs, inits=None, opset=17, name="g"):
    """inputs / outputs: (name, elem type, shape) triples; inits: name -> array."""
    g = h.make_graph(nodes, name, [h.make_tensor_value_info(*i) for i in inputs],
                     [h.make_tensor_value_info(*o) for o in outputs],
                     [nh.from_array(np.asarray(v), k) for k, v in (inits or {}).items()])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)], producer_name="pytorch")
    m.ir_version = 8 if opset < 21 else 10
    return m


def N(op, ins, outs, **attrs):
    return h.make_node(op, ins, outs, name=f"/{op}_{outs[0]}", **attrs)


def transformer_block(d=16, heads=2, vocab=50, ff=32, seq=None):
    """One BERT-style encoder layer plus pooler: embeddings (Gather), dynamic-shape Reshapes
    (Shape/Gather/Unsqueeze/Concat), masked attention (Equal/Expand/Where/IsNaN/And),
    LayerNormalization, erf-GELU, Gemm + Tanh pooler, GatherElements / GatherND heads."""
    dh = d // heads
    S = seq or "sequence"
    inits = {
        "embeddings.word_embeddings.weight": rand(vocab, d), "embeddings.position_embeddings.weight": rand(32, d),
        "embeddings.token_type_embeddings.weight": rand(2, d), "position_ids": np.arange(32, dtype=np.int64)[None],
        "ln0.weight": 1 + rand(d), "ln0.bias": rand(d), "ln1.weight": 1 + rand(d), "ln1.bias": rand(d),
        "onnx::MatMul_q": rand(d, d), "onnx::MatMul_k": rand(d, d), "onnx::MatMul_v": rand(d, d),
        "onnx::MatMul_o": rand(d, d), "q.bias": rand(d), "k.bias": rand(d), "v.bias": rand(d), "o.bias": rand(d),
        "onnx::MatMul_ff1": rand(d, ff), "ff1.bias": rand(ff), "onnx::MatMul_ff2": rand(ff, d), "ff2.bias": rand(d),
        "pooler.dense.weight": rand(d, d), "pooler.dense.bias": rand(d),
        "c0": np.array(0, np.int64), "c1": np.array(1, np.int64), "c0v": np.array([0], np.int64),
        "heads_dh": np.array([heads, dh], np.int64), "ctx_shape": np.array([0, 0, d], np.int64),
        "sqrt_dh": np.array(np.sqrt(dh), np.float32), "neg_inf": np.array(-np.inf, np.float32),
        "zero_f": np.array(0.0, np.float32), "sqrt2": np.array(np.sqrt(2), np.float32),
        "one_f": np.array(1.0, np.float32), "half_f": np.array(0.5, np.float32),
        "ge_idx": np.array([[0, 1], [1, 0]], np.int64), "gnd_idx": np.array([[0, 1], [0, 0]], np.int64),
    }
    n = [
        N("Shape", ["input_ids"], ["/Shape_output_0"]),
        N("Gather", ["/Shape_output_0", "c1"], ["seq_len"], axis=0),
        N("Unsqueeze", ["seq_len", "c0v"], ["seq_len_1d"]),
        N("Slice", ["position_ids", "c0v", "seq_len_1d", "c1v_axis"], ["pos_ids"]),
        N("ConstantOfShape", ["/Shape_output_0"], ["token_type_ids"],
          value=h.make_tensor("value", T.INT64, [1], [0])),
        N("Gather", ["embeddings.word_embeddings.weight", "input_ids"], ["we"]),
        N("Gather", ["embeddings.position_embeddings.weight", "pos_ids"], ["pe"]),
        N("Gather", ["embeddings.token_type_embeddings.weight", "token_type_ids"], ["te"]),
        N("Add", ["we", "pe"], ["e1"]), N("Add", ["e1", "te"], ["e2"]),
        N("LayerNormalization", ["e2", "ln0.weight", "ln0.bias"], ["x0"], axis=-1, epsilon=1e-12),
        # batch / seq for the dynamic reshape
        N("Shape", ["x0"], ["x_shape"]), N("Gather", ["x_shape", "c0"], ["b"], axis=0),
        N("Gather", ["x_shape", "c1"], ["s"], axis=0),
        N("Unsqueeze", ["b", "c0v"], ["b1"]), N("Unsqueeze", ["s", "c0v"], ["s1"]),
        N("Concat", ["b1", "s1", "heads_dh"], ["split_shape"], axis=0),
    ]
    for t in "qkv":
        n += [N("MatMul", ["x0", f"onnx::MatMul_{t}"], [f"{t}_mm"]), N("Add", [f"{t}_mm", f"{t}.bias"], [f"{t}_lin"]),
              N("Reshape", [f"{t}_lin", "split_shape"], [f"{t}_split"]),
              N("Transpose", [f"{t}_split"], [f"{t}_heads"], perm=[0, 2, 3, 1] if t == "k" else [0, 2, 1, 3])]
    n += [
        N("MatMul", ["q_heads", "k_heads"], ["scores_raw"]), N("Div", ["scores_raw", "sqrt_dh"], ["scores"]),
        # mask: [b, s] -> [b, 1, 1, s] -> Expand to the scores' shape, Where(-inf)
        N("Unsqueeze", ["attention_mask", "axes12"], ["m4"]), N("Equal", ["m4", "c0"], ["m_is0"]),
        N("Shape", ["scores"], ["scores_shape"]), N("Expand", ["m_is0", "scores_shape"], ["m_full"]),
        N("Where", ["m_full", "neg_inf", "scores"], ["masked"]),
        N("Softmax", ["masked"], ["probs_raw"], axis=-1),
        N("IsNaN", ["probs_raw"], ["nan"]), N("And", ["nan", "m_full"], ["nan_masked"]),
        N("Where", ["nan_masked", "zero_f", "probs_raw"], ["probs"]),
        N("MatMul", ["probs", "v_heads"], ["ctx_heads"]),
        N("Transpose", ["ctx_heads"], ["ctx_t"], perm=[0, 2, 1, 3]),
        N("Reshape", ["ctx_t", "ctx_shape"], ["ctx"]),
        N("MatMul", ["ctx", "onnx::MatMul_o"], ["o_mm"]), N("Add", ["o_mm", "o.bias"], ["o_lin"]),
        N("Add", ["o_lin", "x0"], ["res1"]),
        N("LayerNormalization", ["res1", "ln1.weight", "ln1.bias"], ["x1"], axis=-1, epsilon=1e-12),
        N("MatMul", ["x1", "onnx::MatMul_ff1"], ["f1_mm"]), N("Add", ["f1_mm", "ff1.bias"], ["f1"]),
        N("Div", ["f1", "sqrt2"], ["g_div"]), N("Erf", ["g_div"], ["g_erf"]), N("Add", ["g_erf", "one_f"], ["g_add"]),
        N("Mul", ["f1", "g_add"], ["g_mul"]), N("Mul", ["g_mul", "half_f"], ["gelu"]),
        N("MatMul", ["gelu", "onnx::MatMul_ff2"], ["f2_mm"]), N("Add", ["f2_mm", "ff2.bias"], ["f2"]),
        N("Add", ["f2", "x1"], ["last_hidden_state"]),
        N("Gather", ["last_hidden_state", "c0"], ["cls"], axis=1),
        N("Gemm", ["cls", "pooler.dense.weight", "pooler.dense.bias"], ["pool_lin"], alpha=1.0, beta=1.0, transB=1),
        N("Tanh", ["pool_lin"], ["pooler_output"]),
        N("GatherElements", ["pooler_output", "ge_idx"], ["picked"], axis=1),
        N("GatherND", ["last_hidden_state", "gnd_idx"], ["tokens"]),
    ]
    inits["c1v_axis"] = np.array([1], np.int64)
    inits["axes12"] = np.array([1, 2], np.int64)
    return model(n, [("input_ids", T.INT64, ["batch", S]), ("attention_mask", T.INT64, ["batch", S])],
                 [("last_hidden_state", T.FLOAT, ["batch", S, d]), ("pooler_output", T.FLOAT, ["batch", d]),
                  ("picked", T.FLOAT, [2, 2]), ("tokens", T.FLOAT, [2, d])], inits, opset=17)


def transformer_feeds(batch=2, seq=7, vocab=50):
    ids = RNG.integers(0, vocab, (batch, seq)).astype(np.int64)
    mask = np.ones((batch, seq), np.int64)
    mask[1, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def cnn(opset=13):
    """Conv / BatchNormalization / Relu / pooling / grouped + dilated conv / ConvTranspose /
    Concat / GlobalAveragePool / Flatten / Gemm, as torchvision-style exports look."""
    inits = {
        "conv1.weight": rand(8, 3, 3, 3), "conv1.bias": rand(8),
        "bn1.weight": 1 + rand(8), "bn1.bias": rand(8), "bn1.running_mean": rand(8),
        "bn1.running_var": 1 + np.abs(rand(8)),
        "conv2.weight": rand(8, 4, 3, 3), "up.weight": rand(8, 4, 2, 2), "up.bias": rand(4),
        "conv3.weight": rand(8, 8, 1, 1),
        "fc.weight": rand(10, 20), "fc.bias": rand(10),
    }
    n = [
        N("Conv", ["input.1", "conv1.weight", "conv1.bias"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
        N("BatchNormalization", ["c1", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"], ["bn"],
          epsilon=1e-5, momentum=0.9),
        N("Relu", ["bn"], ["r1"]),
        N("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        N("Conv", ["p1", "conv2.weight"], ["c2"], group=2, kernel_shape=[3, 3], pads=[2, 2, 2, 2], dilations=[2, 2]),
        N("AveragePool", ["c2"], ["p2"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=0),
        N("ConvTranspose", ["p2", "up.weight", "up.bias"], ["u1"], kernel_shape=[2, 2], strides=[2, 2]),
        N("MaxPool", ["u1"], ["u2"], kernel_shape=[2, 2], strides=[2, 2]),
        N("Conv", ["p2", "conv3.weight"], ["c3"], kernel_shape=[1, 1], auto_pad="SAME_UPPER"),
        N("Concat", ["u2", "c3"], ["cat"], axis=1),
        N("GlobalAveragePool", ["cat"], ["gap"]),
        N("Flatten", ["gap"], ["flat"], axis=1),
        N("Sigmoid", ["flat"], ["sig"]),
        N("Concat", ["sig", "sig"], ["feat_raw"], axis=1),
        N("Slice", ["feat_raw", "s0", "s1", "s_ax"], ["feat"]),
        N("Gemm", ["feat", "fc.weight", "fc.bias"], ["logits"], transB=1),
        N("Softmax", ["logits"], ["probs"], axis=1),
    ]
    inits.update({"s0": np.array([0], np.int64), "s1": np.array([20], np.int64), "s_ax": np.array([1], np.int64)})
    return model(n, [("input.1", T.FLOAT, ["batch", 3, 16, 16])],
                 [("probs", T.FLOAT, ["batch", 10]), ("feat", T.FLOAT, ["batch", 20])], inits, opset=opset)
