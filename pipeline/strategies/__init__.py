"""Hypothesis strategies for property tests of programs and stages.

- `inputs`: runtime inputs for a program's function (`inputs_for`, `tensors`), inside
  the domain the graph implies (`domain`: token ids below their table size, 0/1 masks).
- `programs`: whole programs, the patterns each quantization pass matches
  (`quantization_programs`, `pattern_programs(name)`, `example_program(name, seed)`).
- `weights`: float weights with the hard cases (`weight_arrays`) and models whose
  weights the compression stages compress (`weight_models`, `example_model(seed)`).
- `choices`: the two engines the generators run on (hypothesis draws, or a seeded
  numpy Generator for deterministic examples).

    from hypothesis import given
    from pipeline.strategies import inputs_for, quantization_programs, weight_models
"""
from pipeline.strategies.domain import Domain, input_domains, size_candidates
from pipeline.strategies.inputs import (ELEMENTWISE_LIMIT, FLOAT_BOUND, INT_BOUND, SYMBOL_SIZES,
                                        example, inputs_for, symbols_of, tensors)
from pipeline.strategies.programs import PATTERNS, example_program, pattern_programs, quantization_programs
from pipeline.strategies.weights import (WEIGHT_CASES, example_model, weight_array, weight_arrays, weight_model,
                                         weight_models)

__all__ = ["inputs_for", "tensors", "symbols_of", "example", "Domain", "input_domains", "size_candidates",
           "ELEMENTWISE_LIMIT", "FLOAT_BOUND", "INT_BOUND", "SYMBOL_SIZES",
           "PATTERNS", "example_program", "pattern_programs", "quantization_programs",
           "WEIGHT_CASES", "example_model", "weight_array", "weight_arrays", "weight_model", "weight_models"]
