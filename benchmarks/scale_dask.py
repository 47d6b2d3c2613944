"""The Dask rows of bench_scale: the same compression on N local Dask workers against serial.

    python benchmarks/bench_scale.py --size 1.6G --dask 2 ...   # these rows after the others
    python benchmarks/scale_dask.py --size 200M --workers 2     # these rows alone

For each preset, in this process: the model's weights stay in its external-data file
(ir.lazy), the pipeline runs serially, then on a LocalCluster of N worker processes
(one thread each, started once, its start-up time reported apart), and the two results
must have the same digest. Reported: both wall times and the speed-up, the CPU seconds
each way (serial: this process; Dask: this process, which holds the client and the
scheduler, plus every worker: on a machine shared with other work, more processes get
more of it, so the wall-time speed-up can exceed the number of workers), and the bytes
that went through the scheduler during the Dask run (pipeline.distributed.traffic: Dask's
own counters) against the bytes of the weights. Only the stage runs are timed (import
and export are the same work either way).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

PRESETS = ("int8", "int4-block32", "palettize-4bit")


def _weight_bytes(program) -> int:
    return sum(op.attrs["val"].nbytes for _, op in program.walk() if op.op_type == "const")


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cluster_cpu(client) -> float:
    """CPU seconds so far of this process (client and scheduler) and of every worker process."""
    return _cpu_seconds() + sum(client.run(_cpu_seconds).values())


def dask_rows(model_path: str, workers: int, presets) -> tuple:
    """(header, rows, notes) for `presets` run serially and on `workers` local Dask workers."""
    import contextlib

    from ir.formats.onnx import import_onnx
    from pipeline import Pipeline
    from pipeline.distributed import cluster, moved, traffic

    program = import_onnx(model_path)
    program.digest  # hashed once from the file, as every run does first; not timed
    weights = _weight_bytes(program)
    header = ["run", "serial s", f"dask x{workers} s", "speed-up", "serial CPU s", "dask CPU s",
              "scheduler bytes", "of weight bytes", "same digest"]
    rows, notes = [], []
    load = os.getloadavg()[0]
    stack = contextlib.ExitStack()
    # what `compress --workers N` starts: a LocalCluster of N processes x 1 thread
    client, start_s = _timed(lambda: stack.enter_context(cluster(workers=workers)))
    notes.append(f"LocalCluster of {workers} processes x 1 thread started in {start_s:.1f} s (not counted)")
    with stack:
        for preset in presets:
            pipe = Pipeline.preset(preset)
            cpu = _cpu_seconds()
            serial, serial_s = _timed(lambda: pipe.run(program))
            serial_cpu = _cpu_seconds() - cpu
            before, cpu = traffic(client), _cluster_cpu(client)
            on_dask, dask_s = _timed(lambda: pipe.run(program, executor=client))
            dask_cpu = _cluster_cpu(client) - cpu  # client + scheduler + workers
            scheduler = moved(before, traffic(client))
            rows.append([f"weightpress {preset}", f"{serial_s:.1f}", f"{dask_s:.1f}", f"{serial_s / dask_s:.2f}x",
                         f"{serial_cpu:.1f}", f"{dask_cpu:.1f}", f"{scheduler:,}", f"{scheduler / weights:.5%}",
                         "yes" if on_dask.result.digest == serial.result.digest else "NO"])
            print("  ".join(rows[-1]), flush=True)
            del serial, on_dask
    notes.append(f"weights {weights / 1e9:.2f} GB; load average {load:.1f} before, {os.getloadavg()[0]:.1f} after; "
                 f"{os.cpu_count()} cores")
    return header, rows, notes


def main(argv=None) -> int:
    from bench_scale import parse_size, shape_for
    from scale_model import generate

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=parse_size, default=parse_size("200M"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--presets", default="int8,int4-block32")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-scale-dask-") as work:
        layers, dim = shape_for(args.size)
        model = generate(work, layers, dim)
        print(f"model: {layers} MatMul layers of {dim}x{dim} fp32 in external data", flush=True)
        header, rows, notes = dask_rows(model, args.workers, [p for p in args.presets.split(",") if p])
    print()
    print(table_of(header, rows))
    print("\n".join(notes))
    return 0


def table_of(header, rows) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


if __name__ == "__main__":
    sys.exit(main())
