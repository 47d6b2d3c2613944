from stages.quantization.merge_affine_dequantize import merge_affine_dequantize_with_consecutive_ops  # noqa: F401
from stages.quantization.int_op_canonicalization import int_op_canonicalization  # noqa: F401
from stages.quantization.nullify_zero_point import nullify_redundant_quantization_zero_point  # noqa: F401
from stages.quantization.dequantize_quantize_pair import dequantize_quantize_pair_elimination  # noqa: F401
from stages.quantization.distributive_scale_normalization import distributive_quantized_binary_op_scale_normalization  # noqa: E402,F401
from stages.quantization.dequantize_to_constexpr import dequantize_to_constexpr  # noqa: E402,F401
from stages.quantization.reorder_lut_per_channel_scale import reorder_lut_per_channel_scale  # noqa: E402,F401
from stages.quantization.canonicalize_lut_pattern import canonicalize_quantized_lut_pattern  # noqa: E402,F401
from stages.quantization.preset import SEED_PASS_ORDER, canonicalize_quantization  # noqa: E402,F401
