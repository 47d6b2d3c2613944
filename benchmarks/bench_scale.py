"""Scale: compressing a model bigger than comfort, against onnxruntime's own quantizers.

    python benchmarks/bench_scale.py                 # the 1.6 GB model (24 x 4096x4096 fp32)
    python benchmarks/bench_scale.py --size 6G       # the 6 GB one (the RSS-bound target)
    python benchmarks/bench_scale.py --size 200M --no-peers   # a quick look
    python benchmarks/bench_scale.py ... --dask 2     # and the presets on 2 local Dask workers vs serial

Generates (never downloads) a chain of MatMul layers whose fp32 weights live in ONNX
external data (benchmarks/scale_model.py), then runs, each in its own child process
measured by os.wait4 (wall time, user + system CPU, peak RSS of that process alone):

* weightpress compress --preset int8 / int4-block32 (written as MatMulNBits, the same
  output as the peer) / palettize-4bit, with --no-check unless --check is given (the
  peers do not run their output either);
* onnxruntime's quantize_dynamic (per-channel int8) and MatMulNBitsQuantizer (4 bits,
  block 32, symmetric) on the same model, for the same output size;
* the same weightpress work on a small in-memory model (weights inside the proto),
  whose seconds per GB of weights is what "time per byte" is measured against.

One table: each run's figures and its ratios to the peer doing the same work. The
work directory is under the system's temporary directory and removed at the end
(--keep keeps it). Run it alone: two big measurements at once measure each other.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)


GB = 1e9

ORT_INT8 = """
import sys
from onnxruntime.quantization import QuantType, quantize_dynamic
quantize_dynamic(sys.argv[1], sys.argv[2], per_channel=True, weight_type=QuantType.QInt8,
                 use_external_data_format=True)
"""
ORT_NBITS = """
import sys
import onnx
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
q = MatMulNBitsQuantizer(onnx.load(sys.argv[1]), bits=4, block_size=32, is_symmetric=True)
q.process()
q.model.save_model_to_file(sys.argv[2], use_external_data_format=True)
"""

# run name -> (weightpress CLI arguments, the peer it is compared with)
OURS = {
    "int8": (["--preset", "int8"], "ort quantize_dynamic int8"),
    "int4-block32": (["--preset", "int4-block32", "--onnx-matmul-nbits"], "ort MatMulNBits int4 b32"),
    "palettize-4bit": (["--preset", "palettize-4bit"], None),
    # the default ONNX form of 4-bit weights (packed nibbles decoded in the graph): no peer
    "int4-block32-packed": (["--preset", "int4-block32"], None),
}
PEERS = {"ort quantize_dynamic int8": ORT_INT8, "ort MatMulNBits int4 b32": ORT_NBITS}


def parse_size(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)\s*([KMGT]?)B?", text.strip().upper())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: a size like 1.6G, 6G or 200M")
    return float(m.group(1)) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}[m.group(2)]


def shape_for(size: float) -> tuple:
    """(layers, dim): 4096-wide layers for sizes from 256 MB up (the issue's model at 1.6G is
    24 layers), 1024-wide below."""
    dim = 4096 if size >= 256e6 else 1024
    return max(1, round(size / (dim * dim * 4))), dim


def measured(cmd: list, env=None) -> dict:
    """Run cmd as a child; its own wall time, CPU time and peak RSS (os.wait4)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{err[-2000:]}")
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "sys": ru.ru_stime,
            "rss": ru.ru_maxrss * 1024, "faults": ru.ru_minflt, "load": os.getloadavg()[0]}


def output_bytes(path: str) -> int:
    d = os.path.dirname(path)
    stem = os.path.basename(path)
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.startswith(stem))


def child_env() -> dict:
    """The children's environment: this checkout first on the path, and bytecode written
    (PYTHONDONTWRITEBYTECODE, set on some machines, would make every run compile weightpress'
    sources again, about a second; an installed package has its bytecode)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def load() -> str:
    try:
        return "load average " + " / ".join(f"{x:.1f}" for x in os.getloadavg()) + " (1 / 5 / 15 min)"
    except OSError:
        return "load average unknown"


def ours(model: str, out: str, args: list, check: bool) -> dict:
    env = child_env()
    cmd = [sys.executable, "-m", "pipeline.cli", "compress", model, "-o", out, "-q",
           *args, *([] if check else ["--no-check"])]
    return measured(cmd, env) | {"out": out}


def peer(model: str, out: str, script: str) -> dict:
    return measured([sys.executable, "-c", script, model, out]) | {"out": out}


def generate(*args, **kw):
    from scale_model import generate as make  # numpy and onnx: imported by the children only

    return make(*args, **kw)


def in_child(fn, *args):
    """fn(*args) run in a child process (its result printed back): the models are made
    there, so this process stays small. It matters: a child's peak RSS as the system reports
    it (os.wait4) starts at its parent's peak, because the child is started by vfork and
    exec records the shared memory's high-water mark (loading the in-memory model here once
    made every run below report 858 MB)."""
    code = (f"import sys; sys.path.insert(0, {HERE!r}); import bench_scale as b; "
            f"print(b.{fn.__name__}(*{args!r}))")
    out = subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.PIPE, text=True)
    return out.stdout.strip().splitlines()[-1]


def own_peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_memory_model(directory: str, size: float) -> str:
    """The same kind of model with its weights inside the proto (no external data)."""
    import onnx

    layers, dim = shape_for(size)
    path = generate(directory, layers, dim, name="inmem.onnx")
    m = onnx.load(path)  # loads the external data into the proto
    os.remove(path + ".data")
    onnx.save_model(m, path)
    return path


def row(name, r, weights, ref=None, peer_r=None) -> list:
    per_gb = r["wall"] / (weights / GB)
    cells = [name, f"{r['wall']:.1f}", f"{r['cpu']:.1f}", f"{r['sys']:.1f}", f"{r['rss'] / 1e6:.0f}",
             f"{r['faults'] / 1e6:.2f}", f"{output_bytes(r['out']) / 1e6:.0f}", f"{per_gb:.1f}", f"{r['load']:.1f}"]
    cells.append(f"{per_gb / ref:.2f}x" if ref else "")
    cells.append(f"{r['wall'] / peer_r['wall']:.2f}x / {r['rss'] / peer_r['rss']:.2f}x" if peer_r else "")
    return cells


def table(rows) -> str:
    headers = ["run", "wall s", "cpu s", "sys s", "peak RSS MB", "Mfaults", "out MB", "s/GB", "load",
               "s/GB vs in-memory", "vs peer: wall / RSS"]
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=parse_size, default=parse_size("1.6G"),
                    help="weights of the generated model (default 1.6G: 24 layers 4096x4096 fp32)")
    ap.add_argument("--presets", default="int8,int4-block32,palettize-4bit",
                    help=f"weightpress runs, of {', '.join(OURS)} (default int8,int4-block32,palettize-4bit)")
    ap.add_argument("--no-peers", dest="peers", action="store_false", help="skip onnxruntime's quantizers")
    ap.add_argument("--in-memory-size", type=parse_size, default=parse_size("256M"),
                    help="weights of the in-memory reference model (default 256M; 0: none)")
    ap.add_argument("--check", action="store_true", help="let compress run its output check in onnxruntime")
    ap.add_argument("--workdir", default=None, help="where to generate (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the generated models and outputs")
    ap.add_argument("--dask", type=int, default=0, metavar="N",
                    help="also run the presets on N local Dask workers against serial (benchmarks/scale_dask.py)")
    args = ap.parse_args(argv)
    presets = [p for p in args.presets.split(",") if p]
    work = tempfile.mkdtemp(prefix="bench-scale-", dir=args.workdir)
    try:
        layers, dim = shape_for(args.size)
        weights = layers * dim * dim * 4
        print(f"model: {layers} MatMul layers of {dim}x{dim} fp32 = {weights / GB:.2f} GB in external data; "
              f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}; {load()}", flush=True)
        model = in_child(generate, os.path.join(work, "big"), layers, dim)
        ref = {}
        rows = []
        if args.in_memory_size:
            small = in_child(in_memory_model, os.path.join(work, "small"), args.in_memory_size)
            sl, sd = shape_for(args.in_memory_size)
            small_weights = sl * sd * sd * 4
            for p in presets:
                r = ours(small, os.path.join(work, "small", f"out-{p}.onnx"), OURS[p][0], args.check)
                ref[p] = r["wall"] / (small_weights / GB)
                rows.append(row(f"in-memory {small_weights / 1e6:.0f} MB: {p}", r, small_weights))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
        peer_runs = {}
        if args.peers:
            for name, script in PEERS.items():
                if any(OURS[p][1] == name for p in presets):
                    peer_runs[name] = peer(model, os.path.join(work, "big", f"peer-{len(peer_runs)}.onnx"), script)
                    rows.append(row(name, peer_runs[name], weights))
                    print(table(rows[-1:]).splitlines()[-1], flush=True)
        for p in presets:
            r = ours(model, os.path.join(work, "big", f"out-{p}.onnx"), OURS[p][0], args.check)
            rows.append(row(f"weightpress {p}", r, weights, ref.get(p), peer_runs.get(OURS[p][1])))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
        print(f"at the end: {load()}; this script's own peak RSS {own_peak_mb():.0f} MB (no child's "
              "figure can be below it, see in_child)")
        print()
        print(table(rows))
        if args.dask:  # the Dask rows: their own table (benchmarks/scale_dask.py)
            from scale_dask import dask_rows, table_of

            header, dask_table, notes = dask_rows(model, args.dask, presets)
            print()
            print(table_of(header, dask_table))
            print("\n".join(notes))
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
