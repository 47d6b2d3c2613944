"""Compression stages splice through the rewrite driver and report its counts too."""
import numpy as np

from ir.builder import TensorSpec, program
from stages.compression import decompress_weights, palettize_weights


@program(inputs={"x": TensorSpec((1, 128), "fp32")})
def _net(b, x):
    w = b.const(np.random.default_rng(0).standard_normal((64, 128)).astype(np.float32), name="w")
    return b.relu(x=b.linear(x=x, weight=w))


def test_compression_and_decompression_report_pattern_counts():
    packed = palettize_weights(nbits=4).run(_net)
    # one weight, one splice (its const claimed, LUT + indices + lut_to_dense inserted)
    assert packed.stats["patterns"]["splice_weights"] == {"matched": 1, "rewritten": 1}
    back = decompress_weights.run(packed.program)
    # the lut_to_dense folds into one const; the LUT and index consts only it read go
    assert back.stats["patterns"]["fold_constexpr_chains"] == {"matched": 3, "rewritten": 3}
    assert [op.op_type for op in back.program.main.ops] == ["const", "linear", "relu"]
    nothing = decompress_weights.run(_net)
    assert nothing.program is _net
    assert nothing.stats["patterns"]["fold_constexpr_chains"] == {"matched": 0, "rewritten": 0}
