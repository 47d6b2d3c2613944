"""Named pipelines, as data: preset name -> pipeline spec text.

Presets refer to stages by name only, so this table loads even before every
stage it mentions exists; resolving a preset whose stage is missing raises a
PresetError naming both.
"""
from __future__ import annotations

from types import MappingProxyType

# The seed's quantization canonicalization, one pass per step in the order of
# stages.quantization.SEED_PASS_ORDER (kept as text so this table loads without
# the stages): one sweep whose trace shows each pass. The registered stage
# `canonicalize_quantization` runs the same order to a fixed point as one step.
_CANONICALIZE_QUANTIZATION = ",".join([
    "int_op_canonicalization",
    "nullify_redundant_quantization_zero_point",
    "dequantize_quantize_pair_elimination",
    "distributive_quantized_binary_op_scale_normalization",
    "dequantize_to_constexpr",
    "reorder_lut_per_channel_scale",
    "canonicalize_quantized_lut_pattern",
    "dead_code_elimination",
    "merge_affine_dequantize_with_consecutive_ops",
    "dead_code_elimination",
])

PRESETS = MappingProxyType({
    "canonicalize_quantization": _CANONICALIZE_QUANTIZATION,
    "int8": 'affine_quantize_weights{dtype="int8",granularity="per_channel",mode="linear_symmetric"}',
    "int4-block32": 'affine_quantize_weights{block_size=32,dtype="int4",granularity="per_block",'
                    'mode="linear_symmetric"}',
    "palettize-4bit": 'palettize_weights{mode="kmeans",nbits=4}',
    "palettize-4bit-grouped": 'palettize_weights{granularity="per_grouped_channel",group_size=16,'
                              'mode="kmeans",nbits=4}',
    "sparse-50": 'sparsify_weights{target_sparsity=0.5}',
    "sparse+palettize": 'sparsify_weights{target_sparsity=0.5},palettize_weights{mode="kmeans",nbits=4}',
})


def names() -> list:
    return sorted(PRESETS)


def spec_of(name: str) -> str:
    from pipeline.errors import PresetError

    try:
        return PRESETS[name]
    except KeyError:
        raise PresetError(f"unknown preset {name!r}; known: {', '.join(names())}") from None


def get(name: str):
    """The preset as a Pipeline (resolving its stages now)."""
    from pipeline.core import Pipeline

    return Pipeline.preset(name)
