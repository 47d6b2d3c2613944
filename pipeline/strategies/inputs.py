"""Hypothesis strategies for program inputs, so users can write their own property tests.

    from hypothesis import given
    from pipeline.strategies import inputs_for

    @given(inputs_for(prog))
    def test_same(inputs):
        np.testing.assert_allclose(evaluate(new, inputs)[o], evaluate(prog, inputs)[o], ...)

Small tensors are drawn element by element (hypothesis shrinks each value);
large ones from a drawn seed and scale, so drawing stays fast while the
scale still shrinks towards small values.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ir import Program, TensorType
from ir.dtypes import dtype as lookup_dtype

ELEMENTWISE_LIMIT = 64  # tensors up to this many elements are drawn element by element
FLOAT_BOUND = 4.0
INT_BOUND = 100
SYMBOL_SIZES = st.integers(min_value=1, max_value=4)


def _int_range(dt) -> tuple:
    return max(dt.min, -INT_BOUND), min(dt.max, INT_BOUND)


def _elements(dt, bound: float):
    if dt.kind == "float":
        width = {16: 16, 32: 32}.get(dt.bits, 64)
        return st.floats(-bound, bound, width=width, allow_nan=False, allow_infinity=False)
    if dt.kind == "bool":
        return st.booleans()
    lo, hi = _int_range(dt)
    return st.integers(lo, hi)


def _from_seed(dt, shape: tuple, seed: int, scale: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dt.kind == "float":
        return (rng.standard_normal(shape) * scale).astype(dt.storage)
    if dt.kind == "bool":
        return rng.random(shape) < 0.5
    lo, hi = _int_range(dt)
    return rng.integers(lo, hi + 1, size=shape).astype(dt.storage)


def tensors(tensor_type: TensorType, sizes: dict | None = None, bound: float = FLOAT_BOUND):
    """Arrays of the given TensorType (symbolic dims sized from `sizes`, default 2)."""
    dt = lookup_dtype(tensor_type.dtype)
    if dt.kind == "string":
        raise ValueError(f"no strategy for string tensors ({tensor_type})")
    shape = tuple(d if isinstance(d, int) else (sizes or {}).get(d, 2) for d in tensor_type.shape)
    size = int(np.prod(shape, dtype=np.int64))
    if size <= ELEMENTWISE_LIMIT and dt.name != "bf16":  # numpy has no native bf16 for hypothesis
        return hnp.arrays(dt.storage, shape, elements=_elements(dt, bound))
    scales = st.floats(0.0, bound, allow_nan=False).map(lambda s: s / 2)
    return st.builds(lambda seed, scale: _from_seed(dt, shape, seed, scale),
                     st.integers(0, 2**32 - 1), scales)


@st.composite
def _inputs(draw, fn, bound: float):
    symbols = sorted({d for v in fn.inputs for d in v.shape if isinstance(d, str)})
    sizes = {s: draw(SYMBOL_SIZES) for s in symbols}
    return {v.name: draw(tensors(v.type, sizes, bound)) for v in fn.inputs}


def inputs_for(program: Program, function: str = "main", bound: float = FLOAT_BOUND):
    """A strategy of {input name: array} for `function` of `program`."""
    if function not in program.functions:
        raise ValueError(f"inputs_for: no function {function!r} (have {sorted(program.functions)})")
    return _inputs(program.functions[function], bound)


__all__ = ["inputs_for", "tensors", "ELEMENTWISE_LIMIT"]
