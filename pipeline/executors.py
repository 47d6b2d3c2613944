"""How stages map over weights: the StageContext the runner lends them.

`executor` may be None / "serial", "threads", "processes" (a concurrent.futures
pool sized to the machine), a StageContext, anything with `.map(fn, items)`
(a concurrent.futures Executor), a dask.distributed Client or a
pipeline.distributed.DaskExecutor (jobs travel as weight references, results
come back through a shared store: see pipeline.distributed), another Dask-style
client (`.map` returning futures plus `.gather`: arguments and results travel
through it whole), or a plain callable `map(fn, items)`. Stages only ever see
`context.map(fn, items) -> results in order`, so new backends need no stage change.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack
from typing import Callable, Optional

from pipeline.errors import PipelineError
from stages.base import StageContext

_POOLS = {"threads": ThreadPoolExecutor, "processes": ProcessPoolExecutor}


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the platform says; a container
    pinned to 2 cores of a 64-core host gets 2), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def serial_map(fn, items):
    return map(fn, items)  # lazy: each result is ready when the stage reads it


def _pool_map(pool) -> Callable:
    # concurrent.futures' map submits everything at once and yields results in order as
    # they complete, which is what lets a per-weight progress bar follow the work
    return lambda fn, items: pool.map(fn, items)


def _gather_map(client) -> Callable:
    # a Dask distributed Client: submit everything, then gather in order
    return lambda fn, items: list(client.gather(client.map(fn, list(items))))


def _dask(executor):
    """The DaskExecutor for a Dask Client or DaskExecutor, else None."""
    from pipeline import distributed

    if isinstance(executor, distributed.DaskExecutor):
        return executor
    return distributed.DaskExecutor(executor) if distributed.is_dask_client(executor) else None


def map_function(executor, stack: ExitStack, cache=None) -> Callable:
    if executor is None or executor == "serial":
        return serial_map
    if isinstance(executor, str):
        if executor not in _POOLS:
            raise PipelineError(f"executor {executor!r}: expected one of serial, {', '.join(_POOLS)}")
        pool = stack.enter_context(_POOLS[executor](max_workers=usable_cores()))
        return _pool_map(pool)
    dask = _dask(executor)
    if dask is not None:
        return dask.map_function(cache, stack)
    if hasattr(executor, "gather") and hasattr(executor, "map"):
        return _gather_map(executor)
    if hasattr(executor, "map"):
        return _pool_map(executor)
    if callable(executor):
        return lambda fn, items: list(executor(fn, items))
    raise PipelineError(f"executor of type {type(executor).__name__}: expected a name, "
                        "an object with .map, or a callable")


def make_context(executor, stack: ExitStack, progress: Optional[Callable] = None, spill=None,
                 cache=None) -> StageContext:
    """`cache`: the run's cache (a Dask executor keeps its results there when it is a DiskCache)."""
    if isinstance(executor, StageContext):
        return executor
    if _dask(executor) is not None:
        spill = None  # results come back as maps of the shared store's files: nothing to spill
    return StageContext(map=map_function(executor, stack, cache), progress=progress, spill=spill)
