"""Reported vs on-disk compression: per preset, the total ratio `weightpress compress`
reports (bytes as written in each file, measured), the ratio the size estimate gives
(what the table showed before it measured the files), and the ratio of the file sizes;
on the demo MLP and on a bigger generated BERT-style encoder layer at opset 17 (its
Shape ops keep the export at 17, where ONNX has no INT4 type).

    python benchmarks/ondisk_sizes.py [--big-dim 256] [--keep DIR] [--matmul-nbits]

The steps are those of `weightpress compress` (load, preset, save, weights_of, the
filesizes measurement, compare), in process, so the byte counts are exact.
"kept": the file saving (input size - output size) as a share of the reported saving.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "formats"))  # the ONNX model builders of the tests

PRESETS = ("int8", "int4-block32", "palettize-4bit", "palettize-4bit-grouped", "sparse-50", "sparse+palettize")


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


def _ratio(pairs) -> tuple:
    before, after = (sum(x) for x in zip(*pairs))
    return before / after, before - after


def measure(model: str, out_dir: str, options: dict) -> list:
    from pipeline import Pipeline
    from pipeline import report as rep
    from pipeline.filesizes import measure_file
    from pipeline.models import load_model, save_model

    program = load_model(model)
    size_in = os.path.getsize(model)
    before = rep.weights_of(program)
    sizes_in = measure_file(model, program, [w.name for w in before]).weights
    rows = []
    for preset in PRESETS:
        out = os.path.join(out_dir, os.path.basename(model).replace(".onnx", f"_{preset.replace('+', '_')}.onnx"))
        result = Pipeline.preset(preset).run(program).result
        save_model(result, out, **options)
        after = rep.weights_of(result)
        changes = rep.compare(before, after, before_sizes=sizes_in,
                              after_sizes=measure_file(out, result, [w.name for w in after]).weights)
        estimated, _ = _ratio([(c.before.stored_bytes, c.after.stored_bytes) for c in changes])
        reported, saving = _ratio([(c.before_bytes, c.after_bytes) for c in changes])
        size_out = os.path.getsize(out)
        rows.append((preset, f"{estimated:6.2f}x", f"{reported:6.2f}x", f"{size_in / size_out:6.2f}x",
                     f"{saving:>10d}", f"{size_in - size_out:>10d}", f"{(size_in - size_out) / saving:7.1%}",
                     f"{size_out:>9d}"))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--big-dim", type=int, default=256)
    ap.add_argument("--keep", metavar="DIR", help="write the models here (default: a temporary directory)")
    ap.add_argument("--matmul-nbits", action="store_true", help="export with matmul_nbits=True")
    args = ap.parse_args()
    options = {"matmul_nbits": True} if args.matmul_nbits else {}
    with tempfile.TemporaryDirectory() as tmp:
        where = args.keep or tmp
        os.makedirs(where, exist_ok=True)
        for model in (demo_model(where), big_model(where, args.big_dim)):
            print(f"\n{os.path.basename(model)}: {os.path.getsize(model)} bytes")
            head = ("preset", "estimated", "reported", "file", "rep. saving", "file saving", "kept", "out bytes")
            print("  ".join(f"{h:>22}" if i == 0 else f"{h:>11}" for i, h in enumerate(head)))
            for row in measure(model, where, options):
                print("  ".join(f"{c:>22}" if i == 0 else f"{c:>11}" for i, c in enumerate(row)))


if __name__ == "__main__":
    main()
