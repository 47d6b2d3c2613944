"""Per-weight statistics a compression stage records: sizes and error figures.

Sizes count what a serializer stores: sub-byte data in bits (a uint4 index is
half a byte), every const the new form adds, against every const it removes.
Error figures compare the original dense weight with the reconstruction the op
kernels compute from the new form (what the interpreter and decompress_weights
yield), in chunks so that no float64 copy of a large weight is ever made.
"""
from __future__ import annotations

import math

import numpy as np

from ir.core import Op
from stages.compression.numeric.metrics import packed_nbytes

_CHUNK = 1 << 20


def const_nbytes(ops) -> int:
    """Stored bytes of the const ops among `ops` (sub-byte dtypes bit-packed)."""
    return sum(packed_nbytes(op.outputs[0].val.size, op.outputs[0].type.dt.bits)
               for op in ops if isinstance(op, Op) and op.op_type == "const")


def error_figures(weight: np.ndarray, reconstruction: np.ndarray) -> dict:
    """snr_db (inf when exact), max_abs_error and mse, over chunks of 1M elements.

    Differences are taken in float32 (float64 for float64 weights) and each chunk's sums
    accumulate into Python floats: a relative error around 1e-7 on the sums, far below what
    an SNR or MSE figure needs, at a quarter of the cost of a float64 pass.
    """
    w, r = np.ravel(weight), np.ravel(reconstruction)
    work = np.float64 if np.float64 in (w.dtype, r.dtype) else np.float32
    err2 = sig2 = 0.0
    worst = 0.0
    for i in range(0, w.size, _CHUNK):
        a = w[i:i + _CHUNK].astype(work)
        d = a - r[i:i + _CHUNK].astype(work, copy=False)
        err2 += float(np.dot(d, d))
        sig2 += float(np.dot(a, a))
        if d.size:
            worst = max(worst, float(np.max(np.abs(d))))
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
