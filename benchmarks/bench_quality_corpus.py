"""What our compression does to the answers of the vision and small models of the real-model
corpus: size on disk against top-1 agreement with the fp32 model (accuracy where labels exist).

    python benchmarks/bench_quality_corpus.py [--only MODEL ...] [--runs TEXT ...] [--markdown]

Models (benchmarks/corpus/models.py; each run by onnxruntime from the file written), their
inputs and the task figure ("agree"):
  ocr_cls       text-orientation classifier on generated text-like pages: top-1 agreement
  ocr_det       text detector: IoU of the text masks (probability > 0.3, the detector's own
                binarisation threshold) against fp32's
  ocr_rec       SVTR recognizer: per-timestep top-1 agreement (what its CTC decoding reads) at
                the steps where fp32 is sure (top probability >= 0.5; on generated glyphs most
                steps are near ties)
  magika        file-type classifier on the head and tail bytes of real files on this machine
                (its feature layout: 1024 + 1024 bytes, padding 256): top-1 agreement
  sklearn_mlp   digits MLP (skl2onnx, ZipMap) on the 597 held-out digits: label agreement, and
                accuracy against the true labels
  demo_digits   weightpress's own demo MLP (pipeline.demo) on its held-out digits: the same
  vad_op15      silero VAD on speech-like audio chunks: agreement of the speech decision (p > 0.5)
  ocr_rec_head, bert_tiny: no task output (features; random weights): min cosine only
and for every model the min cosine over samples and float outputs.

Runs: int8 per-channel; palettize 6 and 4 bits (k-means); int4 per block of 32; the
mixed-precision allocation --target-bpw 4.5 (data-free proxy); and, calibrated on inputs
disjoint from the evaluation ones (other seeds / other rows): GPTQ int4 per block 32, GPTQ
onto a 4-bit LUT per tensor (the weighted k-means LUT; as "palettize 4-bit" with data), each
followed by its data-free stage for the weights GPTQ skips, and --target-bpw 4.5 with the
calibrated proxy. The calibrate step is the one the CLI runs before those stages
(pipeline.calibration.calibrate_stage: with the measured sensitivity before mixed_precision).
Size: the file(s) written over the fp32 file.
A run that fails prints its one-line reason in the table instead of figures.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks.corpus import builders, checks, models  # noqa: E402

INT4_BLOCK = dict(dtype="int4", granularity="per_block", block_size=32)

# (label, calibrated, stage list from the registry's getter)
RUNS = (
    ("int8 per-channel", False, lambda s: [s("affine_quantize_weights")(dtype="int8")]),
    ("palettize 6-bit", False, lambda s: [s("palettize_weights")(nbits=6)]),
    ("palettize 4-bit", False, lambda s: [s("palettize_weights")(nbits=4)]),
    ("int4 per-block 32", False, lambda s: [s("affine_quantize_weights")(**INT4_BLOCK)]),
    ("--target-bpw 4.5 (data-free)", False, lambda s: [s("mixed_precision")(target_bpw=4.5)]),
    ("calibrated int4 per-block 32 (GPTQ)", True,
     lambda s: [s("gptq_quantize_weights")(**INT4_BLOCK), s("affine_quantize_weights")(**INT4_BLOCK)]),
    ("calibrated palettize 4-bit (GPTQ)", True,
     lambda s: [s("gptq_palettize_weights")(nbits=4), s("palettize_weights")(nbits=4)]),
    ("calibrated --target-bpw 4.5", True, lambda s: [s("mixed_precision")(target_bpw=4.5)]),
)


# ---- inputs ------------------------------------------------------------------------------------

def _seeded(name: str, seeds) -> list:
    m = models.get(name)
    return [c for seed in seeds for c in m.inputs(seed)]


def _magika_features(data: bytes, size: int = 1024, block: int = 4096, pad: int = 256) -> np.ndarray:
    """magika's model input for one file: the first / last `size` bytes of its first / last
    `block` bytes with the whitespace at the file's ends stripped, padded with `pad`."""
    beg = data[:block].lstrip()[:size]
    end = data[-block:].rstrip()[-size:] if data else b""
    row = np.full(2 * size, pad, np.int32)
    row[:len(beg)] = np.frombuffer(beg, np.uint8)
    if end:
        row[2 * size - len(end):] = np.frombuffer(end, np.uint8)
    return row


def real_files(limit: int, skip: int = 0) -> list:
    """Paths of real files of varied types under the Python installation (sorted, so stable):
    sources, binaries, text, data; at most `limit` after skipping `skip` (calibration files are
    other files than evaluation ones)."""
    root = os.path.dirname(os.path.dirname(np.__file__))  # site-packages
    by_suffix: dict = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            suffix = os.path.splitext(f)[1].lower() or "(none)"
            path = os.path.join(dirpath, f)
            if len(by_suffix.setdefault(suffix, [])) < 6 and os.path.getsize(path) >= 64:
                by_suffix[suffix].append(path)
    ordered = [p for i in range(6) for s in sorted(by_suffix) for p in by_suffix[s][i:i + 1]]
    return ordered[skip:skip + limit]


def _magika_cases(paths, batch: int = 8) -> list:
    rows = [_magika_features(open(p, "rb").read()) for p in paths]
    return [{"bytes": np.stack(rows[i:i + batch])} for i in range(0, len(rows), batch)]


def _digits_split():
    x, y = builders.digits()
    return x[1200:], y[1200:], x[:1200]


# ---- task figures --------------------------------------------------------------------------------

def top1(ref_runs, got_runs, output=None) -> float:
    """Share of positions (all axes but the last) where the argmax over the last axis agrees."""
    same = total = 0
    for r, g in zip(ref_runs, got_runs):
        key = output or next(iter(r))
        a, b = np.argmax(r[key], -1), np.argmax(g[key], -1)
        same, total = same + int(np.sum(a == b)), total + a.size
    return same / total


def confident_top1(ref_runs, got_runs, floor: float = 0.5) -> float:
    """top1 over the positions where fp32's top probability is at least `floor`: a recognizer
    on generated glyphs (not real text) is unsure at most steps, and a near tie flipping says
    nothing; where it is sure (the CTC blanks and the characters it reads) a flip is an error."""
    same = total = 0
    for r, g in zip(ref_runs, got_runs):
        key = next(iter(r))
        sure = np.max(r[key], -1) >= floor
        a, b = np.argmax(r[key], -1)[sure], np.argmax(g[key], -1)[sure]
        same, total = same + int(np.sum(a == b)), total + a.size
    return same / total if total else math.nan


def mask_iou(ref_runs, got_runs, threshold: float = 0.3) -> float:
    inter = union = 0
    for r, g in zip(ref_runs, got_runs):
        a, b = next(iter(r.values())) > threshold, next(iter(g.values())) > threshold
        inter, union = inter + int(np.sum(a & b)), union + int(np.sum(a | b))
    return inter / union if union else 1.0


def decision(ref_runs, got_runs, output="output", threshold: float = 0.5) -> float:
    same = total = 0
    for r, g in zip(ref_runs, got_runs):
        a, b = r[output] > threshold, g[output] > threshold
        same, total = same + int(np.sum(a == b)), total + a.size
    return same / total


def labels_equal(ref_runs, got_runs, output) -> float:
    same = sum(int(np.sum(r[output] == g[output])) for r, g in zip(ref_runs, got_runs))
    return same / sum(np.size(r[output]) for r in ref_runs)


@dataclass(frozen=True)
class Spec:
    name: str
    path: Callable[[], str]
    eval_cases: Callable[[], list]
    calib_cases: Callable[[], list]
    agree: Optional[Callable] = None  # (ref runs, got runs) -> share
    agree_name: str = ""
    accuracy: Optional[Callable] = None  # runs -> accuracy against the true labels


def _demo_path() -> str:
    from pipeline import demo
    from pipeline.models import save_model

    path = os.path.join(models.default_cache_dir(), "demo_digits.onnx")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        save_model(demo.build_program(), path)
    return path


def _demo_split():
    from pipeline import demo

    x, y = demo.held_out()
    return x[:256], x[256:], y[256:]  # calibration rows, evaluation rows, their labels


def _corpus(name):
    return lambda: models.locate(models.get(name))


def _sk_acc(runs):
    x, y, _ = _digits_split()
    return float(np.mean(np.concatenate([r["output_label"] for r in runs]) == y))


def _demo_acc(runs):
    _, _, y = _demo_split()
    return float(np.mean(np.argmax(np.concatenate([r["logits"] for r in runs]), -1) == y))


SPECS = (
    Spec("ocr_cls", _corpus("ocr_cls"), lambda: _seeded("ocr_cls", range(100, 116)),
         lambda: _seeded("ocr_cls", range(8)), top1, "top-1"),
    Spec("ocr_det", _corpus("ocr_det"), lambda: _seeded("ocr_det", range(100, 106)),
         lambda: _seeded("ocr_det", range(4)), mask_iou, "mask IoU"),
    Spec("ocr_rec", _corpus("ocr_rec"), lambda: _seeded("ocr_rec", range(100, 112)),
         lambda: _seeded("ocr_rec", range(6)), confident_top1, "top-1, sure steps"),
    Spec("ocr_rec_head", _corpus("ocr_rec_head"), lambda: _seeded("ocr_rec_head", range(100, 108)),
         lambda: _seeded("ocr_rec_head", range(4))),
    Spec("magika", _corpus("magika"), lambda: _magika_cases(real_files(96, skip=64)),
         lambda: _magika_cases(real_files(64)), top1, "top-1"),
    Spec("sklearn_mlp", _corpus("sklearn_mlp_zipmap"), lambda: [{"X": _digits_split()[0]}],
         lambda: [{"X": _digits_split()[2][:256]}], lambda a, b: labels_equal(a, b, "output_label"), "label",
         _sk_acc),
    Spec("demo_digits", _demo_path, lambda: [{"image": _demo_split()[1]}], lambda: [{"image": _demo_split()[0]}],
         lambda a, b: top1(a, b, "logits"), "top-1", _demo_acc),
    Spec("vad_op15", _corpus("vad_op15"), lambda: _seeded("vad_op15", range(100, 116)),
         lambda: _seeded("vad_op15", range(8)), decision, "speech y/n"),
    Spec("bert_tiny", _corpus("bert_tiny"), lambda: _seeded("bert_tiny", range(100, 108)),
         lambda: _seeded("bert_tiny", range(8))),
)


# ---- running ---------------------------------------------------------------------------------------

def _min_cosine(ref_runs, got_runs) -> float:
    figure, _ = checks.compare(ref_runs, got_runs, metric=checks.cosine, worst=min)
    return figure


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:150]}"


def run_model(spec: Spec, wanted_runs, workdir: str) -> list:
    """[(run label, figures dict or error text)] for one model; the fp32 row first."""
    import stages
    from ir.formats.onnx import import_onnx
    from pipeline import Pipeline
    from pipeline.calibration import calibrate_stage
    from pipeline.models import save_model

    path = spec.path()
    fp32_bytes = checks.on_disk_bytes(path)
    cases = spec.eval_cases()
    ref = checks.run_onnxruntime(path, cases)
    rows = [("fp32", {"size": 1.0, "bytes": fp32_bytes, "agree": 1.0 if spec.agree else None, "cos": 1.0,
                      "acc": spec.accuracy(ref) if spec.accuracy else None, "seconds": 0.0})]
    program = import_onnx(path)
    calibrated = {}  # calibrate's options -> the calibrated program (shared by the runs that ask the same)
    for label, needs_data, make in RUNS:
        if not any(w in label for w in wanted_runs):
            continue
        try:
            t0 = time.perf_counter()
            source = program
            steps = make(stages.get)
            if needs_data:
                # the calibrate step the CLI would run before these stages (with the measured
                # sensitivity when mixed_precision follows: pipeline.calibration.calibrate_stage)
                step = calibrate_stage(spec.calib_cases(), following=steps)
                key = tuple(sorted((k, v) for k, v in step.params.items() if k != "data"))
                if key not in calibrated:
                    calibrated[key] = step.run(program).program
                source = calibrated[key]
            trace = Pipeline(steps).run(source)
            seconds = time.perf_counter() - t0
            out_dir = os.path.join(workdir, f"{spec.name}_{abs(hash(label))}")
            os.makedirs(out_dir, exist_ok=True)
            out = os.path.join(out_dir, "m.onnx")
            from stages.calibration import without_calibration

            save_model(without_calibration(trace.result), out)
            got = checks.run_onnxruntime(out, cases)
            nbytes = checks.on_disk_bytes(out)
            rows.append((label, {"size": nbytes / fp32_bytes, "bytes": nbytes, "cos": _min_cosine(ref, got),
                                 "agree": spec.agree(ref, got) if spec.agree else None,
                                 "acc": spec.accuracy(got) if spec.accuracy else None, "seconds": seconds}))
        except Exception as e:  # noqa: BLE001 - one failing run is a row saying why
            rows.append((label, _one_line(e)))
    return rows


def _fmt(x, spec=".4f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def table(results, markdown: bool = False) -> str:
    heads = ("model", "run", "size", "agree", "(what)", "accuracy", "min cos", "seconds")
    lines = []
    for spec, rows in results:
        for label, r in rows:
            if isinstance(r, str):
                lines.append((spec.name, label, "", "", "", "", "", r))
            else:
                lines.append((spec.name, label, _fmt(r["size"], ".3f"), _fmt(r["agree"]),
                              spec.agree_name or "-", _fmt(r["acc"]), _fmt(r["cos"]), _fmt(r["seconds"], ".1f")))
    if markdown:
        return "\n".join(["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)] +
                         ["| " + " | ".join(map(str, ln)) + " |" for ln in lines])
    widths = [max(len(str(x)) for x in col) for col in zip(heads, *lines)]
    fmt = lambda row: "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(heads), fmt(["-" * w for w in widths])] + [fmt(ln) for ln in lines])


SHORT = {"int8 per-channel": "int8", "palettize 6-bit": "LUT 6-bit", "palettize 4-bit": "LUT 4-bit",
         "int4 per-block 32": "int4 b32", "--target-bpw 4.5 (data-free)": "bpw 4.5",
         "calibrated int4 per-block 32 (GPTQ)": "cal. int4 b32 (GPTQ)",
         "calibrated palettize 4-bit (GPTQ)": "cal. LUT 4-bit (GPTQ)", "calibrated --target-bpw 4.5": "cal. bpw 4.5"}


def matrix(results) -> str:
    """One Markdown row per model, one column per run: "task figure (accuracy) @ size"; the
    min cosine where the model has no task figure."""
    runs = [label for label, _, _ in RUNS if any(label == r for _, rows in results for r, _ in rows)]
    out = ["| model (figure) | fp32 | " + " | ".join(SHORT.get(r, r) for r in runs) + " |",
           "|---|---|" + "---|" * len(runs)]
    for spec, rows in results:
        got = dict(rows)

        def cell(r):
            if not isinstance(r, dict):
                return "failed" if r is not None else ""
            main = r["agree"] if r["agree"] is not None else r["cos"]
            acc = f" ({r['acc']:.3f})" if r["acc"] is not None else ""
            return f"{main:.3f}{acc} @ {r['size']:.3f}"

        figure = spec.agree_name or "min cos"
        fp32 = got.get("fp32")
        head = f"acc {fp32['acc']:.3f}" if isinstance(fp32, dict) and fp32["acc"] is not None else "1"
        out.append(f"| {spec.name} ({figure}) | {head} | " + " | ".join(cell(got.get(r)) for r in runs) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", action="append", default=[], help="models to run (default: all)")
    ap.add_argument("--runs", action="append", default=[], help="run labels containing this text (default: all)")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown too")
    args = ap.parse_args(argv)
    wanted_runs = args.runs or [label for label, _, _ in RUNS]
    results = []
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for spec in SPECS:
            if args.only and spec.name not in args.only:
                continue
            try:
                rows = run_model(spec, wanted_runs, tmp)
            except models.ModelUnavailable as e:
                rows = [("(model)", f"unavailable: {e}")]
            results.append((spec, rows))
            print(table([(spec, rows)]), flush=True)
    print()
    print(table(results))
    if args.markdown:
        print()
        print(table(results, markdown=True))
        print()
        print(matrix(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
