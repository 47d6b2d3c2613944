"""Transformer building blocks: RotaryEmbedding (opset 23).

X is [batch, heads, seq, head_size] or [batch, seq, heads * head_size] (then
num_heads says how to split it). The first rotary_embedding_dim features of each
head (all when 0) rotate as complex pairs by the cos / sin caches, looked up by
position_ids when given ([max_position, dim / 2]) or taken as they are
([batch, seq, dim / 2]); pairs are (i, i + dim/2), or neighbours when interleaved.
Attention itself has no kernel: its many versions stay with the reference evaluator.
"""
from __future__ import annotations

import numpy as np

from ir.formats.onnx.kernels._util import arg, need, work


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


KERNELS = {"RotaryEmbedding": rotary_embedding}
