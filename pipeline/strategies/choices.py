"""One source of random choices for the program and weight generators, two engines.

A generator is a plain function `gen(c) -> Program` (or array) that asks a chooser `c`
for everything it varies: `c.pick(seq)`, `c.integer(lo, hi)`, `c.boolean()`,
`c.seed()`, `c.floats(shape, ...)`, and names the structural cases it chose with
`c.tag("zp:near_flip")` (recorded, never a choice). The same generator then serves

- hypothesis (`HypothesisChooser(draw)`, through `strategy_of(gen)`): every choice is
  drawn, so failures shrink towards the first entries and small numbers;
- fixed examples (`RngChooser(seed)`, through `example_of(gen, seed)`): a numpy
  Generator makes the same program for the same seed in every process, which is what
  a harness that must not change between runs needs (hypothesis' `.example()` is
  neither deterministic nor meant for that).

The tags let a fixed harness pick seeds that cover every case a generator can make
(`tagged_example(gen, seed) -> (value, tags)`), instead of whichever seeds come first.

Large arrays are drawn from a seeded numpy Generator in both engines: drawing hundreds
of floats one by one through hypothesis is slow and shrinks poorly.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from hypothesis import strategies as st


class RngChooser:
    """Choices from a numpy Generator (deterministic for a seed)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.tags: set = set()

    def tag(self, name: str) -> None:
        self.tags.add(name)

    def pick(self, seq: Sequence):
        return seq[int(self.rng.integers(len(seq)))]

    def integer(self, lo: int, hi: int) -> int:
        return int(self.rng.integers(lo, hi + 1))

    def boolean(self) -> bool:
        return bool(self.rng.integers(2))

    def seed(self) -> int:
        return int(self.rng.integers(0, 2**32 - 1))


class HypothesisChooser:
    """Choices drawn by hypothesis (shrinkable)."""

    def __init__(self, draw):
        self.draw = draw
        self.tags: set = set()

    def tag(self, name: str) -> None:
        self.tags.add(name)

    def pick(self, seq: Sequence):
        return self.draw(st.sampled_from(list(seq)))

    def integer(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def boolean(self) -> bool:
        return self.draw(st.booleans())

    def seed(self) -> int:
        return self.draw(st.integers(0, 2**32 - 1))


def rng_of(c) -> np.random.Generator:
    """A numpy Generator for the bulk data of one array, seeded by a choice of c."""
    return np.random.default_rng(c.seed())


def normal(c, shape, dtype=np.float32, scale: float = 1.0) -> np.ndarray:
    return (rng_of(c).standard_normal(shape) * scale).astype(dtype)


def integers(c, shape, lo: int, hi: int, dtype) -> np.ndarray:
    """Uniform integers in [lo, hi] (both included)."""
    return rng_of(c).integers(lo, hi, size=shape, endpoint=True).astype(dtype)


def strategy_of(gen: Callable):
    """The hypothesis strategy drawing gen(HypothesisChooser)."""
    return st.composite(lambda draw: gen(HypothesisChooser(draw)))()


def example_of(gen: Callable, seed: int):
    """gen's deterministic example for seed."""
    return gen(RngChooser(seed))


def tagged_example(gen: Callable, seed: int) -> tuple:
    """(gen's deterministic example for seed, the frozenset of tags it chose)."""
    c = RngChooser(seed)
    return gen(c), frozenset(c.tags)
