"""Content-addressed caches for stage outputs.

A cache entry is keyed by (input program digest, stage key) where the stage
key hashes the stage's name, version and every parameter. An entry records
the output digest and the stage's statistics; programs are stored apart, by
digest, so a run of cache hits never needs to load the programs in between.

The interface every cache offers (MemoryCache, DiskCache, or your own):

    lookup(input_digest, stage_key) -> Hit | None
    store(input_digest, stage_key, program, stats)
    put_program(program); get_program(digest) -> Program | None
"""
from __future__ import annotations

import json
import threading
from typing import NamedTuple, Optional

from pyrsistent import PMap, freeze, pmap

from ir import Program
from stages.base import Uncacheable, canonical


class Hit(NamedTuple):
    output_digest: str
    stats: PMap


def jsonable_stats(stats) -> dict:
    """Stage statistics as plain JSON values (repr for what has no JSON form)."""
    def one(v):
        try:
            out = canonical(v)
            json.dumps(out)
            return out
        except (Uncacheable, TypeError, ValueError):
            return repr(v)

    return {str(k): one(v) for k, v in dict(stats or {}).items()}


class MemoryCache:
    """Entries and programs held in this process (thread-safe)."""

    def __init__(self):
        self._entries: dict = {}
        self._programs: dict = {}
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def lookup(self, input_digest: str, stage_key: str) -> Optional[Hit]:
        with self._lock:
            hit = self._entries.get((input_digest, stage_key))
            if hit is not None and hit.output_digest not in self._programs:
                hit = None
            self.hits, self.misses = self.hits + (hit is not None), self.misses + (hit is None)
            return hit

    def store(self, input_digest: str, stage_key: str, program: Program, stats=None) -> None:
        self.put_program(program)
        with self._lock:
            self._entries[(input_digest, stage_key)] = Hit(program.digest, freeze(dict(stats or {})))

    def put_program(self, program: Program) -> None:
        with self._lock:
            self._programs.setdefault(program.digest, program)

    def get_program(self, digest: str) -> Optional[Program]:
        return self._programs.get(digest)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._programs.clear()


EMPTY_STATS = pmap()
