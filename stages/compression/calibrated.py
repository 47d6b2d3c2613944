"""What the calibrated stages share: a weight's statistics, its matrix orientation, and the
output-error proxy they report.

A calibrated stage reads the statistics `calibrate` attached to the program
(stages/calibration/stats.py) through ``calibration_stats``; ``with_table`` hands them to
the module-level compress function (a partial, so a process pool can still ship it). A
weight without the statistics a method needs is skipped with that reason, never
compressed data-free in silence.
"""
from __future__ import annotations

from functools import partial
from typing import Mapping, Optional

import numpy as np

from stages.calibration.stats import ATTR

NO_STATS = "no calibration statistics for this weight (run calibrate first: --calibration FILE)"


def table_of(program) -> Mapping:
    return program.attrs.get(ATTR) or {}


def stats_for(table: Mapping, view) -> Optional[Mapping]:
    """The statistics of a weight of function main (the only one calibrate runs)."""
    return table.get(view.name) if view.function == "main" else None


def with_table(compress, program):
    return partial(compress, table_of(program))


def _flag(op, name) -> bool:
    v = op.get(name)
    return bool(v is not None and v.val is not None and np.asarray(v.val).reshape(-1)[0])


def matrix_axes(view) -> Optional[tuple]:
    """(output axis, input axis) of a 2-D weight read as a matrix by its consumers
    (matmul's transpose_y honoured), or None when they disagree or it is not a matrix."""
    if len(view.shape) != 2:
        return None
    found = set()
    for op in view.consumers:
        for slot, v in op.inputs.items():
            if isinstance(v, tuple) or v.name != view.name:
                continue
            if op.op_type == "linear" and slot == "weight":
                found.add((0, 1))
            elif op.op_type == "matmul" and slot == "y":
                found.add((0, 1) if _flag(op, "transpose_y") else (1, 0))
            elif op.op_type == "onnx.MatMul" and slot == "in1":
                found.add((1, 0))
            else:
                return None
    return found.pop() if len(found) == 1 else None


def as_matrix(w: np.ndarray, axes: tuple) -> np.ndarray:
    """The weight as [outputs, inputs]."""
    return w if axes == (0, 1) else w.T


def from_matrix(m: np.ndarray, axes: tuple) -> np.ndarray:
    return m if axes == (0, 1) else m.T


def gram_of(stats: Optional[Mapping], cols: int) -> Optional[np.ndarray]:
    g = None if stats is None else stats.get("gram")
    return g if g is not None and g.shape == (cols, cols) else None


def proxy_stats(w_matrix: np.ndarray, recon: np.ndarray, h: np.ndarray, baseline: Optional[np.ndarray] = None) -> dict:
    """The calibrated output-error figures of a weight: tr(dW H dW^T) relative to tr(W H W^T)
    (``output_error``: the mean squared output error over the calibration rows, as a fraction
    of the output's energy), and the same for a baseline reconstruction when given."""
    from stages.compression.numeric.gptq import output_loss

    w = np.asarray(w_matrix, np.float64)
    energy = float(np.einsum("ij,ij->", w @ h, w))
    out = {"output_error": output_loss(w, recon, h) / energy if energy > 0 else 0.0}
    if baseline is not None:
        out["output_error_data_free"] = output_loss(w, baseline, h) / energy if energy > 0 else 0.0
    return out
