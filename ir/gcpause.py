"""Pausing the cyclic garbage collector while a large graph is built or hashed."""
from __future__ import annotations

import gc
from contextlib import contextmanager


@contextmanager
def gc_paused():
    """Pause the cyclic garbage collector while a large graph is built or hashed.

    IR nodes form no reference cycles (refcounting frees them), but building
    100k ops allocates ~10 tracked objects per op and the collector's full
    passes over them doubled build and digest times (benchmarks/bench_ir.py)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
