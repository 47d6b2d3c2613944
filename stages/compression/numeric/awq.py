"""AWQ's scale search (Lin et al. 2023, "AWQ: Activation-aware Weight Quantization"), as
numbers: which per-input-channel scale s makes a weight cheapest to quantize afterwards.

A linear layer y = x W^T computes the same function as y = (x / s) (W diag(s))^T for any
positive s (one entry per input channel). The quantizer then rounds W' = W diag(s) instead of
W; channels with large activations, scaled up, get a relatively finer grid, at the expense
of the others. What it costs at the output is measured in the original units: with
Q' the quantized W', the output error is x (diag(1/s) (W' - Q')^T), so the proxy is

    L(s) = tr(E H E^T),   E = (Q' - W') diag(1/s),   H = X^T X / n  (the calibration gram)

(without a gram: sum_c E[x_c^2] |E[:, c]|^2, its diagonal). Several weights reading the same
input (a shared-input group: query, key and value after one normalisation) share one s; their
losses add. When the producer is itself a weight quantized afterwards (the value projection
before the output projection), its own rounding error at its output joins the sum
(``Producer``): its rows are divided by s, which a per-channel or per-block grid follows
exactly but a LUT shared by several rows does not.

The candidates are AWQ's: s_c = m_c^(alpha / 2) with m_c = E[x_c^2] (so s_c = RMS(x_c)^alpha),
normalised by sqrt(max s * min s), for alpha on a grid of [0, 1]; alpha = 0 is s = 1, so the
chosen scale never has a higher proxy than no scaling. The quantizer is plain rounding to the
target grid the weight will be put on afterwards (``Target``: int4 / uint4 per block, int4 / int8
per channel, or an activation-weighted k-means LUT per tensor or per group of output channels): AWQ's own
search, independent of whether GPTQ then chooses the codes.

``Reader``: one weight of a group as [outputs, inputs] (float64), the producer channel each of
its input channels carries (``index``: the scale of input channel j is s[index[j]]), its gram
(or None) and input moments, and its target. ``search(readers, channels, alphas)`` returns
the best alpha, its scale over the producer's channels and the loss of every alpha.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import numpy as np

from .affine import affine_quantize, expand_blocks
from .weighted import weighted_luts

TARGETS = ("int4_block", "uint4_block", "int4_channel", "int8_channel", "lut")
# target -> (mode, dtype, granularity) of affine_quantize
_AFFINE = {"int4_block": ("linear_symmetric", "int4", "per_block"),
           "uint4_block": ("linear", "uint4", "per_block"),
           "int4_channel": ("linear_symmetric", "int4", "per_channel"),
           "int8_channel": ("linear_symmetric", "int8", "per_channel")}
# the range a scale is kept in (a channel never seen non-zero would otherwise get s -> 0)
SCALE_RANGE = (1e-4, 1e4)


class Target(NamedTuple):
    kind: str = "int4_block"
    block_size: int = 32      # per-block targets: the largest divisor of the input dim <= this
    nbits: int = 4            # lut
    group_size: int = 16      # lut: output channels per LUT (the largest divisor of the rows <= this; 0: one LUT)
    method: str = "rounding"  # how the codes are chosen on that grid: "rounding" (AWQ's) or "gptq"


class Reader(NamedTuple):
    matrix: np.ndarray            # [outputs, inputs], the weight as stored (its dtype)
    index: np.ndarray             # [inputs], int: the producer channel of each input channel
    moment: np.ndarray            # [inputs], E[x_j^2] of the weight's input
    gram: Optional[np.ndarray]    # [inputs, inputs] or None
    target: Target


class Search(NamedTuple):
    alpha: float
    scale: np.ndarray             # [channels], float64
    losses: tuple                 # (alpha, loss) for every alpha tried


def largest_divisor(n: int, at_most: int) -> int:
    return next(d for d in range(min(at_most, n), 0, -1) if n % d == 0)


def floored(moment: np.ndarray) -> np.ndarray:
    """Moments floored at 1e-6 of their mean (stats.importance's rule): a channel never seen
    non-zero (a dead relu) still weighs a little, and gets a finite scale."""
    m = np.asarray(moment, np.float64)
    mean = float(m.mean()) if m.size else 0.0
    return np.maximum(m, 1e-6 * mean if mean > 0 else 1.0)


def channel_scales(moment: np.ndarray, alpha: float) -> np.ndarray:
    """AWQ's candidate: m^(alpha/2), normalised so that max * min = 1, kept in SCALE_RANGE."""
    s = floored(moment) ** (alpha / 2.0)
    s = s / np.sqrt(s.max() * s.min())
    return np.clip(s, *SCALE_RANGE)


def rounded(m: np.ndarray, target: Target, importance: np.ndarray) -> np.ndarray:
    """The reconstruction of m [outputs, inputs] (its dtype) rounded to the target (float64);
    `importance` [inputs] weighs the LUT's k-means (E[x'_j^2] of the input it multiplies)."""
    if target.kind in _AFFINE:
        mode, dtype, granularity = _AFFINE[target.kind]
        block = largest_divisor(m.shape[1], target.block_size) if granularity == "per_block" else None
        q = affine_quantize(m, mode=mode, dtype=dtype, granularity=granularity, axis=0, block_size=block,
                            input_axis=1)
        scale = expand_blocks(q.scale.astype(np.float64), m.shape)
        zp = expand_blocks(q.zero_point.astype(np.float64), m.shape)
        return (q.data.astype(np.float64) - zp) * scale
    per = m.shape[0] if target.group_size == 0 else largest_divisor(m.shape[0], target.group_size)
    luts, idx = weighted_luts(m, target.nbits, m.shape[0] // per, importance[None, :], m.dtype)
    rows = np.arange(m.shape[0]) // per
    return np.asarray(luts, np.float64)[rows[:, None], idx]


def gptq_rounded(m: np.ndarray, target: Target, importance: np.ndarray, gram: np.ndarray) -> np.ndarray:
    """The reconstruction GPTQ gives m on the target's grid / LUT (gptq_quantize_weights /
    gptq_palettize_weights with their defaults), against the gram of m's input."""
    from .affine import _code_limits, quant_range
    from .gptq import affine_quantizer, gptq, lut_quantizer

    if target.kind in _AFFINE:
        mode, dtype, granularity = _AFFINE[target.kind]
        block = largest_divisor(m.shape[1], target.block_size) if granularity == "per_block" else None
        q = affine_quantize(m, mode=mode, dtype=dtype, granularity=granularity, axis=0, block_size=block,
                            input_axis=1)
        lo, hi = _code_limits(q.scale, q.zero_point.astype(np.float64), *quant_range(dtype, mode))
        full = lambda a: a if np.isscalar(a) else expand_blocks(np.asarray(a), m.shape)  # noqa: E731
        quantize = affine_quantizer(full(q.scale), full(q.zero_point), full(lo), full(hi), m.dtype)
    else:
        per = m.shape[0] if target.group_size == 0 else largest_divisor(m.shape[0], target.group_size)
        luts, _ = weighted_luts(m, target.nbits, m.shape[0] // per, importance[None, :], m.dtype)
        quantize = lut_quantizer(luts, np.arange(m.shape[0]) // per)
    return gptq(m, gram, quantize, with_loss=False).reconstruction


def reader_loss(r: Reader, s: np.ndarray) -> float:
    """L(s) of one reader (module docstring) for the producer-channel scale s."""
    st = np.asarray(s, np.float64)[r.index]
    scaled = (np.asarray(r.matrix, np.float64) * st[None, :]).astype(r.matrix.dtype)  # W' as it will be stored
    importance = floored(r.moment) / (st * st)  # E[x'^2] of the scaled input: the LUT's k-means weights
    if r.target.method == "gptq" and r.gram is not None:
        recon = gptq_rounded(scaled, r.target, importance, r.gram / np.outer(st, st))
    else:
        recon = rounded(scaled, r.target, importance)
    e = (recon - scaled.astype(np.float64)) / st[None, :]
    if r.gram is not None:
        return float(np.einsum("ij,ij->", e @ r.gram, e))
    return float(np.asarray(r.moment, np.float64) @ np.einsum("ij,ij->j", e, e))


class Producer(NamedTuple):
    """The producer's own weight, when it is quantized afterwards too: [outputs, inputs] with
    its output channels (rows) the producer channels the scale divides."""
    matrix: np.ndarray
    moment: np.ndarray            # [inputs], of its own (unchanged) input
    gram: Optional[np.ndarray]
    target: Target


def producer_loss(p: Producer, s: np.ndarray) -> float:
    """The producer's rounding error at its output, in the original units: its rows divided by s
    are rounded to the target, the error multiplied back by s. Per-channel and per-block grids
    along its input axis scale with each row, so this is the same for every s up to float
    rounding; a LUT shared by several rows is not, and the search must see what it costs."""
    s = np.asarray(s, np.float64)[:, None]
    scaled = (np.asarray(p.matrix, np.float64) / s).astype(p.matrix.dtype)
    if p.target.method == "gptq" and p.gram is not None:
        recon = gptq_rounded(scaled, p.target, floored(p.moment), p.gram)
    else:
        recon = rounded(scaled, p.target, floored(p.moment))
    e = (recon - scaled.astype(np.float64)) * s
    if p.gram is not None:
        return float(np.einsum("ij,ij->", e @ p.gram, e))
    return float(np.asarray(p.moment, np.float64) @ np.einsum("ij,ij->j", e, e))


def producer_moment(readers: Sequence[Reader], channels: int) -> np.ndarray:
    """E[x_c^2] per producer channel: the mean over the readers' input channels that carry it
    (a shared input is seen by every reader alike). A channel no reader sees gets the
    geometric mean of the others, so its scale stays near 1."""
    total, count = np.zeros(channels), np.zeros(channels)
    for r in readers:
        total += np.bincount(r.index, weights=np.asarray(r.moment, np.float64), minlength=channels)
        count += np.bincount(r.index, minlength=channels)
    seen = count > 0
    m = np.where(seen, total / np.maximum(count, 1), 0.0)
    if not seen.all():
        pos = m[seen & (m > 0)]
        m[~seen] = float(np.exp(np.mean(np.log(pos)))) if pos.size else 1.0
    return m


def alpha_grid(points: int) -> np.ndarray:
    """0, 1/points, ..., 1."""
    return np.round(np.linspace(0.0, 1.0, int(points) + 1), 6)


def search(readers: Sequence[Reader], channels: int, alphas: Sequence[float],
           producer: Optional[Producer] = None) -> Search:
    """The alpha (and scale) with the lowest summed loss (the readers', and the producer's own
    when it is given); ties go to the smaller alpha."""
    m = producer_moment(readers, channels)
    losses, best = [], None
    for a in alphas:
        s = channel_scales(m, float(a))
        loss = sum(reader_loss(r, s) for r in readers) + (producer_loss(producer, s) if producer else 0.0)
        losses.append((float(a), float(loss)))
        if best is None or loss < best[1]:
            best = (float(a), loss, s)
    return Search(best[0], best[2], tuple(losses))
