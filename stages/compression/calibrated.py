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


# ---- the output-error proxy of a weight error (mixed_precision's distortion) ------------------

def is_table(view) -> bool:
    """An embedding table: every reader gathers rows of it."""
    return bool(view.consumers) and all(t in ("gather", "onnx.Gather") for t in view.consumer_types)


def input_axis(view) -> int:
    """The axis a weight's error is summed against its inputs along (mixed_precision's rule)."""
    axis = view.input_axis()
    rank = len(view.shape)
    if axis is None or axis == view.output_axis():
        axis = 1 if rank > 1 else 0
    return axis


def proxy_distortion(error: np.ndarray, stats: Optional[Mapping], input_axis: int, table: bool) -> float:
    """The proxy of the output error a weight error causes: tr(dW H dW^T) with the calibration
    gram H (dW with the input axis last), sum_c E[x_c^2] |dW[:, c]|^2 with only the input
    moments, for an embedding table the lookup-weighted sum_t p_t |dW_t|^2 (token counts) or
    the mean row error; |dW|^2 without statistics. mixed_precision ranks candidates by it and
    calibrate's measured sensitivity is end-to-end error per unit of it."""
    e = np.asarray(error, np.float64)
    if table:
        rows = e.reshape(e.shape[0], -1) if e.ndim else e.reshape(1, 1)
        per_row = np.einsum("ij,ij->i", rows, rows)
        counts = None if stats is None else stats.get("token_counts")
        if counts is not None and np.sum(counts) > 0 and len(counts) == len(per_row):
            p = np.asarray(counts, np.float64) / float(np.sum(counts))
            return float(p @ per_row)
        return float(per_row.sum() / max(1, len(per_row)))
    d = np.moveaxis(e, input_axis, -1).reshape(-1, e.shape[input_axis]) if e.ndim else e.reshape(1, 1)
    if stats is not None and stats.get("gram") is not None and np.shape(stats["gram"]) == (d.shape[1],) * 2:
        return float(np.einsum("ij,ij->", d @ np.asarray(stats["gram"], np.float64), d))
    if stats is not None and stats.get("input_moment") is not None and len(stats["input_moment"]) == d.shape[1]:
        return float(np.asarray(stats["input_moment"], np.float64) @ np.einsum("ij,ij->j", d, d))
    return float(np.einsum("ij,ij->", d, d))
