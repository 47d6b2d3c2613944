"""Hypothesis strategies for program inputs, so users can write their own property tests.

    from hypothesis import given
    from pipeline.strategies import inputs_for

    @given(inputs_for(prog))
    def test_same(inputs):
        np.testing.assert_allclose(evaluate(new, inputs)[o], evaluate(prog, inputs)[o], ...)

Small tensors are drawn element by element (hypothesis shrinks each value);
large ones from a drawn seed and scale, so drawing stays fast while the
scale still shrinks towards small values.

Inputs respect the model's domain (pipeline.strategies.domain): token ids stay
inside the embedding tables they index, masks are 0/1 with ones first in each row.
Symbolic dimensions take the sizes given in `dims` ({"sequence": 16}), else a small
drawn size (SYMBOL_SIZES).
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ir import Program, TensorType
from ir.dtypes import dtype as lookup_dtype
from pipeline.strategies.domain import Domain, input_domains

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


def _mask(dt, shape: tuple, lengths: np.ndarray) -> np.ndarray:
    """1 where the position along the last axis is below its row's length, else 0."""
    if not shape:
        return np.ones((), dt.storage)
    return (np.arange(shape[-1]) < lengths[..., None]).astype(dt.storage)


def _choice(dt, shape: tuple, value: int) -> np.ndarray:
    return np.full(shape, value, dt.storage)


def _domain_tensors(dt, shape: tuple, domain: Domain, size: int):
    if domain.kind == "choice":  # every element one value: the model's switch takes one of its paths
        return st.sampled_from(domain.values).map(lambda value: _choice(dt, shape, value))
    if domain.kind == "index":
        high = min(domain.high, dt.max + 1)  # an int8 index into a 1000-row table: all int8 >= 0
        if size <= ELEMENTWISE_LIMIT:
            return hnp.arrays(dt.storage, shape, elements=st.integers(0, high - 1))
        return st.integers(0, 2**32 - 1).map(
            lambda seed: np.random.default_rng(seed).integers(0, high, size=shape).astype(dt.storage))
    rows, last = shape[:-1], (shape[-1] if shape else 1)
    if last == 0:
        return st.just(np.zeros(shape, dt.storage))
    # row lengths shrink towards full rows (all ones), the mask of an unpadded batch
    lengths = hnp.arrays(np.int64, rows, elements=st.integers(1, last).map(lambda k: last + 1 - k))
    return lengths.map(lambda n: _mask(dt, shape, n))


def tensors(tensor_type: TensorType, sizes: dict | None = None, bound: float = FLOAT_BOUND,
            domain: Domain | None = None):
    """Arrays of the given TensorType (symbolic dims sized from `sizes`, default 2), inside
    `domain` when given (pipeline.strategies.domain)."""
    dt = lookup_dtype(tensor_type.dtype)
    if dt.kind == "string":
        raise ValueError(f"no strategy for string tensors ({tensor_type})")
    shape = tuple(d if isinstance(d, int) else (sizes or {}).get(d, 2) for d in tensor_type.shape)
    size = int(np.prod(shape, dtype=np.int64))
    if domain is not None and dt.name != "bf16" and (domain.kind == "mask" or dt.is_integer):
        return _domain_tensors(dt, shape, domain, size)
    if size <= ELEMENTWISE_LIMIT and dt.name != "bf16":  # numpy has no native bf16 for hypothesis
        return hnp.arrays(dt.storage, shape, elements=_elements(dt, bound))
    scales = st.floats(0.0, bound, allow_nan=False).map(lambda s: s / 2)
    return st.builds(lambda seed, scale: _from_seed(dt, shape, seed, scale),
                     st.integers(0, 2**32 - 1), scales)


def example(fn, sizes: dict, domains: dict, seed: int = 0) -> dict:
    """One deterministic sample of a function's inputs (no hypothesis): symbolic dims from
    `sizes` (default 2), values inside `domains`; verify probes dim sizes with it."""
    rng = np.random.default_rng(seed)
    out = {}
    for v in fn.inputs:
        dt = lookup_dtype(v.type.dtype)
        shape = tuple(d if isinstance(d, int) else sizes.get(d, 2) for d in v.type.shape)
        domain = domains.get(v.name)
        if domain is not None and domain.kind == "index" and dt.is_integer:
            out[v.name] = rng.integers(0, min(domain.high, dt.max + 1), size=shape).astype(dt.storage)
        elif domain is not None and domain.kind == "choice" and dt.is_integer:
            out[v.name] = _choice(dt, shape, domain.values[int(rng.integers(0, len(domain.values)))])
        elif domain is not None and domain.kind == "mask":
            lengths = rng.integers(1, shape[-1] + 1, size=shape[:-1]) if shape and shape[-1] else np.ones(())
            out[v.name] = _mask(dt, shape, lengths) if shape and shape[-1] else np.ones(shape, dt.storage)
        else:
            out[v.name] = _from_seed(dt, shape, int(rng.integers(0, 2**32)), 1.0)
    return out


def symbols_of(fn) -> list:
    """The symbolic dimension names of a function's inputs, sorted."""
    return sorted({d for v in fn.inputs for d in v.shape if isinstance(d, str)})


@st.composite
def _inputs(draw, fn, bound: float, dims: dict, domains: dict):
    sizes = {s: dims[s] if s in dims else draw(SYMBOL_SIZES) for s in symbols_of(fn)}
    return {v.name: draw(tensors(v.type, sizes, bound, domains.get(v.name))) for v in fn.inputs}


def inputs_for(program: Program, function: str = "main", bound: float = FLOAT_BOUND, dims=None,
               domains=None):
    """A strategy of {input name: array} for `function` of `program`. dims: symbolic dim
    name -> size (the others drawn from SYMBOL_SIZES); domains: input name -> Domain
    (default: read off the graph, pipeline.strategies.domain.input_domains)."""
    if function not in program.functions:
        raise ValueError(f"inputs_for: no function {function!r} (have {sorted(program.functions)})")
    fn = program.functions[function]
    dims = dict(dims or {})
    unknown = sorted(set(dims) - set(symbols_of(fn)))
    if unknown:
        raise ValueError(f"dims: the inputs of {function!r} have no dimension {unknown[0]!r} "
                         f"(symbolic dimensions: {', '.join(symbols_of(fn)) or 'none'})")
    for name, size in dims.items():
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"dims: {name}={size!r}: need a positive integer")
    domains = input_domains(program, function) if domains is None else dict(domains)
    return _inputs(fn, bound, dims, domains)


__all__ = ["inputs_for", "tensors", "symbols_of", "example", "ELEMENTWISE_LIMIT"]
