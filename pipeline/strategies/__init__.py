"""Hypothesis strategies for property tests of programs and stages.

- `inputs`: runtime inputs for a program's function (`inputs_for`, `tensors`).

    from hypothesis import given
    from pipeline.strategies import inputs_for
"""
from pipeline.strategies.inputs import (ELEMENTWISE_LIMIT, FLOAT_BOUND, INT_BOUND, SYMBOL_SIZES,
                                        inputs_for, tensors)

__all__ = ["inputs_for", "tensors", "ELEMENTWISE_LIMIT", "FLOAT_BOUND", "INT_BOUND", "SYMBOL_SIZES"]
