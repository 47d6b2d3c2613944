"""The embedded demo: a small MLP trained on scikit-learn's digits images.

The weights (digits_mlp.npz) and the held-out split (digits_heldout.npz) ship
in this package, made once by tools/train_demo_model.py, so the demo needs no
download and no scikit-learn.
"""
from __future__ import annotations

from importlib import resources

import numpy as np

from ir.builder import TensorSpec, program

LAYERS = ("fc1", "fc2", "fc3")  # 64 -> 256 -> 128 -> 10, ReLU between
PIXEL_MAX = 16.0  # digits pixels are integers 0..16


def _asset(name: str) -> dict:
    with resources.files(__name__).joinpath(name).open("rb") as f:
        with np.load(f) as data:
            return {k: data[k] for k in data.files}


def weights() -> dict:
    return _asset("digits_mlp.npz")


def held_out() -> tuple:
    """(images [N, 64] float32 in 0..1, labels [N] int64)."""
    data = _asset("digits_heldout.npz")
    return data["images"].astype(np.float32) / PIXEL_MAX, data["labels"].astype(np.int64)


def build_program(params: dict = None):
    """The MLP as an IR program: input `image` [N, 64] -> output `logits` [N, 10]."""
    params = weights() if params is None else params
    n_in = params[f"{LAYERS[0]}_weight"].shape[1]

    @program(inputs={"image": TensorSpec(("N", n_in), "fp32")})
    def mlp(b, x):
        for i, layer in enumerate(LAYERS):
            w = b.const(params[f"{layer}_weight"], name=f"{layer}_weight")
            bias = b.const(params[f"{layer}_bias"], name=f"{layer}_bias")
            last = i == len(LAYERS) - 1
            x = b.linear(x=x, weight=w, bias=bias, name="logits" if last else layer)
            if not last:
                x = b.relu(x=x, name=f"{layer}_relu")
        return x

    return mlp


def accuracy(prog, images, labels) -> float:
    from ir.interpret import evaluate

    (logits,) = evaluate(prog, {"image": images}).values()
    return float(np.mean(np.argmax(logits, axis=-1) == labels))
