"""Reported vs on-disk compression: per preset, the ratio `weightpress compress` prints in its
table (total row) against the ratio of the file sizes, on the demo MLP and on a bigger generated
BERT-style encoder layer at opset 17 (whose Shape ops keep it below opset 21).

    python benchmarks/ondisk_sizes.py [--big-dim 256] [--keep DIR] [--extra-args "--onnx-matmul-nbits"]

Each preset runs the real command (`python -m pipeline.cli compress IN -o OUT --preset P`) in a
subprocess; the figures are taken from its table's total row and from os.path.getsize.
"saving kept" is the file saving (input size - output size) as a share of the reported saving.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "formats"))  # the ONNX model builders of the tests

PRESETS = ("int8", "int4-block32", "palettize-4bit", "palettize-4bit-grouped", "sparse-50", "sparse+palettize")
UNITS = {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3}


def demo_model(directory: str) -> str:
    from ir.formats.onnx import export_onnx
    from pipeline import demo

    return export_onnx(demo.build_program(), os.path.join(directory, "demo_fp32.onnx"))


def big_model(directory: str, d: int) -> str:
    import onnx

    from onnx_models import transformer_block

    path = os.path.join(directory, f"encoder_d{d}.onnx")
    onnx.save(transformer_block(d=d, heads=4, vocab=8 * d, ff=4 * d), path)
    return path


def _bytes(text: str) -> float:
    value, unit = text.split()
    return float(value) * UNITS[unit]


def reported(stdout: str):
    """(before, after) bytes of the table's total row."""
    for line in stdout.splitlines():
        if line.startswith("total ("):
            sizes = re.findall(r"[\d.]+ (?:GB|MB|KB|B)\b", line)
            return _bytes(sizes[0]), _bytes(sizes[1])
    raise RuntimeError("no total row in:\n" + stdout)


def measure(model: str, out_dir: str, extra: list) -> list:
    rows = []
    size_in = os.path.getsize(model)
    for preset in PRESETS:
        out = os.path.join(out_dir, os.path.basename(model).replace(".onnx", f"_{preset.replace('+', '_')}.onnx"))
        cmd = [sys.executable, "-m", "pipeline.cli", "compress", model, "-o", out, "--preset", preset] + extra
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if done.returncode:
            rows.append((preset, f"failed: {done.stderr.strip().splitlines()[-1]}"))
            continue
        before, after = reported(done.stdout)
        size_out = os.path.getsize(out)
        kept = (size_in - size_out) / (before - after) if before != after else float("nan")
        rows.append((preset, f"{before / after:6.2f}x", f"{size_in / size_out:6.2f}x",
                     f"{int(before - after):>10d}", f"{size_in - size_out:>10d}", f"{kept:7.1%}", f"{size_out:>9d}"))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--big-dim", type=int, default=256)
    ap.add_argument("--keep", metavar="DIR", help="write the models here (default: a temporary directory)")
    ap.add_argument("--extra-args", default="", help="more `compress` options, e.g. --onnx-matmul-nbits")
    args = ap.parse_args()
    extra = shlex.split(args.extra_args)
    with tempfile.TemporaryDirectory() as tmp:
        where = args.keep or tmp
        os.makedirs(where, exist_ok=True)
        for model in (demo_model(where), big_model(where, args.big_dim)):
            print(f"\n{os.path.basename(model)}: {os.path.getsize(model)} bytes")
            head = ("preset", "reported", "file", "rep. saving", "file saving", "kept", "out bytes")
            print("  ".join(f"{h:>11}" for h in head))
            for row in measure(model, where, extra):
                print("  ".join(f"{c:>11}" for c in row))


if __name__ == "__main__":
    main()
