"""Transformer building blocks: RotaryEmbedding (opset 23).

X is [batch, heads, seq, head_size] or [batch, seq, heads * head_size] (then
num_heads says how to split it). The first rotary_embedding_dim features of each
head (all when 0) rotate as complex pairs by the cos / sin caches, looked up by
position_ids when given ([max_position, dim / 2]) or taken as they are
([batch, seq, dim / 2]); pairs are (i, i + dim/2), or neighbours when interleaved.

Attention (opsets 23-24; 25's sliding windows go to the reference evaluator):
3-D Q / K / V [batch, seq, heads * size] split by q_num_heads / kv_num_heads,
4-D ones are [batch, heads, seq, size]; past_key / past_value are prepended
to K / V (and returned as present_*); KV heads repeat for grouped queries.
scores = (Q * sqrt(scale)) @ (K * sqrt(scale))^T (scale defaults to
1/sqrt(head size)), then softcap (c * tanh(s / c)), then the additive bias:
attn_mask (a bool mask attends where True; a mask shorter than the keys is
padded with "masked"), the causal mask (key j visible to query i when
j <= i + past length), and nonpad_kv_seqlen padding; softmax (in
softmax_precision when given); a query row with every key masked gives zeros.
qk_matmul_output is the scores before the bias (mode 0, also after softcap
when 1), with the bias (2) or after softmax (3).
"""
from __future__ import annotations

import numpy as np

from ir.formats.onnx.kernels._util import Unsupported, arg, need, work


def rotary_embedding(ins, attrs, node):
    x, cos, sin, pos = need(ins, 0, "X"), need(ins, 1, "cos_cache"), need(ins, 2, "sin_cache"), arg(ins, 3)
    w = work(x)
    if x.ndim == 4:  # -> [batch, seq, heads, head]
        h = w.transpose(0, 2, 1, 3)
    elif x.ndim == 3:
        heads = int(attrs.get("num_heads", 0))
        if heads <= 0 or x.shape[2] % heads:
            raise ValueError(f"RotaryEmbedding: a 3-D input needs num_heads dividing {x.shape[2]}")
        h = w.reshape(x.shape[0], x.shape[1], heads, x.shape[2] // heads)
    else:
        raise ValueError(f"RotaryEmbedding: input of rank {x.ndim}, needs 3 or 4")
    dim = int(attrs.get("rotary_embedding_dim", 0)) or h.shape[-1]
    half = dim // 2
    cos, sin = work(np.asarray(cos)), work(np.asarray(sin))
    if pos is not None:
        cos, sin = cos[np.asarray(pos, np.int64)], sin[np.asarray(pos, np.int64)]
    if cos.shape[-1] != half or sin.shape[-1] != half:
        raise ValueError(f"RotaryEmbedding: caches end in {cos.shape[-1]}, rotary dim / 2 is {half}")
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    rot, rest = h[..., :dim], h[..., dim:]
    interleaved = int(attrs.get("interleaved", 0))
    x1, x2 = (rot[..., 0::2], rot[..., 1::2]) if interleaved else (rot[..., :half], rot[..., half:])
    real, imag = cos * x1 - sin * x2, sin * x1 + cos * x2
    if interleaved:
        rotated = np.stack([real, imag], axis=-1).reshape(rot.shape)
    else:
        rotated = np.concatenate([real, imag], axis=-1)
    y = np.concatenate([rotated, rest], axis=-1)
    y = y.transpose(0, 2, 1, 3) if x.ndim == 4 else y.reshape(x.shape)
    return [np.asarray(y).astype(x.dtype, order="C")]


def _heads(x, n_heads, what):
    """3-D [b, s, h * d] -> 4-D [b, h, s, d]; 4-D as it is."""
    if x.ndim == 4:
        return x
    if not n_heads or x.shape[2] % n_heads:
        raise ValueError(f"Attention: 3-D {what} needs a head count dividing {x.shape[2]}")
    return x.reshape(x.shape[0], x.shape[1], n_heads, x.shape[2] // n_heads).transpose(0, 2, 1, 3)


def attention(ins, attrs, node):
    q, k, v = need(ins, 0, "Q"), need(ins, 1, "K"), need(ins, 2, "V")
    mask, past_k, past_v, nonpad = arg(ins, 3), arg(ins, 4), arg(ins, 5), arg(ins, 6)
    if int(attrs.get("left_window_size", -1)) >= 0 or int(attrs.get("right_window_size", -1)) >= 0:
        raise Unsupported("Attention sliding windows")
    if (past_k is None) != (past_v is None):
        raise ValueError("Attention: past_key and past_value go together")
    dt = q.dtype
    qh = _heads(q, int(attrs.get("q_num_heads", 0)), "Q")
    kh = _heads(k, int(attrs.get("kv_num_heads", 0)), "K")
    vh = _heads(v, int(attrs.get("kv_num_heads", 0)), "V")
    if past_k is not None:
        kh, vh = np.concatenate([past_k, kh], axis=2), np.concatenate([past_v, vh], axis=2)
    present_k, present_v = kh, vh
    nq, nkv = qh.shape[1], kh.shape[1]
    if nq != nkv:
        if nq % nkv:
            raise ValueError(f"Attention: {nq} query heads do not group over {nkv} key heads")
        kh, vh = np.repeat(kh, nq // nkv, axis=1), np.repeat(vh, nq // nkv, axis=1)
    scale = attrs.get("scale")
    scale = 1 / np.sqrt(qh.shape[3]) if scale is None else float(scale)
    root = dt.type(np.sqrt(scale)) if dt.kind == "f" else np.float32(np.sqrt(scale))
    qs, ks = work(qh * root), work(kh * root)
    scores = qs @ np.swapaxes(ks, -1, -2)
    softcap = float(attrs.get("softcap", 0.0))
    if softcap > 0:
        scores = softcap * np.tanh(scores / softcap)
    qlen, klen = scores.shape[-2:]
    bias = np.zeros((qlen, klen), scores.dtype)
    if mask is not None:
        m = np.asarray(mask)
        if m.shape[-1] < klen:  # a short mask: the keys past it are masked
            pad = [(0, 0)] * (m.ndim - 1) + [(0, klen - m.shape[-1])]
            m = np.pad(m, pad, constant_values=False if m.dtype == bool else -np.inf)
        bias = bias + (np.where(m, 0, -np.inf).astype(scores.dtype) if m.dtype == bool else work(m))
    if int(attrs.get("is_causal", 0)):
        i, j = np.arange(qlen)[:, None], np.arange(klen)[None, :]
        if past_k is None and nonpad is not None:
            offset = np.asarray(nonpad, np.int64).reshape(-1, 1, 1, 1) - qlen
        else:
            offset = past_k.shape[2] if past_k is not None else 0
        bias = bias + np.where(j <= i + offset, 0, -np.inf).astype(scores.dtype)
    if nonpad is not None:
        valid = np.arange(klen)[None, :] < np.asarray(nonpad, np.int64).reshape(-1, 1)
        bias = bias + np.where(valid, 0, -np.inf).astype(scores.dtype).reshape(-1, 1, 1, klen)
    mode = int(attrs.get("qk_matmul_output_mode", 0))
    biased = scores + bias
    qk_out = biased if mode == 2 else scores
    sm = biased
    if "softmax_precision" in attrs:
        from ir.formats.onnx.kernels._util import np_dtype

        sm = sm.astype(np_dtype(attrs["softmax_precision"]))
    top = np.max(sm, axis=-1, keepdims=True)
    e = np.exp(sm - np.where(np.isneginf(top), 0, top))
    total = np.sum(e, axis=-1, keepdims=True)
    probs = e / np.where(total == 0, 1, total)
    dead = np.isneginf(np.max(np.broadcast_to(bias, biased.shape), axis=-1, keepdims=True))
    probs = np.where(dead, 0, probs)
    if mode == 3:
        qk_out = probs
    y = probs.astype(dt).astype(work(vh).dtype) @ work(vh)
    if q.ndim == 3:
        y = y.transpose(0, 2, 1, 3).reshape(y.shape[0], y.shape[2], -1)
    return [y.astype(dt), present_k, present_v, np.asarray(qk_out).astype(dt)]


KERNELS = {"RotaryEmbedding": rotary_embedding, "Attention": attention}
