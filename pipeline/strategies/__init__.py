"""Hypothesis strategies for property tests of programs and stages.

- `inputs`: runtime inputs for a program's function (`inputs_for`, `tensors`), inside
  the domain the graph implies (`domain`: token ids below their table size, 0/1 masks).

    from hypothesis import given
    from pipeline.strategies import inputs_for
"""
from pipeline.strategies.domain import Domain, input_domains, size_candidates
from pipeline.strategies.inputs import (ELEMENTWISE_LIMIT, FLOAT_BOUND, INT_BOUND, SYMBOL_SIZES,
                                        example, inputs_for, symbols_of, tensors)

__all__ = ["inputs_for", "tensors", "symbols_of", "example", "Domain", "input_domains", "size_candidates",
           "ELEMENTWISE_LIMIT", "FLOAT_BOUND", "INT_BOUND", "SYMBOL_SIZES"]
