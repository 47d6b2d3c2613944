"""Affine (linear) weight quantization: ``w ~= scale * (q - zero_point)``.

Semantics follow coremltools 9.0 (``optimize._utils.quantize_weight_by_dtype``):

* ``linear_symmetric``: R = max|w| per block, range [-R, R]; the integer range drops its most
  negative value so it is symmetric: int8 [-127, 127] zp 0, uint8 [0, 254] zp 127,
  int4 [-7, 7] zp 0, uint4 [0, 14] zp 7.  scale = 2R / (hi - lo) = R / 127 for 8 bit.
* ``linear``: the float range is [min(w_min, 0), max(w_max, 0)] mapped onto the full integer
  range (int8 [-128, 127], uint8 [0, 255], int4 [-8, 7], uint4 [0, 15]);
  scale = (B - A) / (hi - lo), zp = clip(round((lo * B - hi * A) / (B - A)), lo, hi).
  Including 0 in the range (as coremltools 9.0 does; the older docs used [min, max]) keeps
  the zero point inside the integer range, which the error bound below needs.

q = clip(round_half_even(w / scale) + zp, lo, hi).

Layout (iOS18 ``constexpr_blockwise_shift_scale``): ``scale`` and ``zero_point`` have the
weight's rank; on every axis their size is the number of blocks along it (1 when the axis
is not split), so ``scale * (q - zero_point)`` broadcasts after ``np.repeat`` on each axis
(plain broadcasting already works for per-tensor and per-channel).  ``scale`` has the
weight's dtype; ``q`` and ``zero_point`` are int8 (signed) or uint8 (unsigned), 4-bit values
included.  ``zero_point`` is all zeros for signed symmetric quantization (coremltools omits
it there).

Where ``linear`` on fp16 weights differs from coremltools 9.0 (up to 2 codes in some
channels; fp32 weights give the same codes and zero points): coremltools evaluates the
formulas in the weight's dtype, so for fp16 every step (B - A, the division by hi - lo,
lo * B - hi * A, the division giving the zero point, w / scale) is rounded to fp16 (about
3 decimal digits).  Its zero point can then round to the neighbouring integer (the fp16
quotient near 127.5 has a resolution of 1/16), and w / scale in fp16 can land one code
off near a .5 tie: 2 codes together.  Here the range and zero point are computed in
float64 and the scale rounded once to the weight's dtype, i.e. the seed's formulas
evaluated exactly (coremltools' own function run on the weight in float64 gives our zero
points exactly, and codes within the one-code tie rounding); a consequence of its fp16
rounding is that coremltools' reconstruction error exceeds scale / 2 (0.66 scale measured
on a 256x256 fp16 weight) where ours stays within it.  Matching it bit for bit would need
fp16 arithmetic emulated over the whole weight (numpy's is ~50x slower than fp32) to
reproduce a less accurate result, so we do not.  tests/stages/compression/
test_seed_examples_and_bounds.py pins these facts.

Degenerate blocks: an all-zero block has no range; its scale is 1 and every q equals the
zero point (exact).  A scale that rounds to 0 in the weight's dtype (tiny fp16 subnormal
ranges) becomes the dtype's smallest subnormal.  The stored scale is never below the exact
one in ``linear`` mode (rounded up by one ulp when needed), so every element satisfies
``|w - scale * (q - zp)| <= scale / 2`` up to float rounding of the dequantization itself.

The edge of the float range: the reconstruction ``scale * (q - zp)`` must stay finite in the
weight's dtype (an fp16 weight of 65504 has R / 127 = 515.78, which rounds to 516 in fp16,
and 127 * 516 = 65532 is Inf in fp16).  Where a block's range ends would reconstruct past
the dtype's largest finite value, its scale is rounded down instead of up (the ends then clip
by at most ``hi * ulp(scale)``, within ``scale / 2`` for 8-bit codes); and where that is not
enough (the zero point rounded away from the range end in ``linear`` mode), the block's codes
are limited to those whose reconstruction is finite: only elements within one step of the
dtype's largest magnitude are affected, and their error stays below ``scale``.  Ranges wider
than float64 holds (fp64 weights near +-1.8e308) are computed without forming ``b - a``.
So a finite weight never gets a non-finite reconstruction.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from ir.ops.quant import blockwise_shift_scale

from ._checks import choice, float_weight, normalize_axis
from ._floatkeys import ceil_to_dtype
from .errors import CompressionError, NotCompressible, message

# dtype name -> (bits, signed, numpy storage type)
QUANT_DTYPES = {
    "int8": (8, True, np.int8),
    "uint8": (8, False, np.uint8),
    "int4": (4, True, np.int8),
    "uint4": (4, False, np.uint8),
}
MODES = ("linear_symmetric", "linear")
GRANULARITIES = ("per_tensor", "per_channel", "per_block")


class AffineParams(NamedTuple):
    data: np.ndarray        # quantized values, weight's shape, int8/uint8 storage
    scale: np.ndarray       # weight's rank, blocks per axis; weight's dtype
    zero_point: np.ndarray  # same shape as scale; same storage dtype as data
    dtype: str              # "int8" | "uint8" | "int4" | "uint4"
    mode: str


def quant_range(dtype: str, mode: str) -> tuple[int, int]:
    """Integer range [lo, hi] used for ``dtype`` in ``mode``."""
    bits, signed, _ = QUANT_DTYPES[dtype]
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if mode == "linear_symmetric":
        # Symmetric ranges give up one code so that +R and -R are both representable.
        lo, hi = (lo + 1, hi) if signed else (lo, hi - 1)
    return lo, hi


def block_sizes_for(shape, granularity="per_tensor", *, axis=0, block_size=None,
                    input_axis=1, name=None) -> tuple[int, ...]:
    """Per-axis block sizes (0 = the whole axis) for a granularity, as coremltools infers them.

    ``per_channel``: one block per index of ``axis``.  ``per_block`` with an int
    ``block_size``: one block per index of ``axis`` (output channel) and blocks of
    ``block_size`` along ``input_axis``; with a sequence, it is used as is (one entry per axis).
    """
    rank = len(shape)
    choice(granularity, GRANULARITIES, what="granularity", name=name)
    sizes = [0] * rank
    if granularity == "per_tensor":
        return tuple(sizes)
    if granularity == "per_block" and block_size is not None and not np.isscalar(block_size):
        if len(block_size) != rank:
            raise CompressionError(message(f"block_size needs {rank} entries, got {len(block_size)}", name))
        return tuple(int(b) for b in block_size)
    sizes[normalize_axis(axis, rank, what="axis", name=name)] = 1
    if granularity == "per_block":
        if not isinstance(block_size, (int, np.integer)) or block_size <= 0:
            raise CompressionError(message(f"per_block needs a positive block_size, got {block_size!r}", name))
        if rank < 2:
            raise CompressionError(message("per_block needs a weight of rank >= 2", name))
        sizes[normalize_axis(input_axis, rank, what="input_axis", name=name)] = int(block_size)
    return tuple(sizes)


def _blocked_view(weight: np.ndarray, block_sizes: Sequence[int], name):
    """Reshape so each blocked axis becomes (num_blocks, block); return view, reduce axes, scale shape."""
    if len(block_sizes) != weight.ndim:
        raise CompressionError(message(f"block_sizes needs {weight.ndim} entries, got {len(block_sizes)}", name))
    new_shape, reduce_axes, scale_shape = [], [], []
    for dim, block in zip(weight.shape, block_sizes):
        if block < 0:
            raise CompressionError(message(f"negative block size {block}", name))
        if block == 0 or block == dim:
            reduce_axes.append(len(new_shape))
            new_shape.append(dim)
            scale_shape.append(1)
        else:
            if dim % block:
                raise NotCompressible(message(f"axis of size {dim} is not divisible by block size {block}", name))
            reduce_axes.append(len(new_shape) + 1)
            new_shape += [dim // block, block]
            scale_shape.append(dim // block)
    return weight.reshape(new_shape), tuple(reduce_axes), tuple(scale_shape)


def _store_scale(a, b, lo, hi, zp, dtype) -> np.ndarray:
    """The scale in the weight dtype: rounded to nearest (as coremltools), except where that
    rounding would push the range ends more than half a step past [lo, hi] (so clipping would
    break the error bound): there the next value up is used; and where a range end would then
    reconstruct past the dtype's largest finite value, the next value down.  Never 0."""
    exact = _step(a, b, lo, hi)
    stored = exact.astype(dtype).astype(np.float64)
    up = ceil_to_dtype(exact, dtype).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        overflow = (b / stored + zp > hi + 0.5) | (a / stored + zp < lo - 0.5)
    stored = np.where(overflow | (stored == 0), up, stored)
    past = _past_largest(stored, a, b, zp, lo, hi, dtype)
    if np.any(past):
        stored = np.where(past, _floor_to_dtype(exact, dtype), stored)
    return np.where(exact == 0, 1.0, stored).astype(dtype)


def _step(a, b, lo, hi):
    """(b - a) / (hi - lo) for b >= 0 >= a; as b / n - a / n where b - a overflows float64."""
    n = hi - lo
    with np.errstate(over="ignore"):
        span = b - a
    return np.where(np.isfinite(span), span / n, b / n - a / n)


def _floor_to_dtype(x, dtype) -> np.ndarray:
    """Largest value of ``dtype`` that is <= x (x finite, positive, inside dtype's range)."""
    y = np.asarray(x).astype(dtype)
    high = y.astype(np.float64) > x
    return np.where(high, np.nextafter(y, np.array(0, dtype)), y).astype(np.float64)


def _reconstruction(x, scale, zp, lo, hi):
    """(q - zp) * scale of the code x quantizes to, in float64 (exact: q - zp has 10 bits)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        q = np.clip(np.rint(x / scale) + zp, lo, hi)
        return (q - zp) * scale


def _past_largest(scale, a, b, zp, lo, hi, dtype) -> np.ndarray:
    big = float(np.finfo(dtype).max)
    return (np.abs(_reconstruction(b, scale, zp, lo, hi)) > big) | \
        (np.abs(_reconstruction(a, scale, zp, lo, hi)) > big)


def _code_limits(scale: np.ndarray, zp: np.ndarray, lo: int, hi: int):
    """Per block, the codes [lo', hi'] within [lo, hi] whose reconstruction (q - zp) * scale
    is finite in scale's dtype; plain (lo, hi) when that is every code of every block (the
    usual case: clipping then takes scalars)."""
    big = float(np.finfo(scale.dtype).max)
    s = scale.astype(np.float64)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        top = np.minimum(hi, np.floor(big / s + zp))
        bottom = np.maximum(lo, np.ceil(-big / s + zp))
        top = np.where((top - zp) * s > big, top - 1, top)  # float64 rounding of big / s
        bottom = np.where((bottom - zp) * s < -big, bottom + 1, bottom)
    if np.all(top >= hi) and np.all(bottom <= lo):
        return lo, hi
    return bottom, top


def affine_quantize(weight: np.ndarray, *, mode: str = "linear_symmetric", dtype: str = "int8",
                    granularity: str = "per_channel", axis: int = 0, block_size=None,
                    input_axis: int = 1, block_sizes: Sequence[int] | None = None,
                    name: str | None = None) -> AffineParams:
    """Quantize a float weight; see the module docstring for formulas and layouts.

    ``block_sizes`` (one entry per axis, 0 = whole axis) overrides ``granularity``.
    Raises ``NotCompressible`` when a block size does not divide its axis.
    """
    w = float_weight(weight, name=name)
    choice(mode, MODES, what="mode", name=name)
    choice(dtype, QUANT_DTYPES, what="dtype", name=name)
    if block_sizes is None:
        block_sizes = block_sizes_for(w.shape, granularity, axis=axis, block_size=block_size,
                                      input_axis=input_axis, name=name)
    lo, hi = quant_range(dtype, mode)
    storage = QUANT_DTYPES[dtype][2]
    blocked, reduce_axes, scale_shape = _blocked_view(w, block_sizes, name)
    if blocked.ndim == 0:  # a scalar weight: one block of one element
        blocked, reduce_axes = blocked.reshape(1), (0,)

    work = np.float64 if w.dtype == np.float64 else np.float32
    # the codes are made in an array of the weight's own shape (written through its blocked
    # view): it owns its memory, so the stage freezes it where it is instead of copying it
    codes = np.empty(w.shape, storage)
    out = codes.reshape(blocked.shape)
    # Chunks of ~64K elements along the first axis, each converted once to the working
    # dtype: temporaries stay in cache and no full-size float copy is ever made.  When the
    # first axis holds separate blocks (per output channel on axis 0) one pass does it all.
    rows = blocked.shape[0]
    step = max(1, _CHUNK // max(1, blocked.size // rows))
    chunks = [slice(r, r + step) for r in range(0, rows, step)]
    if 0 in reduce_axes:
        w_min = w_max = None
        for sl in chunks:
            x = _as_work(blocked[sl], work)
            lo_c, hi_c = np.min(x, axis=reduce_axes, keepdims=True), np.max(x, axis=reduce_axes, keepdims=True)
            w_min = lo_c if w_min is None else np.minimum(w_min, lo_c)
            w_max = hi_c if w_max is None else np.maximum(w_max, hi_c)
        scale, zp, limits = _block_params(w_min, w_max, mode, lo, hi, w.dtype)
        for sl in chunks:
            _quantize_chunk(out[sl], _as_work(blocked[sl], work), scale, zp, *limits)
    else:
        scales, zps = [], []
        for sl in chunks:
            x = _as_work(blocked[sl], work)
            s, z, limits = _block_params(np.min(x, axis=reduce_axes, keepdims=True),
                                         np.max(x, axis=reduce_axes, keepdims=True), mode, lo, hi, w.dtype)
            _quantize_chunk(out[sl], x, s, z, *limits)
            scales.append(s)
            zps.append(z)
        scale, zp = np.concatenate(scales), np.concatenate(zps)
    return AffineParams(codes, scale.reshape(scale_shape),
                        zp.astype(storage).reshape(scale_shape), dtype, mode)


_CHUNK = 1 << 16


def _as_work(chunk: np.ndarray, work) -> np.ndarray:
    """A fresh working copy; fp16 goes through float64 (numpy converts fp16 to float64
    about twice as fast as to float32; both are exact)."""
    if chunk.dtype == np.float16 and work == np.float32:
        return chunk.astype(np.float64).astype(np.float32)
    return chunk.astype(work)


def _block_params(w_min, w_max, mode, lo, hi, dtype):
    """(scale in the weight's dtype, zero point as float64, code limits (lo', hi') for the
    clip: scalars, or per block where the dtype's edge needs them) of each block from its range."""
    w_min, w_max = w_min.astype(np.float64), w_max.astype(np.float64)
    if mode == "linear_symmetric":
        r = np.maximum(-w_min, w_max)
        a, b = -r, r
        zp = np.full(r.shape, 0 if lo < 0 else (hi - lo) // 2, np.float64)
    else:
        a, b = np.minimum(w_min, 0.0), np.maximum(w_max, 0.0)
        zp = np.clip(np.round(_zero_point(a, b, lo, hi)), lo, hi)
    scale = _store_scale(a, b, lo, hi, zp, dtype)
    return scale, zp, _code_limits(scale, zp, lo, hi)


def _zero_point(a, b, lo, hi):
    """(lo * b - hi * a) / (b - a), the exact zero point of the range [a, b] (0 when empty);
    ranges whose ends overflow float64 in that formula take it in the form lo - a / step."""
    with np.errstate(over="ignore", invalid="ignore"):
        span = np.where(b > a, b - a, 1.0)
        zp = (lo * b - hi * a) / span
    if np.all(np.isfinite(zp)):
        return zp
    step = np.where(b > a, _step(a, b, lo, hi), 1.0)
    return np.where(np.isfinite(zp), zp, lo - a / step)


def _quantize_chunk(out, x, scale, zp, lo, hi) -> None:
    """out = clip(round_half_even(x / scale) + zp, lo, hi), x (a working copy) overwritten."""
    np.divide(x, scale.astype(x.dtype), out=x)
    np.rint(x, out=x)
    np.add(x, zp.astype(x.dtype), out=x)
    np.clip(x, lo if np.isscalar(lo) else lo.astype(x.dtype),
            hi if np.isscalar(hi) else hi.astype(x.dtype), out=x)
    out[...] = x


def expand_blocks(param: np.ndarray, shape) -> np.ndarray:
    """Repeat a per-block parameter along each axis so it has ``shape``."""
    out = param
    for ax, (n, full) in enumerate(zip(param.shape, shape)):
        if n != full:
            out = np.repeat(out, full // n, axis=ax)
    return out


def affine_dequantize(data: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None = None,
                      *, out_dtype=None) -> np.ndarray:
    """``scale * (data - zero_point)`` for the block layout above, in ``scale``'s dtype by default.

    The kernel of the op the stage emits (``constexpr_blockwise_shift_scale``, ir/ops/quant.py:
    one implementation), run in fp32 (float64 when ``out_dtype`` is float64) and rounded once to
    ``out_dtype``.  A 0-d scale / zero point is one block for the whole weight."""
    out_dtype = np.dtype(out_dtype or scale.dtype)
    work = np.float64 if out_dtype == np.float64 else np.float32
    as_blocks = lambda p: np.asarray(p).reshape((1,) * data.ndim) if np.ndim(p) == 0 else np.asarray(p)  # noqa: E731
    offset = None if zero_point is None else as_blocks(zero_point).astype(work)
    return blockwise_shift_scale(data, as_blocks(scale).astype(work), offset).astype(out_dtype, copy=False)
