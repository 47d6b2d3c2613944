"""benchmarks/quality_peers.py without running NNCF: the double-bias repair on a hand-made
graph (checked by onnxruntime: the output loses exactly one bias), and the row that says
why when nncf cannot be imported."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from benchmarks import quality_peers

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _nbits_with_bias_twice():
    """y = MatMulNBits(x, W=0, bias=b) + b: what NNCF 3.4 writes for MatMul + Add(b)."""
    k, n, block = 32, 4, 32
    packed = np.full((n, 1, block // 2), 0x88, np.uint8)  # every code 8 = the zero point: W == 0
    inits = [numpy_helper.from_array(packed, "w_q"), numpy_helper.from_array(np.ones((n, 1), np.float32), "w_s"),
             numpy_helper.from_array(np.arange(1, n + 1, dtype=np.float32), "b")]
    nodes = [helper.make_node("MatMulNBits", ["x", "w_q", "w_s", "", "", "b"], ["mm"], domain="com.microsoft",
                              K=k, N=n, bits=4, block_size=block),
             helper.make_node("Add", ["b", "mm"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def _run(model):
    ort = pytest.importorskip("onnxruntime")
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": np.ones((1, 32), np.float32)})[0]


def test_the_bias_added_twice_is_taken_out_once():
    model = _nbits_with_bias_twice()
    np.testing.assert_allclose(_run(model), [[2, 4, 6, 8]])  # the bug: 2 b
    assert quality_peers.drop_double_bias(model) == 1
    assert list(model.graph.node[0].input) == ["x", "w_q", "w_s"]
    np.testing.assert_allclose(_run(model), [[1, 2, 3, 4]])  # b once
    assert quality_peers.drop_double_bias(model) == 0  # nothing left to repair


def test_without_nncf_one_row_says_why(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "nncf", None)  # import nncf raises ImportError
    (row,) = quality_peers.nncf_rows("unused.onnx", [], lambda p: (1.0, 1.0), str(tmp_path))
    assert row["min_cos"] is None and row["size"] is None
    assert row["note"].startswith("not run: nncf is not installed")
