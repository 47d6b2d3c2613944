"""GPTQ's column loop inside a block (numeric/gptq.py), compiled by numba.

Same algorithm, same arithmetic, same answer (tests compare the two code for code): per column,
the quantizer's choice (the affine grid, rounded half to even and clipped, reconstructed as
``float32(code - zero) * float32(scale)``; or the nearest entry of the row's LUT, ties to the
lower entry), the scaled error, and the Optimal Brain Surgeon update of the block's remaining
columns. In numpy every column costs ~10 array operations over [rows, block] views (with their
Python overhead and temporaries); compiled, it is one pass over the rows. The update of the
columns right of a block stays a numpy matrix product (BLAS).

numba is optional (``weightpress[fast]``): without it, or with WEIGHTPRESS_JIT=0, gptq runs its
numpy loop. Kernels compile on a machine's first use (~2 s) and load from numba's disk cache
after that.
"""
from __future__ import annotations

import numpy as np

try:
    from numba import njit
except ImportError:  # pragma: no cover - installs without the [fast] extra
    njit = None

AVAILABLE = njit is not None


def block_affine(part, ub, cols, scale, zero, lo, hi, recon, codes, errors):
    """Quantize part [rows, b] (updated in place) onto the affine grid of original columns
    `cols` [b]; fills recon / codes / errors [rows, b]. scale, zero, lo, hi: [rows, cols]."""
    _affine(part, ub, cols, scale, zero, lo, hi, recon, codes, errors)


def block_lut(part, ub, sorted_vals, order, mids, recon, codes, errors):
    """Quantize part [rows, b] to each row's nearest LUT entry: sorted_vals / order [rows, k]
    (the row's LUT sorted, and each sorted entry's index), mids [rows, k - 1]."""
    _lut(part, ub, sorted_vals, order, mids, recon, codes, errors)


def load_kernels() -> None:
    """Compile the kernels for the argument types gptq passes, or load them from the disk cache."""
    part = np.zeros((1, 1))
    ub = np.ones((1, 1))
    full = np.ones((1, 1))
    _affine(part, ub, np.zeros(1, np.int64), full, full * 0, full * 0, full, np.zeros((1, 1)),
            np.zeros((1, 1), np.int64), np.zeros((1, 1)))
    _lut(np.zeros((1, 1)), ub, np.zeros((1, 2)), np.zeros((1, 2), np.int64), np.zeros((1, 1)),
         np.zeros((1, 1)), np.zeros((1, 1), np.int64), np.zeros((1, 1)))


if AVAILABLE:

    @njit(cache=True, nogil=True)
    def _update(part, ub, i, e, rows, b):
        for r in range(rows):
            er = e[r]
            for k in range(i + 1, b):
                part[r, k] -= er * ub[i, k]

    @njit(cache=True, nogil=True)
    def _affine(part, ub, cols, scale, zero, lo, hi, recon, codes, errors):
        rows, b = part.shape
        e = np.empty(rows)
        d = ub[0, 0]
        for i in range(b):
            j = cols[i]
            d = ub[i, i]
            for r in range(rows):
                x = part[r, i]
                s = scale[r, j]
                z = zero[r, j]
                c = np.rint(x / s) + z
                c = min(max(c, lo[r, j]), hi[r, j])
                q = np.float64(np.float32(c - z) * np.float32(s))
                recon[r, i] = q
                codes[r, i] = np.int64(c)
                e[r] = (x - q) / d
                errors[r, i] = e[r]
            _update(part, ub, i, e, rows, b)

    @njit(cache=True, nogil=True)
    def _lut(part, ub, sorted_vals, order, mids, recon, codes, errors):
        rows, b = part.shape
        m = mids.shape[1]
        e = np.empty(rows)
        for i in range(b):
            d = ub[i, i]
            for r in range(rows):
                x = part[r, i]
                pos = 0
                for t in range(m):
                    if x > mids[r, t]:
                        pos += 1
                q = sorted_vals[r, pos]
                recon[r, i] = q
                codes[r, i] = order[r, pos]
                e[r] = (x - q) / d
                errors[r, i] = e[r]
            _update(part, ub, i, e, rows, b)

else:  # pragma: no cover
    _affine = _lut = None
