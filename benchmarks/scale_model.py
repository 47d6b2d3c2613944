"""Generate (never download) a big ONNX model whose weights live in external data.

`generate(dir, layers, dim)` writes `model.onnx` + `model.onnx.data`: a chain of
`layers` MatMul nodes, each with a [dim, dim] fp32 weight, written tensor by
tensor so generating a 6 GB model needs no more than one weight in memory.
Weights are seeded normal values (scale 0.02), so runs are repeatable.
"""
from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, helper

ALIGN = 4096  # page-aligned offsets: what onnx's own external-data writer does for big tensors


def generate(directory, layers: int = 24, dim: int = 4096, seed: int = 0, name: str = "model.onnx") -> str:
    """`layers` seeded [dim, dim] weights, made one at a time, as a MatMul chain (matmul_chain)."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    weights = (rng.standard_normal((dim, dim), dtype=np.float32) * np.float32(0.02) for _ in range(layers))
    return matmul_chain(directory, weights, name, producer="bench_scale")


def matmul_chain(directory, weights, name: str = "model.onnx", align: int = ALIGN, producer: str = "") -> str:
    """x -> MatMul(w0) -> MatMul(w1) ... -> y over `weights` (an iterable of 2-D fp32 arrays,
    each written to `name`.data at an `align`ed offset as it comes, then let go); the model path."""
    data_name = name + ".data"
    inits, nodes, shapes = [], [], []
    with open(os.path.join(directory, data_name), "wb") as f:
        for i, w in enumerate(weights):
            f.write(b"\0" * ((-f.tell()) % align))
            offset = f.tell()
            f.write(np.ascontiguousarray(w, np.float32).tobytes())
            t = TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=list(w.shape))
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(w.nbytes))):
                e = t.external_data.add()
                e.key, e.value = k, v
            inits.append(t)
            nodes.append(helper.make_node("MatMul", ["x" if i == 0 else f"h{i - 1}", f"w{i}"], [f"h{i}"],
                                          name=f"mm{i}"))
            shapes.append(w.shape)
            del w
    nodes[-1].output[0] = "y"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, shapes[0][0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, shapes[-1][1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name=producer)
    model.ir_version = 8
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return path


if __name__ == "__main__":
    import sys

    print(generate(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 24,
                   int(sys.argv[3]) if len(sys.argv) > 3 else 4096))
