"""GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers"): quantize a weight column by column, each time moving the
columns not yet quantized to the least-squares optimum given the ones that are.

The weight is a matrix W [rows, cols]: rows are output channels (independent), cols the input
channels the calibration rows X [n, cols] multiply. The loss is the output error

    L(Q) = || (W - Q) X^T ||^2 / n = tr((W - Q) H (W - Q)^T),   H = X^T X / n.

Quantizing column j to q_j (the quantizer's choice for the current, already updated column)
leaves the error e_j = (w_j - q_j); the optimal change of the remaining columns F given it is
-e_j / [H_F^-1]_jj * [H_F^-1]_j,F (the Optimal Brain Surgeon update), and the inverse of
H restricted to the remaining columns is read off the upper Cholesky factor U of H^-1 (row j
of U, divided by U_jj, is that update for every j at once: the paper's "Cholesky
reformulation"). Columns are processed in blocks of ``block`` (the "lazy batch" update: the
columns right of a block are updated once per block by a matrix product).

Damping: H + damp * mean(diag H) * I (GPTQ's default damp 0.01), so H^-1 exists and is
well-conditioned; an input channel that is always 0 (diag 0) gets 1 on the diagonal first
(its column is then quantized on its own, its error moved nowhere).

``act_order``: columns in order of decreasing diag(H) (the paper's repository's "desc_act"):
the channels with most energy are quantized first, while the most columns remain to absorb
their error. The quantizer is given original column indices, so per-block grids
(fixed before GPTQ runs: "static groups") are unaffected by the order.

The quantizer is ``quantize(j, column) -> (reconstruction, codes)``: the affine grid of a
column (scale and zero point per row) or the nearest entry of each row's LUT. GPTQ changes
which code each element gets, never the grid: codes are always in range, the grid is the
data-free one.
"""
from __future__ import annotations

import hashlib
import os
from typing import Callable, NamedTuple

import numpy as np

from ir.lru import LRU


class GptqResult(NamedTuple):
    reconstruction: np.ndarray  # [rows, cols] float64
    codes: np.ndarray           # [rows, cols], the quantizer's codes
    loss: float                 # tr((W - Q) H (W - Q)^T) with the undamped H (nan: not asked for)


def prepared_hessian(h: np.ndarray, damp: float) -> np.ndarray:
    """H with dead channels set to 1 on the diagonal and the damping added (a fresh array); a
    stack [..., n, n] is prepared matrix by matrix."""
    h = np.array(h, np.float64, copy=True)
    n = h.shape[-1]
    idx = np.arange(n)
    dead = np.diagonal(h, axis1=-2, axis2=-1) <= 0
    h = np.where(dead[..., :, None] | dead[..., None, :], 0.0, h)
    h[..., idx, idx] += dead
    mean = np.mean(np.diagonal(h, axis1=-2, axis2=-1), axis=-1) if n else np.zeros(h.shape[:-2])
    h[..., idx, idx] += damp * np.asarray(mean)[..., None]
    return h


def inverse_cholesky_upper(h: np.ndarray) -> np.ndarray:
    """U upper triangular with U^T U = H^-1, from one Cholesky factorisation: with P the
    order reversal and P H P = L L^T, H^-1 = P L^-T L^-1 P = U^T U for U = P L^-1 P, which is
    upper triangular (reversing rows and columns of the lower triangular L^-1). A stack
    [..., n, n] gives a stack (one batched LAPACK call each)."""
    lower = np.linalg.cholesky(h[..., ::-1, ::-1])
    inv_lower = np.linalg.solve(lower, np.broadcast_to(np.eye(h.shape[-1]), h.shape))
    return np.ascontiguousarray(inv_lower[..., ::-1, ::-1])


# mixed_precision runs GPTQ onto several grids and LUTs of one weight against the same H: the
# factorisation (most of a small weight's time) is computed once per (H, damp, act_order)
_FACTORS = LRU(4)


def factor(h: np.ndarray, damp: float, act_order: bool) -> tuple:
    """(column order, U) for GPTQ against H: the order (descending diagonal with act_order) and
    the upper inverse Cholesky factor of the prepared, reordered H; both read-only, remembered
    for the last few H by content."""
    h = np.ascontiguousarray(h, np.float64)

    def compute():
        order = np.argsort(-np.diagonal(h), kind="stable") if act_order else np.arange(h.shape[0])
        return order, inverse_cholesky_upper(prepared_hessian(h, damp)[np.ix_(order, order)])

    return _remembered(("one", h, damp, act_order), compute)


def _remembered(key: tuple, compute: Callable) -> tuple:
    """compute()'s arrays (made read-only), remembered for the last few keys; the key's array
    (H) is keyed by its content."""
    kind, h, damp, act_order = key
    key = (kind, hashlib.blake2b(h.data, digest_size=16).hexdigest(), h.shape, float(damp), bool(act_order))

    def frozen():
        found = compute()
        for a in found:
            a.flags.writeable = False
        return found

    return _FACTORS.get(key, frozen)


def factor_groups(hs: np.ndarray, damp: float, act_order: bool) -> tuple:
    """factor() for a stack of H [groups, cols, cols] at once (a grouped conv's, one per group:
    a depthwise conv has hundreds of small ones): (orders [groups, cols], U [groups, cols,
    cols]), each group's what factor() gives for it; stacked LAPACK calls, remembered by content
    like factor()."""
    hs = np.ascontiguousarray(hs, np.float64)
    return _remembered(("groups", hs, damp, act_order), lambda: _factor_groups(hs, damp, act_order))


def _factor_groups(hs: np.ndarray, damp: float, act_order: bool) -> tuple:
    g, cols = hs.shape[0], hs.shape[-1]
    diag = np.diagonal(hs, axis1=1, axis2=2)
    orders = np.argsort(-diag, axis=1, kind="stable") if act_order else np.broadcast_to(np.arange(cols), (g, cols)).copy()
    rows = np.arange(g)[:, None, None]
    return orders, inverse_cholesky_upper(prepared_hessian(hs, damp)[rows, orders[:, :, None], orders[:, None, :]])


def output_loss(w: np.ndarray, q: np.ndarray, h: np.ndarray) -> float:
    """tr((W - Q) H (W - Q)^T)."""
    d = np.asarray(w, np.float64) - np.asarray(q, np.float64)
    return float(np.einsum("ij,ij->", d @ h, d))


def jit_enabled() -> bool:
    """The compiled column loop (gptq_jit) is installed (numba) and not switched off (WEIGHTPRESS_JIT=0)."""
    from . import gptq_jit

    return gptq_jit.AVAILABLE and os.environ.get("WEIGHTPRESS_JIT", "1") != "0"


_LOADED = []


def _compiled(quantize, engine: str):
    """The quantizer's compiled block loop, or None (numpy): engine "auto" (compiled when
    available and the quantizer has one), "numpy" or "jit"."""
    block = getattr(quantize, "compiled_block", None)
    if engine == "numpy" or block is None or (engine == "auto" and not jit_enabled()):
        if engine == "jit":
            raise ValueError("gptq: engine='jit' needs numba and a quantizer with a compiled form")
        return None
    if not _LOADED:
        from . import gptq_jit

        gptq_jit.load_kernels()
        _LOADED.append(True)
    return block


def gptq(w: np.ndarray, h: np.ndarray, quantize: Callable, *, block: int = 128, damp: float = 0.01,
         act_order: bool = True, code_dtype=np.int64, with_loss: bool = True, engine: str = "auto",
         factors=None) -> GptqResult:
    """Quantize W [rows, cols] against H [cols, cols] (module docstring). ``engine``: "auto"
    runs each block's column loop compiled (gptq_jit) when numba is there and the quantizer
    has a compiled form, "numpy" / "jit" force one; the answers are the same. ``factors``:
    (order, U) as factor(h, damp, act_order) gives them, when the caller has them already
    (factor_groups)."""
    w = np.asarray(w, np.float64)
    rows, cols = w.shape
    order, u = factor(h, damp, act_order) if factors is None else factors
    work = w[:, order].copy()
    recon = np.empty_like(work)
    codes = np.empty((rows, cols), code_dtype)
    compiled = _compiled(quantize, engine)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        part = work[:, i1:i2].copy()
        errors = np.empty_like(part)
        ub = np.ascontiguousarray(u[i1:i2, i1:i2])
        if compiled is not None:
            rb, cb = np.empty_like(part), np.empty(part.shape, np.int64)
            compiled(part, ub, np.ascontiguousarray(order[i1:i2], np.int64), rb, cb, errors)
            recon[:, i1:i2], codes[:, i1:i2] = rb, cb
        else:
            for i in range(i2 - i1):
                col = part[:, i]
                q, c = quantize(int(order[i1 + i]), col)
                recon[:, i1 + i], codes[:, i1 + i] = q, c
                e = (col - q) / ub[i, i]
                part[:, i:] -= np.outer(e, ub[i, i:])
                errors[:, i] = e
        work[:, i2:] -= errors @ u[i1:i2, i2:]
    back = np.argsort(order)
    recon, codes = recon[:, back], codes[:, back]
    return GptqResult(recon, codes, output_loss(w, recon, h) if with_loss else float("nan"))


# ---- quantizers -------------------------------------------------------------------------

class _Quantizer:
    """A quantizer callable ``(j, column) -> (reconstruction, codes)`` that may also carry the
    compiled form of the whole block loop (``compiled_block``, gptq_jit)."""

    __slots__ = ("quantize", "compiled_block")

    def __init__(self, quantize, compiled_block=None):
        self.quantize, self.compiled_block = quantize, compiled_block

    def __call__(self, j, col):
        return self.quantize(j, col)


def affine_quantizer(scale: np.ndarray, zero_point: np.ndarray, lo, hi, out_dtype) -> Callable:
    """Column j on the grid scale[:, j] * (code - zero_point[:, j]), codes in [lo, hi]
    (scalars, or [rows, cols] arrays where the dtype's edge limits a block); the
    reconstruction as the emitted op computes it (fp32, rounded once to out_dtype)."""
    s64 = np.asarray(scale, np.float64)
    z64 = np.asarray(zero_point, np.float64)
    lo_a, hi_a = np.asarray(lo, np.float64), np.asarray(hi, np.float64)

    def at(a, j):
        return a if a.ndim == 0 else a[:, j]

    def quantize(j, col):
        s, z = s64[:, j], z64[:, j]
        c = np.clip(np.rint(col / s) + z, at(lo_a, j), at(hi_a, j))
        r = ((c - z).astype(np.float32) * s.astype(np.float32)).astype(out_dtype).astype(np.float64)
        return r, c

    compiled = None
    if np.dtype(out_dtype) == np.float32 and s64.ndim == 2:  # the kernel reconstructs in fp32 only
        full = [np.ascontiguousarray(np.broadcast_to(a, s64.shape), np.float64) for a in (s64, z64, lo_a, hi_a)]

        def compiled(part, ub, cols, recon, codes, errors):
            from .gptq_jit import block_affine

            block_affine(part, ub, cols, *full, recon, codes, errors)

    return _Quantizer(quantize, compiled)


def lut_quantizer(luts: np.ndarray, row_lut: np.ndarray) -> Callable:
    """Each row's element to the nearest entry of its LUT: luts [groups, entries] (float, in the
    weight's dtype), row_lut [rows] the LUT of each row. Ties go to the lower index."""
    luts64 = np.asarray(luts, np.float64)
    per_row = luts64[row_lut]                      # [rows, entries]
    order = np.argsort(per_row, axis=1, kind="stable")
    sorted_vals = np.take_along_axis(per_row, order, axis=1)
    mids = (sorted_vals[:, 1:] + sorted_vals[:, :-1]) / 2
    rows = np.arange(per_row.shape[0])

    def quantize(j, col):
        pos = (col[:, None] > mids).sum(axis=1)     # cell of each element among the sorted entries
        idx = order[rows, pos]
        return per_row[rows, idx], idx

    args = (np.ascontiguousarray(sorted_vals), np.ascontiguousarray(order, np.int64), np.ascontiguousarray(mids))

    def compiled(part, ub, cols, recon, codes, errors):
        from .gptq_jit import block_lut

        block_lut(part, ub, *args, recon, codes, errors)

    return _Quantizer(quantize, compiled)
