"""Shape arithmetic shared by type inference (symbolic dims are strings)."""
from __future__ import annotations

from ir.ops.registry import OpError


def broadcast(a: tuple, b: tuple, what: str = "") -> tuple:
    out = []
    for i in range(max(len(a), len(b))):
        x = a[len(a) - 1 - i] if i < len(a) else 1
        y = b[len(b) - 1 - i] if i < len(b) else 1
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        elif isinstance(x, str) or isinstance(y, str):
            out.append(x if isinstance(x, str) else y)
        else:
            raise OpError(f"{what}shapes {a} and {b} do not broadcast")
    return tuple(reversed(out))


def norm_axis(axis: int, rank: int, what: str = "axis") -> int:
    a = int(axis)
    if not -rank <= a < max(rank, 1):
        raise OpError(f"{what} {axis} out of range for rank {rank}")
    return a + rank if a < 0 else a


def numel(shape: tuple):
    n = 1
    for d in shape:
        if isinstance(d, str):
            return None
        n *= d
    return n
