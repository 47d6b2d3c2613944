"""The rows a convolution's weight multiplies: its input unfolded into patches (im2col).

A conv with weight W [C_out, C_in/g, k_1, ..., k_s] computes, at every output position p of
every sample and for the output channels of group j, ``W_j . patch_j(p)``: W_j the group's
rows flattened to [C_out/g, D] (D = C_in/g * k_1 * ... * k_s, numpy's row-major flattening:
channel first, then the kernel positions, the last spatial axis fastest) and patch_j(p) the
D input values under the kernel at p, in the same order, zeros where the kernel reads the
padding. So the output error of a weight error dW is exactly

    sum over p of |dW_j patch_j(p)|^2 = R * tr(dW_j H_j dW_j^T),   H_j = P_j^T P_j / R

over the R patch rows: the conv is a linear layer on the patch rows, and GPTQ and the
calibrated proxy treat it as one (stages/compression/calibrated.py).

The geometry is the op's own: strides, dilations, pads (``pad_type`` valid / same /
same_lower / custom, through ir/ops/nn.py's own padding rule for ``conv``; ONNX ``auto_pad`` /
``pads`` for an ``onnx.Conv`` kept as a foreign op), groups.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from ir.ops.nn import conv_layout

# ONNX Conv's auto_pad -> the pad_type of the core conv (the importer's table)
_AUTO_PAD = {"NOTSET": "custom", "SAME_UPPER": "same", "SAME_LOWER": "same_lower", "VALID": "valid"}


class ConvGeometry(NamedTuple):
    kernel: tuple      # k_1..k_s
    strides: tuple
    dilations: tuple
    pad_type: str      # valid / same / same_lower / custom
    pad: tuple         # custom: (begin_1, end_1, begin_2, end_2, ...) (the core conv's order)
    groups: int

    @property
    def columns(self) -> int:
        """D: the columns of a patch row per group is C_in/g * prod(kernel); this is prod(kernel)."""
        return int(np.prod(self.kernel, dtype=np.int64))


def _ints(v, n, default) -> tuple:
    if v is None:
        return (default,) * n
    return tuple(int(a) for a in np.asarray(v).reshape(-1))


def _const(op, name):
    v = op.get(name)
    return None if v is None else v.val


def geometry(op, weight_shape) -> Optional[ConvGeometry]:
    """The geometry of a ``conv`` (its const inputs) or ``onnx.Conv`` (its attributes) reading a
    weight of `weight_shape`; None when some of it is not known at build time."""
    nsp = len(weight_shape) - 2
    if nsp < 1:
        return None
    kernel = tuple(int(k) for k in weight_shape[2:])
    if op.op_type == "conv":
        names = ("strides", "dilations", "pad_type", "pad", "groups")
        if any(op.get(n) is not None and op.get(n).val is None for n in names):
            return None
        pad_type = _const(op, "pad_type")
        groups = _const(op, "groups")
        return ConvGeometry(kernel, _ints(_const(op, "strides"), nsp, 1), _ints(_const(op, "dilations"), nsp, 1),
                            "valid" if pad_type is None else str(pad_type), _ints(_const(op, "pad"), 2 * nsp, 0),
                            1 if groups is None else int(groups))
    if op.op_type == "onnx.Conv":
        a = op.attrs
        onnx_pads = _ints(a.get("pads"), 2 * nsp, 0)  # ONNX: every begin, then every end
        pad = tuple(p for i in range(nsp) for p in (onnx_pads[i], onnx_pads[nsp + i]))
        return ConvGeometry(kernel, _ints(a.get("strides"), nsp, 1), _ints(a.get("dilations"), nsp, 1),
                            _AUTO_PAD.get(str(a.get("auto_pad", "NOTSET")), "custom"), pad, int(a.get("group", 1)))
    return None


def _layout(spatial, g: ConvGeometry):
    return conv_layout(spatial, g.kernel, g.strides, g.dilations, g.pad_type, list(g.pad))


def patch_rows(x_shape, g: ConvGeometry) -> int:
    """R: how many patch rows an input of `x_shape` [N, C, *spatial] gives (samples x output positions)."""
    _, out = _layout(x_shape[2:], g)
    return int(x_shape[0]) * int(np.prod([max(o, 0) for o in out], dtype=np.int64))


def unfold(x: np.ndarray, g: ConvGeometry, rows: Optional[np.ndarray] = None) -> np.ndarray:
    """The patch rows of x [N, C_in, *spatial] per group: [groups, R, C_in/g * prod(kernel)]
    (float32), columns in the weight's flattening order (module docstring), rows in the order
    (sample, output position) row-major. ``rows``: only those patch rows, in that order."""
    x = np.asarray(x, np.float32)
    n, c = x.shape[:2]
    nsp = len(g.kernel)
    pads, out = _layout(x.shape[2:], g)
    xp = np.pad(x, [(0, 0), (0, 0)] + [tuple(p) for p in pads])
    span = [(k - 1) * d + 1 for k, d in zip(g.kernel, g.dilations)]
    # a view [N, C, *windows, *span] -> every stride-th window, every dilation-th tap: [N, C, *out, *kernel]
    win = np.lib.stride_tricks.sliding_window_view(xp, span, axis=tuple(range(2, 2 + nsp)))
    win = win[(slice(None), slice(None)) + tuple(slice(None, o * s, s) for o, s in zip(out, g.strides))
              + tuple(slice(None, None, d) for d in g.dilations)]
    cg = c // g.groups
    win = win.reshape(n, g.groups, cg, *win.shape[2:])                     # [N, G, Cg, *out, *kernel]
    order = (1, 0) + tuple(range(3, 3 + nsp)) + (2,) + tuple(range(3 + nsp, 3 + 2 * nsp))
    win = win.transpose(order)                                             # [G, N, *out, Cg, *kernel]
    if rows is not None:
        at = np.unravel_index(rows, (n, *out))
        return np.ascontiguousarray(win[(slice(None),) + at]).reshape(g.groups, len(rows), -1)
    return np.ascontiguousarray(win).reshape(g.groups, -1, cg * g.columns)


def sample_rows(total: int, cap: int, seed: int) -> Optional[np.ndarray]:
    """At most `cap` of `total` patch rows, sorted, drawn by a generator seeded with `seed` (the
    same data gives the same rows); None: all of them."""
    if total <= cap:
        return None
    return np.sort(np.random.default_rng(seed).choice(total, cap, replace=False))
