"""Window functions: HannWindow, HammingWindow, BlackmanWindow.

size N; periodic=1 (default) divides by N, periodic=0 by N - 1; the result has
the element type output_datatype (default float32)."""
from __future__ import annotations

import numpy as np

from ir.formats.onnx.kernels._util import need, np_dtype, scalar

# name -> cosine coefficients a0, a1, a2 of a0 - a1 cos(2 pi n / d) + a2 cos(4 pi n / d)
WINDOWS = {"HannWindow": (0.5, 0.5, 0.0), "HammingWindow": (25 / 46, 21 / 46, 0.0),
           "BlackmanWindow": (0.42, 0.5, 0.08)}


def _window(name):
    a0, a1, a2 = WINDOWS[name]

    def kernel(ins, attrs, node):
        n = int(scalar(need(ins, 0, "size")))
        periodic = int(attrs.get("periodic", 1))
        d = n if periodic else n - 1
        k = np.arange(n, dtype=np.float64)
        ang = 2 * np.pi * k / d if d > 0 else np.zeros(n)
        w = a0 - a1 * np.cos(ang) + a2 * np.cos(2 * ang)
        return [w.astype(np_dtype(attrs.get("output_datatype", 1)))]
    return kernel


KERNELS = {name: _window(name) for name in WINDOWS}
