"""Per-weight work on a Dask cluster (the optional extra `weightpress[distributed]`).

    from dask.distributed import Client
    trace = Pipeline([...]).run(program, executor=Client(...))          # or DaskExecutor(client, store=path)
    with cluster(workers=4) as client: ...                              # a LocalCluster of 4 processes
    with cluster(scheduler="tcp://host:8786") as client: ...            # an existing cluster

A stage maps its per-weight jobs with `context.map(fn, items)`; on Dask each job
travels as a pickle whose arrays are references (pipeline.weightrefs): a
file-backed weight (ir.lazy) as its file region, which the worker maps itself; an
in-memory weight put first, by the client, into a content-addressed store every
worker reaches; every array a worker makes goes into that store and comes back as
a reference the client maps (checked against its digest). So the scheduler moves
a few hundred bytes per weight, never the weights: `traffic(client)` reads Dask's
own byte counters to show it.

The store is, in this order: the `store` given to DaskExecutor (a DiskCache or a
path), the run's cache when it is a DiskCache (results land where the run caches
them: nothing is written twice), else a temporary directory removed at the end of
the run. A cluster on other machines needs a store on a file system all of them
mount at the same path (and the model's weight files too): pass a DiskCache there.

Failures:
* A worker that dies (killed, out of memory) takes its running job with it; Dask
  runs the job again elsewhere (up to its `allowed-failures`). A job's results are
  written atomically under their digests, so a death mid-write leaves a temporary
  (swept by DiskCache), never a wrong file, and the retry writes the same bytes.
* A weight file changed while the run is in progress: the worker's digest check
  raises ir.lazy.WeightFileChanged, which the run reports as the step's failure.
* A scheduler that does not answer: `cluster()` raises ClusterUnreachable (a
  ValueError) before anything is read or written.

This module imports dask only when a cluster is asked for: the core imports and
runs without it.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from typing import Callable, Iterator, Optional

from pipeline import weightrefs
from pipeline.errors import PipelineError

INSTALL_HINT = "pip install 'weightpress[distributed]'"


class DistributedUnavailable(PipelineError):
    """Dask distributed is not installed."""


class ClusterUnreachable(PipelineError):
    """The Dask scheduler asked for does not answer (or the address is not one)."""


def is_dask_client(obj) -> bool:
    """A dask.distributed Client, told without importing dask."""
    return type(obj).__name__ == "Client" and type(obj).__module__.split(".")[0] == "distributed"


def _require_distributed() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise DistributedUnavailable(f"running on a Dask cluster needs dask.distributed: {INSTALL_HINT}") from None


# ---- the executor ------------------------------------------------------------------------

class DaskExecutor:
    """A Dask client with the store its workers share (None: chosen per run, see the module
    docstring). Pass it (or a bare Client) as Pipeline.run's `executor`."""

    def __init__(self, client, store=None):
        if not is_dask_client(client):
            raise PipelineError(f"DaskExecutor: expected a dask.distributed Client, got {type(client).__name__}")
        self.client = client
        self.store = store

    def map_function(self, cache=None, stack: Optional[contextlib.ExitStack] = None) -> Callable:
        store = shared_store(self.store, cache, stack)
        return lambda fn, items: _dask_map(self.client, store, fn, items)


def shared_store(store=None, cache=None, stack: Optional[contextlib.ExitStack] = None):
    """The DiskCache the workers share: `store` (a DiskCache or a path), else the run's
    cache when it is a DiskCache, else a temporary directory the `stack` removes."""
    from pipeline.diskcache import DiskCache

    if isinstance(store, DiskCache):
        return store
    if store is not None:
        return DiskCache(store)
    if isinstance(cache, DiskCache):
        return cache
    tmp = tempfile.mkdtemp(prefix="weightpress-dask-")
    if stack is not None:
        # the results the run keeps are maps of these files; unlinking them leaves the maps valid
        stack.callback(_remove_store, tmp)
    return DiskCache(tmp)


def _remove_store(path: str) -> None:
    """A run's temporary store removed so that no job still running can write into it: renamed
    first (jobs write by path, and DiskCache never makes its root again, so nothing new lands
    in the renamed tree), then deleted."""
    doomed = f"{path}.removed"
    try:
        os.rename(path, doomed)
    except OSError:
        doomed = path
    shutil.rmtree(doomed, True)


def _dask_map(client, store, fn, items) -> Iterator:
    """fn over items on the cluster, results in order as they become ready."""
    memo: dict = {}  # one reference (and one store write) per distinct in-memory array
    payloads = [weightrefs.dumps((fn, item), store, memo) for item in items]
    memo.clear()
    if not payloads:
        return
    name = getattr(fn, "__name__", "job").strip("_")
    token = secrets.token_hex(6)
    futures = client.map(run_task, payloads, store=str(store.root.resolve()), pure=False,
                         key=[f"weightpress-{name}-{token}-{i}" for i in range(len(payloads))])
    del payloads
    try:
        for i, future in enumerate(futures):
            data = future.result()
            futures[i] = None  # let Dask forget the result as soon as we hold it
            future.release()
            yield weightrefs.loads(data, store)
    finally:
        pending = [f for f in futures if f is not None]
        if pending:
            client.cancel(pending)


# ---- on a worker ---------------------------------------------------------------------------

# root -> DiskCache, opened once per worker process (opening one sweeps its temporaries); the
# few most recent, since each run without a cache of its own has a temporary store
_WORKER_STORES: dict = {}
_WORKER_STORES_KEPT = 8


def _worker_store(root: str):
    store = _WORKER_STORES.pop(root, None)
    if store is None:
        from pipeline.diskcache import DiskCache

        try:  # the client made it; a worker never makes it again once its run removed it
            store = DiskCache(root, create=False)
        except FileNotFoundError:
            _still_there(root)
            raise
    _WORKER_STORES[root] = store  # most recent last
    while len(_WORKER_STORES) > _WORKER_STORES_KEPT:
        del _WORKER_STORES[next(iter(_WORKER_STORES))]
    return store


def run_task(payload: bytes, store: str) -> bytes:
    """One job on a worker: read the weights its references name (checked against their
    digests), run it, put the arrays it made in the store, return references to them."""
    _still_there(store)
    cache = _worker_store(store)
    fn, item = weightrefs.loads(payload, cache)
    result = fn(item)
    _still_there(store)  # a job that outlived its run (cancelled while running) writes nothing
    return weightrefs.dumps(result, cache)


def _still_there(store: str) -> None:
    # a run's temporary store is removed when the run ends, failed or not; opening or writing
    # it would make its directories again, left behind for nobody
    if not os.path.isdir(store):
        raise weightrefs.StoreMiss(f"the shared store {store} is gone: the run that asked for this job has ended")


# ---- clusters ------------------------------------------------------------------------------

@contextlib.contextmanager
def cluster(workers: Optional[int] = None, scheduler: Optional[str] = None, timeout: Optional[float] = None):
    """A Client of a new LocalCluster of `workers` processes (one thread each), or of the
    existing cluster whose scheduler is at `scheduler`; closed on the way out.
    ClusterUnreachable when the scheduler does not answer within `timeout` seconds
    (default: Dask's `distributed.comm.timeouts.connect`)."""
    if (workers is None) == (scheduler is None):
        raise PipelineError("cluster: give either workers=N or scheduler=ADDRESS")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise PipelineError(f"cluster: workers={workers!r}: expected a positive number of processes")
    _require_distributed()
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(_local(workers) if workers is not None else _remote(scheduler, timeout))
        _warm(client, scheduler or "the local cluster")
        yield client


def _import_stages() -> None:
    # the modules a job's pickle names and a worker's store needs (stages load lazily)
    import pipeline.diskcache  # noqa: F401
    import pipeline.distributed  # noqa: F401
    import stages.compression  # noqa: F401


def _warm(client, where: str) -> None:
    """Import the stages in every worker now (seconds per process on a busy machine), so the
    first run's first jobs do not pay for it; a worker without weightpress fails here, in
    one line, rather than in the middle of a run."""
    try:
        client.run(_import_stages)
    except ImportError as e:
        raise ClusterUnreachable(f"the workers of {where} cannot import weightpress ({e}): install it "
                                 "there, the same version as here") from None


# Environment Dask sets in each worker process that we leave unset: MALLOC_TRIM_THRESHOLD_
# pins glibc's mmap threshold, so every temporary array over 128 KB is a fresh mmap whose
# pages fault in again; the compression kernels make several per weight. Measured on
# 24 weights of 1024x1024 int8: 2.5x the worker compute time with it set.
_UNSET_IN_WORKERS = ("MALLOC_TRIM_THRESHOLD_",)


@contextlib.contextmanager
def _local(workers: int):
    import logging

    import dask
    from distributed import Client, LocalCluster

    environ = {k: v for k, v in dask.config.get("distributed.nanny.pre-spawn-environ").items()
               if k not in _UNSET_IN_WORKERS}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):  # read once, by each nanny
        local = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                             silence_logs=logging.ERROR)
    with local, Client(local) as client:
        yield client


@contextlib.contextmanager
def _remote(address: str, timeout: Optional[float]):
    import dask
    from dask.utils import parse_timedelta
    from distributed import Client

    if timeout is None:
        timeout = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), "s")
    _probe(address, timeout)
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except Exception as e:  # noqa: BLE001 - it answered the probe, then went away
        raise _unreachable(address, e, timeout) from None
    with client:
        yield client


def _probe(address: str, timeout: float) -> None:
    """ClusterUnreachable unless a Dask scheduler answers at `address` within `timeout`.
    Asked before a Client is made: a Client whose connection failed leaves a close that
    times out again at interpreter exit, with a traceback on stderr."""
    import asyncio

    from distributed.comm import connect

    async def identity():
        comm = await connect(address, timeout=timeout)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    try:
        _refused_now(address, timeout)
        answer = asyncio.run(asyncio.wait_for(identity(), timeout))
    except Exception as e:  # noqa: BLE001 - refused, timed out, not an address, garbage read back
        raise _unreachable(address, e, timeout) from None
    if not isinstance(answer, dict) or answer.get("type") != "Scheduler":
        raise ClusterUnreachable(f"{address!r} answers, but not as a Dask scheduler")


def _refused_now(address: str, timeout: float) -> None:
    """A TCP address nobody listens on: ConnectionRefusedError at once (Dask's own connect
    retries a refused connection until its timeout, 30 s by default)."""
    import socket

    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port

    scheme, location = parse_address(address)
    if scheme in ("tcp", "tls"):
        with socket.create_connection(parse_host_port(location), timeout=timeout):
            pass


def _unreachable(address: str, e: BaseException, timeout: Optional[float] = None) -> ClusterUnreachable:
    why = " ".join(str(e).split())[:200]
    if isinstance(e, TimeoutError) and not why:
        why = f"no answer within {timeout:g} s"
    elif isinstance(e, OSError) and e.strerror:
        why = e.strerror  # "Connection refused", "No route to host"
    if isinstance(e, (OSError, TimeoutError)):
        return ClusterUnreachable(f"Dask scheduler {address!r} does not answer: {why}")
    if isinstance(e, ValueError):  # distributed's own address parsing
        return ClusterUnreachable(f"{address!r} is not a Dask scheduler address: {why}")
    # it answered with bytes Dask's protocol cannot read (e.g. a length field from an HTTP reply)
    return ClusterUnreachable(f"{address!r} answers, but not as a Dask scheduler ({type(e).__name__})")


# ---- what the scheduler moves ------------------------------------------------------------------

def _scheduler_counters(dask_scheduler=None) -> dict:
    return {"scheduler_to_workers": sum(c.byte_count for c in dask_scheduler.stream_comms.values()),
            "scheduler_to_clients": sum(c.byte_count for c in dask_scheduler.client_comms.values())}


def _worker_counters(dask_worker=None) -> dict:
    stream = dask_worker.batched_stream
    return {"workers_to_scheduler": stream.byte_count if stream is not None else 0,
            "worker_data_out": dask_worker.transfer_outgoing_bytes_total}


def traffic(client) -> dict:
    """Dask's own byte counters of everything that passes through the scheduler, summed
    over the cluster (cumulative; subtract two readings, see `moved`):

    client_to_scheduler   the client's batched stream (task graphs: our task payloads)
    scheduler_to_workers  the scheduler's batched streams to workers (tasks handed out)
    scheduler_to_clients  its streams to clients (task states)
    workers_to_scheduler  the workers' batched streams (task done: sizes, no data)
    worker_data_out       bytes workers served from their memory (results gathered
                          through the scheduler, and worker-to-worker transfers: an upper bound)

    Requests/replies outside the batched streams (heartbeats, this reading itself) are not
    counted; they carry no task data."""
    counts = {"client_to_scheduler": client.scheduler_comm.byte_count}
    counts.update(client.run_on_scheduler(_scheduler_counters))
    for one in client.run(_worker_counters).values():
        for k, v in one.items():
            counts[k] = counts.get(k, 0) + v
    return counts


def moved(before: dict, after: dict) -> int:
    """Bytes the scheduler moved between two `traffic` readings (workers unchanged in between)."""
    return sum(after[k] - before.get(k, 0) for k in after)
