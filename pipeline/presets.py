"""Named pipelines, as data: preset name -> pipeline spec text.

Presets refer to stages by name only; resolving a preset whose stage is
missing raises a PresetError naming both. `Pipeline.preset(name)` resolves one
(this table knows nothing of pipelines, so the import points one way).
"""
from __future__ import annotations

from types import MappingProxyType

from pipeline.errors import PresetError
from stages.quantization.preset import SEED_PASS_ORDER

# The seed's quantization canonicalization, one pass per step in the order the
# stages hold (stages.quantization.SEED_PASS_ORDER; pipeline -> stages is the
# allowed direction): one sweep whose trace shows each pass. The registered
# stage `canonicalize_quantization` runs the same order to a fixed point as one step.
_CANONICALIZE_QUANTIZATION = ",".join(SEED_PASS_ORDER)

# sparse-50 in the seed's own parameter names: zero exactly the half of each
# weight with the smallest magnitudes
_SPARSE_50 = 'sparsify_weights{mode="percentile_based",target_percentile=0.5}'

PRESETS = MappingProxyType({
    "canonicalize_quantization": _CANONICALIZE_QUANTIZATION,
    "int8": 'affine_quantize_weights{dtype="int8",granularity="per_channel",mode="linear_symmetric"}',
    "int4-block32": 'affine_quantize_weights{block_size=32,dtype="int4",granularity="per_block",'
                    'mode="linear_symmetric"}',
    "palettize-4bit": 'palettize_weights{mode="kmeans",nbits=4}',
    "palettize-4bit-grouped": 'palettize_weights{granularity="per_grouped_channel",group_size=16,'
                              'mode="kmeans",nbits=4}',
    "sparse-50": _SPARSE_50,
    "sparse+palettize": _SPARSE_50 + ',palettize_weights{mode="kmeans",nbits=4}',
})


def names() -> list:
    return sorted(PRESETS)


def spec_of(name: str) -> str:
    try:
        return PRESETS[name]
    except KeyError:
        raise PresetError(f"unknown preset {name!r}; known: {', '.join(names())}") from None
