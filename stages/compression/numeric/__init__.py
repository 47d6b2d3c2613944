"""Pure-numpy kernels for weight compression: arrays in, arrays out, inputs never written.

They know nothing of programs; the stage wrappers in ``stages.compression`` call them.  The
decoders (``affine_dequantize``, ``lut_to_dense``, ``sparse_to_dense``) are the kernels of the
ops the stages emit (ir/ops/quant.py), adapted to the parameter tuples here: one implementation.
"""
from .affine import AffineParams, affine_dequantize, affine_quantize, block_sizes_for, quant_range
from .errors import CompressionError, NotCompressible
from .kmeans1d import kmeans_1d
from .metrics import ErrorFigures, error_figures, max_abs_error, packed_nbytes, snr_db, total_nbytes
from .palettize import LutParams, custom_lut, lut_to_dense, palettize, to_ios16
from .sparse import SparseParams, nm_mask, percentile_mask, sparse_to_dense, sparsify, threshold_mask

__all__ = [
    "AffineParams", "affine_dequantize", "affine_quantize", "block_sizes_for", "quant_range",
    "CompressionError", "NotCompressible", "kmeans_1d",
    "ErrorFigures", "error_figures", "max_abs_error", "packed_nbytes", "snr_db", "total_nbytes",
    "LutParams", "custom_lut", "lut_to_dense", "palettize", "to_ios16",
    "SparseParams", "nm_mask", "percentile_mask", "sparse_to_dense", "sparsify", "threshold_mask",
]
