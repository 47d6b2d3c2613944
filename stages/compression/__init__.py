"""Weight compression stages: affine quantization, palettization, sparsification, decompression; set_target
raises a Core ML model's deployment target (the forms the stages may emit).

Each is a curried, checked Stage (``palettize_weights(nbits=4)`` is a stage;
``palettize_weights(nbits=5)`` raises at once). They accept an op_selector
(a callable on a WeightView) or an OptimizationConfig (global / op type / op
name, name > type > global, None skips), record per-weight statistics, and
compose as joint compression (palettize or quantize after sparsify, quantize
after palettize).
"""
from stages.compression.config import ConfigError, OptimizationConfig
from stages.compression.checked import ParameterError
from stages.compression.numeric.errors import CompressionError, NotCompressible
from stages.compression.weights import WeightView, default_selector
from stages.compression.affine import affine_quantize_weights
from stages.compression.palettize import palettize_weights
from stages.compression.sparsify import sparsify_weights
from stages.compression.decompress import decompress_weights
from stages.compression.target import set_target
from stages.compression.mixed_precision import mixed_precision

__all__ = ["affine_quantize_weights", "palettize_weights", "sparsify_weights", "decompress_weights", "set_target", "mixed_precision",
           "OptimizationConfig", "ConfigError", "ParameterError",
           "CompressionError", "NotCompressible", "WeightView", "default_selector"]

# the calibrated stages (they read the statistics stages.calibration.calibrate attaches)
from stages.compression.gptq import gptq_palettize_weights, gptq_quantize_weights  # noqa: E402
from stages.compression.weighted_palettize import weighted_palettize_weights  # noqa: E402

__all__ += ["gptq_quantize_weights", "gptq_palettize_weights", "weighted_palettize_weights"]

# AWQ: per-input-channel scales folded exactly into each weight's producer (before a quantizer)
from stages.compression.awq import awq_scale_weights  # noqa: E402

__all__ += ["awq_scale_weights"]
