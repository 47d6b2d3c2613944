"""What the calibrated stages share: a weight's statistics, its matrix orientation, and the
output-error proxy they report.

A weight is read as a matrix [outputs, inputs] against the Gram matrix H of what it
multiplies: a linear / matmul weight as it is (``matrix_axes``), a conv weight [C_out,
C_in/g, k...] flattened to [C_out, C_in/g * prod(k)] (``matrix_form``): the columns in the
order of collect.py's patch rows (stages/calibration/patches.py), so tr(dW H dW^T) is the
conv's own output error energy per output position; a grouped conv (groups g > 1, e.g.
depthwise) has one H per group of C_out/g output channels (``group_gram``) and the error is
the sum over groups.

A calibrated stage reads the statistics `calibrate` attached to the program
(stages/calibration/stats.py) through ``calibration_stats``; ``with_table`` hands them to
the module-level compress function (a partial, so a process pool can still ship it). A
weight without the statistics a method needs is skipped with that reason, never
compressed data-free in silence.
"""
from __future__ import annotations

from functools import partial
from typing import Mapping, NamedTuple, Optional

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
    for op, slot in _reads(view):
        if op.op_type == "linear" and slot == "weight":
            found.add((0, 1))
        elif op.op_type == "matmul" and slot == "y":
            found.add((0, 1) if _flag(op, "transpose_y") else (1, 0))
        elif op.op_type == "onnx.MatMul" and slot == "in1":
            found.add((1, 0))
        else:
            return None
    return found.pop() if len(found) == 1 else None


def _reads(view):
    """(op, input slot) for every place the weight is read."""
    for op in view.consumers:
        for slot, v in op.inputs.items():
            if not isinstance(v, tuple) and v.name == view.name:
                yield op, slot


def as_matrix(w: np.ndarray, axes: tuple) -> np.ndarray:
    """The weight as [outputs, inputs] (a conv weight, rank > 2 with axes (0, 1): flattened)."""
    if w.ndim > 2:
        return w.reshape(w.shape[0], -1)
    return w if axes == (0, 1) else w.T


def from_matrix(m: np.ndarray, axes: tuple, shape: Optional[tuple] = None) -> np.ndarray:
    """The inverse of as_matrix (`shape`: the weight's, needed for a conv weight)."""
    if shape is not None and len(shape) > 2:
        return m.reshape(shape)
    return m if axes == (0, 1) else m.T


_CONV_READERS = {("conv", "weight"), ("onnx.Conv", "in1")}


def _groups_of(op) -> Optional[int]:
    if op.op_type == "onnx.Conv":
        return int(op.attrs.get("group", 1))
    v = op.get("groups")
    if v is None:
        return 1
    return None if v.val is None else int(np.asarray(v.val).reshape(-1)[0])


def conv_groups(view) -> Optional[int]:
    """The groups of the convolutions reading this weight (rank >= 3) as their weight, when every
    reader is one and they agree; None otherwise."""
    if len(view.shape) < 3 or not view.consumers:
        return None
    found = set()
    for op, slot in _reads(view):
        if (op.op_type, slot) not in _CONV_READERS:
            return None
        found.add(_groups_of(op))
    g = found.pop() if len(found) == 1 else None
    return g if g is not None and g >= 1 and view.shape[0] % g == 0 else None


class MatrixForm(NamedTuple):
    """How a weight is read as [outputs, inputs] (module docstring)."""

    axes: tuple     # (output axis, input axis) of the weight
    shape: tuple    # the weight's shape
    groups: int     # > 1: a grouped conv, its rows in `groups` equal blocks with one H each

    def matrix(self, w: np.ndarray) -> np.ndarray:
        return as_matrix(w, self.axes)

    def weight(self, m: np.ndarray) -> np.ndarray:
        return from_matrix(m, self.axes, self.shape)

    def row_blocks(self, rows: int) -> list:
        """The row slice of each group (one slice covering every row when groups == 1)."""
        per = rows // self.groups
        return [slice(j * per, (j + 1) * per) for j in range(self.groups)]


def matrix_form(view) -> Optional[MatrixForm]:
    """The matrix form of a linear / matmul weight (matrix_axes) or of a conv weight
    (conv_groups), or None."""
    axes = matrix_axes(view)
    if axes is not None:
        return MatrixForm(axes, tuple(view.shape), 1)
    g = conv_groups(view)
    return None if g is None else MatrixForm((0, 1), tuple(view.shape), g)


def gram_of(stats: Optional[Mapping], cols: int, groups: int = 1) -> Optional[np.ndarray]:
    """H [cols, cols] (groups == 1), or a grouped conv's [groups, cols, cols]; None when the
    statistics hold no Gram of that shape."""
    if stats is None:
        return None
    if groups == 1:
        g = stats.get("gram")
        return g if g is not None and g.shape == (cols, cols) else None
    g = stats.get("group_gram")
    return g if g is not None and g.shape == (groups, cols, cols) else None


def output_energy(d: np.ndarray, h: np.ndarray) -> float:
    """tr(D H D^T) for D [rows, cols]; with H [groups, cols, cols], the sum over the groups of
    rows (equal blocks, in order) of each block's tr(D_j H_j D_j^T)."""
    d = np.asarray(d, np.float64)
    h = np.asarray(h, np.float64)
    if h.ndim == 2:
        return float(np.einsum("ij,ij->", d @ h, d))
    blocks = d.reshape(h.shape[0], -1, d.shape[1])
    return float(np.einsum("gij,gij->", np.matmul(blocks, h), blocks))


def proxy_stats(w_matrix: np.ndarray, recon: np.ndarray, h: np.ndarray, baseline: Optional[np.ndarray] = None) -> dict:
    """The calibrated output-error figures of a weight: tr(dW H dW^T) relative to tr(W H W^T)
    (``output_error``: the mean squared output error over the calibration rows, as a fraction
    of the output's energy), and the same for a baseline reconstruction when given (H per
    group of rows for a grouped conv: output_energy)."""
    w = np.asarray(w_matrix, np.float64)
    energy = output_energy(w, h)
    out = {"output_error": output_energy(w - recon, h) / energy if energy > 0 else 0.0}
    if baseline is not None:
        out["output_error_data_free"] = output_energy(w - baseline, h) / energy if energy > 0 else 0.0
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


def _conv_distortion(e: np.ndarray, stats: Optional[Mapping]) -> Optional[float]:
    """A conv weight error's proxy (input axis 1, rank > 2): tr(dW H dW^T) with dW flattened
    [C_out, C_in/g * prod(k)] against the patch Gram (per group for a grouped conv), or with
    only the channel moments sum_c E[x_c^2] |dW[:, c]|^2 (per group: group j's output
    channels read channels j C_in/g ...); None when the statistics do not fit."""
    if stats is None:
        return None
    rows, cg = e.shape[0], e.shape[1]
    d = e.reshape(rows, -1)
    for g in (stats.get("gram"), stats.get("group_gram")):
        if g is not None and np.shape(g)[-2:] == (d.shape[1],) * 2 and (np.ndim(g) == 2 or rows % np.shape(g)[0] == 0):
            return output_energy(d, g)
    m = stats.get("input_moment")
    if m is None or len(m) % cg or rows % (len(m) // cg):
        return None
    groups = len(m) // cg
    per_channel = np.einsum("gicj->gc", np.square(e.reshape(groups, rows // groups, cg, -1)))
    return float(np.sum(np.asarray(m, np.float64).reshape(groups, cg) * per_channel))


def proxy_distortion(error: np.ndarray, stats: Optional[Mapping], input_axis: int, table: bool) -> float:
    """The proxy of the output error a weight error causes: tr(dW H dW^T) with the calibration
    gram H (dW with the input axis last; a conv weight's flattened in patch order, against its
    patch Gram, per group for a grouped conv: _conv_distortion), sum_c E[x_c^2] |dW[:, c]|^2
    with only the input moments, for an embedding table the lookup-weighted sum_t p_t |dW_t|^2
    (token counts) or the mean row error; |dW|^2 without statistics. mixed_precision ranks
    candidates by it and calibrate's measured sensitivity is end-to-end error per unit of it."""
    e = np.asarray(error, np.float64)
    if table:
        rows = e.reshape(e.shape[0], -1) if e.ndim else e.reshape(1, 1)
        per_row = np.einsum("ij,ij->i", rows, rows)
        counts = None if stats is None else stats.get("token_counts")
        if counts is not None and np.sum(counts) > 0 and len(counts) == len(per_row):
            p = np.asarray(counts, np.float64) / float(np.sum(counts))
            return float(p @ per_row)
        return float(per_row.sum() / max(1, len(per_row)))
    if e.ndim > 2 and input_axis == 1:
        conv = _conv_distortion(e, stats)
        if conv is not None:
            return conv
    d = np.moveaxis(e, input_axis, -1).reshape(-1, e.shape[input_axis]) if e.ndim else e.reshape(1, 1)
    if stats is not None and stats.get("gram") is not None and np.shape(stats["gram"]) == (d.shape[1],) * 2:
        return float(np.einsum("ij,ij->", d @ np.asarray(stats["gram"], np.float64), d))
    if stats is not None and stats.get("input_moment") is not None and len(stats["input_moment"]) == d.shape[1]:
        return float(np.asarray(stats["input_moment"], np.float64) @ np.einsum("ij,ij->j", d, d))
    return float(np.einsum("ij,ij->", d, d))
