"""Per-weight statistics a compression stage records: sizes and error figures.

Sizes count what a serializer stores: sub-byte data in bits (a uint4 index is
half a byte), every const the new form adds, against every const it removes.
Error figures compare the original dense weight with the reconstruction the op
kernels compute from the new form (what the interpreter and decompress_weights
yield), in chunks so that no float copy of a large weight is ever made.
"""
from __future__ import annotations

import math

import numpy as np

from ir.core import Op
from stages.compression.numeric.metrics import packed_nbytes

_CHUNK = 1 << 16  # elements per pass: the float64 buffers stay in cache


def const_nbytes(ops) -> int:
    """Stored bytes of the const ops among `ops` (sub-byte dtypes bit-packed)."""
    return sum(packed_nbytes(op.outputs[0].val.size, op.outputs[0].type.dt.bits)
               for op in ops if isinstance(op, Op) and op.op_type == "const")


def error_figures(weight: np.ndarray, reconstruction: np.ndarray) -> dict:
    """snr_db (inf when exact), max_abs_error and mse, in one pass over chunks.

    Each chunk of both arrays is converted into a reused float64 buffer (exact for fp16 /
    fp32 / fp64 values; numpy converts fp16 to float64 about twice as fast as to float32),
    so the pass allocates nothing of the weight's size; sums accumulate in Python floats.
    """
    w, r = np.ravel(weight), np.ravel(reconstruction)
    n = min(_CHUNK, w.size)
    a, d = np.empty(n, np.float64), np.empty(n, np.float64)
    err2 = sig2 = worst = 0.0
    for i in range(0, w.size, _CHUNK):
        m = min(_CHUNK, w.size - i)
        ac, dc = a[:m], d[:m]
        np.copyto(ac, w[i:i + m])
        np.copyto(dc, r[i:i + m])
        np.subtract(ac, dc, out=dc)
        np.abs(dc, out=dc)
        chunk_worst = float(np.max(dc))
        if not chunk_worst <= worst:  # NaN sticks
            worst = chunk_worst
        # squares and sums rather than np.dot: BLAS threads spin for the cores other jobs
        # use (10x slower on a loaded machine), and these passes run in cache anyway
        err2 += float(np.sum(np.multiply(dc, dc, out=dc)))
        sig2 += float(np.sum(np.multiply(ac, ac, out=ac)))
    if err2 == 0.0:
        snr = math.inf
    elif sig2 == 0.0:
        snr = -math.inf
    else:
        snr = 10.0 * math.log10(sig2 / err2)
    return {"snr_db": snr, "max_abs_error": worst, "mse": err2 / max(w.size, 1)}


def record(mode: str, original_bytes: int, compressed_bytes: int, weight, reconstruction, **extra) -> dict:
    out = {"mode": mode, "original_bytes": int(original_bytes), "compressed_bytes": int(compressed_bytes)}
    out.update(extra)
    out.update(error_figures(weight, reconstruction))
    return out
