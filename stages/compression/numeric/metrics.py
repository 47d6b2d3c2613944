"""Error figures: the one definition of max abs error, SNR and cosine, and of their edge cases.

Everything that reports how far an approximation is from a reference calls this module:
the compression stages (per weight, through stages.compression.figures, whose chunked fp32
engine feeds `snr_db_from_sums`), `weightpress compress`'s table (pipeline.report) and
`verify` (per output, accumulated over samples with `Sums`).

Definitions, with r the reference and a the approximation, sums over every element:

    max_abs_error = max |r - a|                     (0 for empty arrays)
    snr_db        = 10 log10(sum r^2 / sum (r - a)^2)
    cosine        = sum r a / sqrt(sum r^2 * sum a^2)
    mse           = mean (r - a)^2

Edge cases, decided here once (a table, in this order):

    snr_db:  noise == 0                  -> +inf  (exact, whatever the signal, zero included)
             signal or noise NaN          -> NaN
             signal == 0 or noise == inf  -> -inf  (all noise)
             signal == inf                -> +inf
             otherwise the ratio, an underflow to 0 -> -inf and an overflow -> +inf
    cosine:  either sum NaN               -> NaN
             both vectors zero            -> 1.0 (identical)
             one of them zero             -> 0.0
             otherwise clipped to [-1, 1]
    NaN in r - a makes max_abs_error NaN (it sticks: a NaN is never hidden by a larger
    finite error); with `equal_nan=True` (what verify uses) the positions where r and a
    are both NaN, or the same infinity, count as exact and are left out of every sum.

Sizes (packed_nbytes, total_nbytes) live here too: the other figures a stage records.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


# ---- the scalar definitions ------------------------------------------------------

def snr_db_from_sums(signal: float, noise: float) -> float:
    """10 log10(signal / noise) with the edge cases of the module docstring."""
    signal, noise = float(signal), float(noise)
    if noise == 0.0:
        return math.inf
    if math.isnan(signal) or math.isnan(noise):
        return math.nan
    if signal == 0.0 or math.isinf(noise):
        return -math.inf
    if math.isinf(signal):
        return math.inf
    ratio = signal / noise
    if ratio == 0.0:
        return -math.inf
    return math.inf if math.isinf(ratio) else 10.0 * math.log10(ratio)


def cosine_from_sums(dot: float, ref2: float, approx2: float) -> float:
    """sum r a / sqrt(sum r^2 sum a^2) with the edge cases of the module docstring."""
    dot, ref2, approx2 = float(dot), float(ref2), float(approx2)
    if math.isnan(dot) or math.isnan(ref2) or math.isnan(approx2):
        return math.nan
    if ref2 == 0.0 and approx2 == 0.0:
        return 1.0
    if ref2 == 0.0 or approx2 == 0.0:
        return 0.0
    denominator = math.sqrt(ref2) * math.sqrt(approx2)  # not sqrt(ref2 * approx2): no overflow
    if math.isinf(denominator):
        return math.nan if math.isinf(dot) else 0.0
    return max(-1.0, min(1.0, dot / denominator))


# ---- accumulation ---------------------------------------------------------------

@dataclass(frozen=True)
class Sums:
    """What the figures are made of, over any number of arrays (samples, chunks): add two
    with `+`. Float64 sums; worst is NaN once any difference was NaN."""
    count: int = 0
    signal: float = 0.0   # sum r^2
    noise: float = 0.0    # sum (r - a)^2
    worst: float = 0.0    # max |r - a|
    dot: float = 0.0      # sum r a
    approx2: float = 0.0  # sum a^2

    def __add__(self, other: "Sums") -> "Sums":
        return Sums(self.count + other.count, self.signal + other.signal, self.noise + other.noise,
                    _worst(self.worst, other.worst), self.dot + other.dot, self.approx2 + other.approx2)

    @property
    def snr_db(self) -> float:
        return snr_db_from_sums(self.signal, self.noise)

    @property
    def max_abs_error(self) -> float:
        return self.worst

    @property
    def cosine(self) -> float:
        return cosine_from_sums(self.dot, self.signal, self.approx2)

    @property
    def mse(self) -> float:
        return self.noise / self.count if self.count else 0.0


def _worst(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return max(a, b)


def sums(reference, approx, equal_nan: bool = False) -> Sums:
    """The Sums of one pair of arrays of the same number of elements (float64)."""
    r = np.asarray(reference, np.float64).ravel()
    a = np.asarray(approx, np.float64).ravel()
    if r.size != a.size:
        raise ValueError(f"error figures: reference has {r.size} elements, approximation {a.size}")
    if equal_nan:
        same = ~np.isfinite(r) & ((r == a) | (np.isnan(r) & np.isnan(a)))
        if same.any():
            r, a = r[~same], a[~same]
    with np.errstate(over="ignore", invalid="ignore"):
        d = r - a
        worst = float(np.max(np.abs(d))) if d.size else 0.0  # np.max propagates NaN
        return Sums(int(r.size), float(np.sum(r * r)), float(np.sum(d * d)), worst,
                    float(np.sum(r * a)), float(np.sum(a * a)))


# ---- whole-array figures -------------------------------------------------------------

class ErrorFigures(NamedTuple):
    snr_db: float         # 10 log10(sum w^2 / sum (w - r)^2); inf when exact
    max_abs_error: float
    mse: float


def snr_db(weight, reconstruction) -> float:
    s = sums(weight, reconstruction)
    return s.snr_db


def max_abs_error(weight, reconstruction) -> float:
    return sums(weight, reconstruction).worst


def cosine(reference, approx) -> float:
    return sums(reference, approx).cosine


def error_figures(weight, reconstruction) -> ErrorFigures:
    """The float64 reference figures of a reconstruction (stages use the faster chunked
    engine of stages.compression.figures, tested against this)."""
    if np.shape(weight) != np.shape(reconstruction):
        raise ValueError(f"shape mismatch {np.shape(weight)} vs {np.shape(reconstruction)}")
    s = sums(weight, reconstruction)
    return ErrorFigures(s.snr_db, s.worst, s.mse)


# ---- sizes -----------------------------------------------------------------------------

def packed_nbytes(num_elements: int, bits: int) -> int:
    """Bytes to store ``num_elements`` values of ``bits`` bits each, bit-packed."""
    return (int(num_elements) * int(bits) + 7) // 8


def total_nbytes(*parts) -> int:
    """Sum of packed sizes; each part is an array (its itemsize) or (num_elements, bits)."""
    total = 0
    for p in parts:
        total += p.nbytes if isinstance(p, np.ndarray) else packed_nbytes(*p)
    return total
