"""A tiny model for the calibration tests: an embedding table read by gather, a linear layer
with correlated inputs (so GPTQ has something to exploit), and calibration data for it."""
from __future__ import annotations

import numpy as np

from ir.builder import TensorSpec, program

ROWS, HIDDEN, IN, OUT = 100, 32, 64, 64
SHIFT = 0.5


def tiny_model(seed: int = 0, nan_path: bool = False):
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(ROWS, HIDDEN)).astype(np.float32)
    w = rng.normal(size=(OUT, IN)).astype(np.float32)

    @program(inputs={"ids": TensorSpec((4,), "int32"), "x": TensorSpec((3, IN), "fp32")})
    def net(b, ids, x):
        e = b.gather(x=b.const(table, name="table"), indices=ids, axis=0)
        # the linear reads an intermediate value (what the probe has to expose), x + SHIFT
        x = b.real_div(x=x, y=np.float32(0.0)) if nan_path else b.add(x=x, y=np.float32(SHIFT))
        return b.linear(x=x, weight=b.const(w, name="w")), e

    return net


def mixing(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(IN, IN)) * 0.3 + np.eye(IN)) * rng.lognormal(0, 1, size=(IN, 1))


def tiny_data(batches: int = 6, seed: int = 2) -> dict:
    """Samples along the leading axis: `batches` batches of 3 rows of x, 4 ids each; the ids
    favour rows 0..9 (so token frequencies are far from uniform)."""
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(batches, 3, IN)) @ mixing()).astype(np.float32)
    ids = np.where(rng.random((batches, 4)) < 0.8, rng.integers(0, 10, (batches, 4)),
                   rng.integers(0, ROWS, (batches, 4))).astype(np.int32)
    return {"ids": ids, "x": x}


class GeneratedData:
    """Calibration data for any program: two batches drawn inside its inputs' domains (token ids
    below the tables they index, masks of 0/1), as verify draws them. For the property tests
    that run every registered stage on generated programs."""

    def feeds(self, fn) -> list:
        from ir.core import Program
        from pipeline.strategies.domain import input_domains
        from pipeline.strategies.inputs import example

        domains = input_domains(Program.make([fn]), fn.name)
        return [example(fn, {}, domains, seed=s) for s in range(2)]

    def to_dict(self) -> dict:
        return {"calibration_data": "generated"}
