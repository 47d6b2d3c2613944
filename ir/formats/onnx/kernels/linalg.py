"""Matrix products: MatMul, Gemm, Einsum, MatMulInteger, Det.

Narrow floats multiply in float32 and round once at the end; integer
MatMulInteger accumulates in int32 after subtracting the zero points (per
tensor, per row of A or per column of B)."""
from __future__ import annotations

import numpy as np

from ir.formats.onnx.kernels._util import arg, need, work


def matmul(ins, attrs, node):
    a, b = need(ins, 0, "A"), need(ins, 1, "B")
    return [np.asarray(np.matmul(work(a), work(b))).astype(a.dtype, copy=False)]


def gemm(ins, attrs, node):
    a, b, c = need(ins, 0, "A"), need(ins, 1, "B"), arg(ins, 2)
    wa, wb = work(a), work(b)
    if int(attrs.get("transA", 0)):
        wa = wa.T
    if int(attrs.get("transB", 0)):
        wb = wb.T
    y = float(attrs.get("alpha", 1.0)) * (wa @ wb) if attrs.get("alpha", 1.0) != 1 else wa @ wb
    if c is not None:
        beta = float(attrs.get("beta", 1.0))
        y = y + (beta * work(c) if beta != 1 else work(c))
    return [np.asarray(y).astype(a.dtype, copy=False)]


def einsum(ins, attrs, node):
    xs = [x for x in ins if x is not None]
    eq = attrs["equation"].replace(" ", "")
    res = np.einsum(eq, *[work(x) for x in xs], optimize=len(xs) > 2)
    return [np.asarray(res).astype(xs[0].dtype, copy=False)]


def _zero_point(zp, which: str, ndim: int):
    """A zero point shaped to broadcast: scalar, per row of A ([M]) or per column of B ([N])."""
    if zp is None:
        return np.int32(0)
    z = np.asarray(zp).astype(np.int32)
    if z.size == 1:
        return z.reshape(())
    return z.reshape(-1, 1) if which == "A" else z.reshape(-1) if z.ndim == 1 else z


def matmul_integer(ins, attrs, node):
    a, b = need(ins, 0, "A"), need(ins, 1, "B")
    za, zb = _zero_point(arg(ins, 2), "A", a.ndim), _zero_point(arg(ins, 3), "B", b.ndim)
    aa = a.astype(np.int32) - za
    bb = b.astype(np.int32) - zb
    return [np.matmul(aa, bb).astype(np.int32)]


def det(ins, attrs, node):
    x = need(ins, 0, "X")
    return [np.asarray(np.linalg.det(work(x))).astype(x.dtype, copy=False)]


KERNELS = {"MatMul": matmul, "Gemm": gemm, "Einsum": einsum, "MatMulInteger": matmul_integer, "Det": det}
