import numpy as np

from ir.builder import TensorSpec, program
from ir.interpret import evaluate


def test_linear_relu_hand_computed():
    @program(inputs={"x": TensorSpec((1, 3), "fp32")})
    def net(b, x):
        w = b.const(np.array([[1, -1, 0], [2, 0, 1]], np.float32), name="w")
        return b.relu(x=b.linear(x=x, weight=w, bias=np.array([0.5, -10], np.float32)))

    out = evaluate(net, {"x": np.array([[1, 2, 3]], np.float32)})
    # row 0: 1 - 2 + 0 + 0.5 = -0.5 -> relu 0; row 1: 2 + 3 - 10 = -5 -> relu 0
    assert out[net.main.outputs[0].name].tolist() == [[0.0, 0.0]]
    out = evaluate(net, {"x": np.array([[3, 1, 9]], np.float32)})
    # row 0: 3 - 1 + 0.5 = 2.5; row 1: 6 + 9 - 10 = 5
    assert out[net.main.outputs[0].name].tolist() == [[2.5, 5.0]]
