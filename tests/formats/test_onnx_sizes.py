"""ir.formats.onnx.sizes: each weight's bytes in a serialized ONNX model."""
import numpy as np
import onnx
from onnx import TensorProto as T, helper as h, numpy_helper as nh

from ir.formats.onnx.sizes import measure, measure_file, tensor_bytes


def _model(nodes, inits, outputs=("y",)):
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [2, 4])],
                     [h.make_tensor_value_info(o, T.FLOAT, None) for o in outputs],
                     [nh.from_array(v, k) for k, v in inits.items()])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def test_an_initializer_counts_its_proto_as_serialized():
    t = nh.from_array(np.zeros(100, np.float32), "w")
    # dims [100]: 2 bytes, data_type: 2, name "w": 3, raw_data: tag + varint(400) + 400 = 403;
    # in the graph: tag + varint(410) + 410
    assert t.ByteSize() == 2 + 2 + 3 + 403
    assert tensor_bytes(t) == 1 + 2 + 410


def test_a_decoded_weight_holds_every_tensor_it_is_computed_from_once():
    q = np.arange(16, dtype=np.int8).reshape(4, 4)
    inits = {"q1": q, "q2": q + 1, "scale": np.float32(0.5), "shape": np.array([4, 4], np.int64)}
    nodes = [h.make_node("DequantizeLinear", ["q1", "scale"], ["w1"]),
             h.make_node("DequantizeLinear", ["q2", "scale"], ["w2"]),  # shares the scale
             h.make_node("Reshape", ["w2", "shape"], ["w2r"]),
             h.make_node("Constant", [], ["c"], value=nh.from_array(np.ones((4, 4), np.float32))),
             h.make_node("MatMul", ["x", "w1"], ["y1"]), h.make_node("MatMul", ["y1", "w2r"], ["y2"]),
             h.make_node("Add", ["y2", "c"], ["y"])]
    model = _model(nodes, inits)
    by = {t.name: tensor_bytes(t) for t in model.graph.initializer}
    const_node = next(n for n in model.graph.node if n.op_type == "Constant")
    assert const_node.ByteSize() < 128  # its length prefix is one byte
    node = {n.output[0]: 1 + 1 + n.ByteSize() for n in model.graph.node}  # each < 128 bytes
    assert max(node.values()) < 130
    sizes = measure(model, ["w1", "w2r", "c", "x", "nowhere"])  # x: an input; nowhere: no such value
    # a decoded weight also holds its decode nodes (each once)
    assert sizes.weights == {"w1": by["q1"] + by["scale"] + node["w1"],
                             "w2r": by["q2"] + by["shape"] + node["w2"] + node["w2r"],
                             "c": 1 + 1 + const_node.ByteSize()}
    assert sizes.total == len(model.SerializeToString())
    assert sizes.tensors == sum(by.values()) + sizes.weights["c"]
    assert sizes.other == sizes.total - sum(sizes.weights.values())


def test_external_data_counts_the_bytes_in_the_data_file(tmp_path):
    model = _model([h.make_node("MatMul", ["x", "w"], ["y"])], {"w": np.ones((4, 512), np.float32)})
    path = tmp_path / "m.onnx"
    onnx.save_model(model, path, save_as_external_data=True, location="m.data", size_threshold=0)
    (t,) = onnx.load(path, load_external_data=False).graph.initializer
    sizes = measure_file(path, ["w"])
    assert sizes.weights["w"] == tensor_bytes(t) and sizes.weights["w"] > 4 * 512 * 4
    assert sizes.total == path.stat().st_size + (tmp_path / "m.data").stat().st_size
