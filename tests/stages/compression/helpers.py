"""Programs and checks shared by the compression stage tests."""
from __future__ import annotations

import numpy as np

from ir.builder import TensorSpec, program
from ir.core import Block, Function, Program
from ir.interpret import evaluate
from stages.compression import decompress_weights


def linear_program(w: np.ndarray, opset: str = "iOS18", name: str = "w") -> Program:
    dt = {np.dtype(np.float16): "fp16", np.dtype(np.float32): "fp32"}[w.dtype]

    @program(inputs={"x": TensorSpec((2, w.shape[1]), dt)})
    def net(b, x):
        return b.linear(x=x, weight=b.const(w, name=name))

    if opset != "iOS18":
        f = net.main
        net = Program.make([Function(f.name, f.block, opset)])
    return net


def conv_transpose_program(w: np.ndarray) -> Program:
    @program(inputs={"x": TensorSpec((1, w.shape[0], 4, 4), "fp32")})
    def net(b, x):
        return b.conv_transpose(x=x, weight=b.const(w, name="w"))
    return net


def weight_value(prog: Program, name: str = "w") -> np.ndarray:
    """The dense weight as the interpreter computes it (through every constexpr)."""
    fn = prog.main
    var = next(v for op in fn.block.walk() for v in op.outputs if v.name == name)
    ops = list(fn.ops)
    upto = next(i for i, op in enumerate(ops) if var in op.outputs)
    probe = Program.make([Function("main", Block.make((), ops[:upto + 1], (var,)), fn.opset)])
    return evaluate(probe, {})[name]


def decompressed(prog: Program, name: str = "w") -> np.ndarray:
    out = decompress_weights(prog)
    ops = [op for op in out.main.ops if op.op_type.startswith("constexpr_")]
    assert not ops, ops
    return next(op.outputs[0].val for op in out.main.ops if op.outputs and op.outputs[0].name == name)


def op_types(prog: Program) -> list:
    return [op.op_type for op in prog.main.ops]


def assert_decompress_exact(prog: Program, name: str = "w") -> np.ndarray:
    """decompress_weights and the interpreter agree bit for bit; returns the dense weight."""
    a, b = weight_value(prog, name), decompressed(prog, name)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8))
    return a
