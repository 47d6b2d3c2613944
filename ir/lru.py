"""A small least-recently-used memo, safe to share between the threads of a pool (stages map over
weights on one: Pipeline.run(executor="threads"), and compress does by default).

    memo = LRU(4)
    value = memo.get(key, compute)        # compute() runs outside the lock, once per miss

The lock covers the dict only: a key evicted by another thread between a lookup and its
move to the end raised KeyError before it was there. Two threads missing the same key may both
compute it; the second result replaces the first (the value is the same).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Hashable, Optional


class LRU:
    def __init__(self, size: int):
        self.size = size
        self.items: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], object], valid: Optional[Callable] = None):
        """The value remembered under `key` (when `valid(value)` says it still is), else compute()'s,
        remembered."""
        with self.lock:
            hit = self.items.get(key)
            if hit is not None and (valid is None or valid(hit)):
                self.items.move_to_end(key)
                return hit
        value = compute()
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value


__all__ = ["LRU"]
