"""Per-weight statistics a compression stage records: sizes and error figures, fast.

The figures are defined, edge cases included, in stages.compression.numeric.metrics;
this module is the chunked fp32 engine that computes their sums for large weights
without float64 copies (tested against metrics' float64 reference).

Sizes count what a serializer stores: sub-byte data in bits (a uint4 index is
half a byte), every const the new form adds, against every const it removes.

Error figures compare the original dense weight with the reconstruction the op
kernels compute from the new form (what the interpreter and decompress_weights
yield): ``snr_db`` = 10 log10(sum w^2 / sum (w - r)^2) (inf when exact, -inf
for an all-zero weight reconstructed inexactly), ``max_abs_error`` = max |w - r|,
``mse`` = mean (w - r)^2.  They are computed in one pass over chunks of
~64K elements, so no float copy of a large weight is ever made, and a stage
that can compute its reconstruction chunk by chunk (affine) never builds it
whole either (``FigureSums.add``).  A kernel that knows the sums behind them
exactly hands them over instead (``figures_from_sums``): fp16 palettization
takes them from its per-group histograms, where the reconstruction (a LUT
entry, no arithmetic) depends only on the group and the value.

Precision (fp16 / fp32 weights; fp64 ones are done in float64 throughout):
each chunk is converted exactly to float32 (fp16 through a bit-level
conversion, 2-3x faster than numpy's cast), differences and squares are
float32, each chunk's sums are float32 pairwise sums (at most 65,536 terms)
and the chunk sums are added in float64.  So ``max_abs_error`` is within a
relative 2^-24 (6e-8) of the exact value (exact whenever r is within a factor
2 of w), ``mse`` and the sums behind ``snr_db`` within a relative 2e-6 (worst
case of the pairwise sums; ~1e-7 typical), i.e. ``snr_db`` within 1e-5 dB.
A chunk whose float32 squares overflow is redone in float64.
"""
from __future__ import annotations

import math

import numpy as np

from ir.core import Op
from stages.compression.numeric.metrics import packed_nbytes, snr_db_from_sums

CHUNK = 1 << 16  # elements per pass: the float32 buffers stay in cache

# fp16 -> fp32 by bits: the fp16 pattern sign-extended to 32 bits and shifted left by 13
# puts its exponent and mantissa where fp32 keeps them (exponent still biased by 15);
# masking keeps the sign and those 15 bits, and multiplying by 2**112 rebiases the
# exponent (127 - 15), which also turns fp16 subnormals (fp32 denormals here) into the
# right normal numbers.  Exact for every finite fp16 value; Inf/NaN land at >= 2**16.
_SIGN_AND_FP16_BITS = np.uint32(0x8FFFFFFF).view(np.int32)
_REBIAS = np.float32(2.0 ** 112)
_FP16_LIMIT = np.float32(65504.0)  # the largest finite fp16


def float16_to_float32(chunk: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Exact fp32 copy of an fp16 array (1-D, out: int32 buffer of the same size); a view of out."""
    np.copyto(out, chunk.view(np.int16))
    np.left_shift(out, 13, out=out)
    np.bitwise_and(out, _SIGN_AND_FP16_BITS, out=out)
    f = out.view(np.float32)
    np.multiply(f, _REBIAS, out=f)
    if f.size and not (f.max() <= _FP16_LIMIT and f.min() >= -_FP16_LIMIT):  # Inf / NaN: numpy's cast
        np.copyto(f, chunk)
    return f


# Rounding fp32 values to the nearest fp16 value (ties to even) without leaving fp32:
# for |x| in [2**e, 2**(e+1)) adding M = 2**(e+13) (same sign as x) leaves exactly the
# bits down to 2**(e-10), fp16's spacing there, and fp32's round-to-nearest-even on that
# last bit is fp16's; subtracting M is exact.  M's bits are x's sign and exponent bits
# plus 13 in the exponent field.  Below fp16's normal range the spacing is 2**-24 for
# every x, hence e is clamped at -14 there (zero needs no clamp: 0 + M - M = 0).
_EXPONENT = np.int32(0x7F800000)
_SIGN = np.uint32(0x80000000).view(np.int32)
_SIGN_AND_EXPONENT = np.uint32(0xFF800000).view(np.int32)
_MIN_FP16_EXPONENT = np.int32((127 - 14) << 23)
_SHIFT_13 = np.int32(13 << 23)


def round_to_float16(x: np.ndarray, scratch: np.ndarray, subnormals: bool = True) -> np.ndarray:
    """x (1-D float32) rounded in place to fp16 values, bit for bit x.astype(fp16).

    The caller must know that no |x| exceeds 65504 (fp16 would give inf, this does
    not).  subnormals=False (4 passes instead of 7) when every |x| below 2**-14 is a
    multiple of 2**-24 already (e.g. integers times fp16 values).
    `scratch`: an int32 buffer of 2 * x.size elements (x.size when subnormals=False).
    """
    bits, n = x.view(np.int32), x.size
    m = scratch[:n]
    if subnormals:
        sign = scratch[n:2 * n]
        np.bitwise_and(bits, _EXPONENT, out=m)
        np.maximum(m, _MIN_FP16_EXPONENT, out=m)
        np.bitwise_and(bits, _SIGN, out=sign)
        np.bitwise_or(m, sign, out=m)
    else:
        np.bitwise_and(bits, _SIGN_AND_EXPONENT, out=m)
    np.add(m, _SHIFT_13, out=m)  # never carries into the sign: exponents stay below 255
    mf = m.view(np.float32)
    np.add(x, mf, out=x)
    np.subtract(x, mf, out=x)
    return x


def const_nbytes(ops) -> int:
    """Stored bytes of the const ops among `ops` (sub-byte dtypes bit-packed)."""
    return sum(packed_nbytes(op.outputs[0].val.size, op.outputs[0].type.dt.bits)
               for op in ops if isinstance(op, Op) and op.op_type == "const")


def work_dtype(*dtypes):
    """float32 when every array is fp16 / fp32 (exact conversions), else float64."""
    return np.float32 if all(np.dtype(d) in (np.float16, np.float32) for d in dtypes) else np.float64


class FigureSums:
    """Running sums of the error figures, fed chunk by chunk.

    ``exact(chunk)``: a chunk in the working dtype, converted exactly (a
    buffer reused by the next call of the same slot). ``add(w, r)``: w and r
    are 1-D chunks in the working dtype; r is overwritten.
    """

    def __init__(self, work=np.float32):
        self.work = np.dtype(work)
        self.err2 = self.sig2 = self.worst = 0.0
        self.count = 0
        self._buffers = {}

    def buffer(self, slot: str, n: int, dtype=None) -> np.ndarray:
        dtype = np.dtype(dtype or self.work)
        buf = self._buffers.get((slot, dtype))
        if buf is None or buf.size < n:
            buf = self._buffers[(slot, dtype)] = np.empty(max(n, 1), dtype)
        return buf[:n]

    def exact(self, chunk: np.ndarray, slot: str = "w", copy: bool = False) -> np.ndarray:
        """The chunk (any float dtype) flattened into the working dtype, exactly; with
        copy=False it may be a view of `chunk`, else it is the slot's buffer."""
        flat = np.ravel(chunk)
        if flat.dtype == self.work and not copy:
            return flat
        if flat.dtype == np.float16 and self.work == np.float32:
            return float16_to_float32(flat, self.buffer(slot, flat.size, np.int32))
        out = self.buffer(slot, flat.size)
        np.copyto(out, flat)
        return out

    def add(self, w: np.ndarray, r: np.ndarray) -> None:
        d = np.subtract(w, r, out=r)
        chunk_worst = max(float(d.max()), -float(d.min())) if d.size else 0.0
        if not chunk_worst <= self.worst or math.isnan(chunk_worst):  # NaN sticks
            self.worst = chunk_worst
        sq = self.buffer("square", w.size)
        # squares and sums rather than np.dot: BLAS threads spin for the cores other jobs
        # use (10x slower on a loaded machine), and these passes run in cache anyway
        with np.errstate(over="ignore"):
            err2 = float(np.sum(np.multiply(d, d, out=sq)))
            sig2 = float(np.sum(np.multiply(w, w, out=sq)))
        if (math.isinf(err2) or math.isinf(sig2)) and self.work == np.float32:  # squares overflowed: float64
            d64, w64 = d.astype(np.float64), w.astype(np.float64)  # d: w - r, sign aside
            err2, sig2 = float(np.sum(d64 * d64)), float(np.sum(w64 * w64))
        self.err2 += err2
        self.sig2 += sig2
        self.count += w.size

    def figures(self) -> dict:
        return figures_from_sums(self.err2, self.sig2, self.worst, self.count)


def figures_from_sums(err2: float, sig2: float, worst: float, count: int) -> dict:
    """The figures from sum (w - r)^2, sum w^2, max |w - r| and the number of elements
    (edge cases: stages.compression.numeric.metrics, the one place they are decided)."""
    return {"snr_db": snr_db_from_sums(sig2, err2), "max_abs_error": float(worst),
            "mse": err2 / max(count, 1)}


def error_figures(weight: np.ndarray, reconstruction: np.ndarray) -> dict:
    """snr_db, max_abs_error and mse of a whole reconstruction (precision: module docstring)."""
    w, r = np.ravel(weight), np.ravel(reconstruction)
    if w.size != r.size:
        raise ValueError(f"error figures: weight has {w.size} elements, reconstruction {r.size}")
    sums = FigureSums(work_dtype(w.dtype, r.dtype))
    for i in range(0, w.size, CHUNK):
        wc = sums.exact(w[i:i + CHUNK], "w")
        sums.add(wc, sums.exact(r[i:i + CHUNK], "r", copy=True))  # add overwrites its r
    return sums.figures()


def record(mode: str, original_bytes: int, compressed_bytes: int, weight=None, reconstruction=None, *,
           figures=None, **extra) -> dict:
    """The stats of one weight; error figures given, or computed from weight and reconstruction."""
    out = {"mode": mode, "original_bytes": int(original_bytes), "compressed_bytes": int(compressed_bytes)}
    out.update(extra)
    out.update(figures if figures is not None else error_figures(weight, reconstruction))
    return out
