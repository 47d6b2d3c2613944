"""Data-free against calibrated compression on a transformer encoder of the corpus: cosine of
the sentence embeddings against fp32, size on disk against the fp32 file, time.

    python benchmarks/bench_calibrated.py [--model all_minilm_l6_v2 | bert_tiny] [--calibration 128]
                                          [--evaluation 64] [--batch 8]

all_minilm_l6_v2 (the pretrained sentence encoder of the corpus, real sentences split into
disjoint calibration and evaluation sets by benchmarks/corpus/text.py) is used when the corpus
has it, else bert_tiny (random weights, random token ids: a smoke run, its cosines say little).
Metric: per evaluation sample, the cosine of the mean-pooled last hidden state (the model's
sentence_embedding output when it has one) against the fp32 model's, min and mean; every model
run by onnxruntime from the written file. Set OPENBLAS_NUM_THREADS=1 on a busy machine: the
Cholesky factorisations of GPTQ are small, and a contended BLAS thread pool makes them 10-100x
slower.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks.bench_quality import cosines, embeddings, samples as quality_samples  # noqa: E402
from benchmarks.corpus import models  # noqa: E402
from ir.formats.onnx import import_onnx  # noqa: E402
from pipeline import Pipeline  # noqa: E402
from pipeline.calibration import calibration_data  # noqa: E402
from pipeline.models import save_model  # noqa: E402
from stages.calibration import calibrate  # noqa: E402
from stages.compression import (affine_quantize_weights, gptq_palettize_weights, gptq_quantize_weights,  # noqa: E402
                                palettize_weights, weighted_palettize_weights)


def samples(name: str, n_cal: int, n_eval: int, batch: int):
    """(calibration batches, evaluation batches): bench_quality's samples, disjoint."""
    return quality_samples(name, n_cal, n_eval, batch)[:2]


def _embeddings(nbits=4, **grouping):
    """The embedding tables (read by gather), token-frequency weighted, then anything left data-free."""
    return [weighted_palettize_weights(nbits=nbits, **grouping), palettize_weights(nbits=nbits, **grouping)]


G16 = dict(granularity="per_grouped_channel", group_size=16)
INT4 = dict(dtype="uint4", mode="linear", granularity="per_block", block_size=32)

RUNS = (
    ("data-free palettize 4-bit (k-means)", False, lambda: [palettize_weights(nbits=4)]),
    ("calibrated palettize 4-bit (weighted k-means)", True, lambda: _embeddings()),
    ("calibrated palettize 4-bit (GPTQ, weighted LUT)", True, lambda: [gptq_palettize_weights(nbits=4)] + _embeddings()),
    ("data-free palettize 4-bit per 16 channels", False, lambda: [palettize_weights(nbits=4, **G16)]),
    ("calibrated palettize 4-bit per 16 ch (GPTQ)", True,
     lambda: [gptq_palettize_weights(nbits=4, **G16)] + _embeddings(**G16)),
    ("data-free uint4 per-block 32", False, lambda: [affine_quantize_weights(**INT4)]),
    ("calibrated uint4 per-block 32 (GPTQ; tables 4-bit weighted LUT)", True,
     lambda: [gptq_quantize_weights(**INT4)] + _embeddings()),
    ("calibrated uint4 per-block 32 (GPTQ; tables 6-bit weighted LUT)", True,
     lambda: [gptq_quantize_weights(**INT4)] + _embeddings(nbits=6)),
    ("data-free int8 per-channel", False, lambda: [affine_quantize_weights(dtype="int8")]),
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = "all_minilm_l6_v2" if "all_minilm_l6_v2" in models.BY_NAME else "bert_tiny"
    ap.add_argument("--model", default=default)
    ap.add_argument("--calibration", type=int, default=128, help="calibration samples")
    ap.add_argument("--evaluation", type=int, default=64, help="evaluation samples (disjoint)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--only", default=None, help="run only the runs whose label contains this text")
    args = ap.parse_args(argv)

    path = models.locate(models.get(args.model))
    cal, ev = samples(args.model, args.calibration, args.evaluation, args.batch)
    program = import_onnx(path)
    reference = embeddings(path, ev)
    fp32_bytes = os.path.getsize(path)
    print(f"model {args.model}: {path} ({fp32_bytes / 1e6:.1f} MB); {sum(len(b['input_ids']) for b in cal)} "
          f"calibration / {len(reference)} evaluation samples (disjoint); OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    t0 = time.perf_counter()
    calibrated = calibrate(data=calibration_data(cal)).run(program)
    cal_seconds = time.perf_counter() - t0
    print(f"calibrate: {cal_seconds:.1f} s ({calibrated.stats['evaluator']}, {calibrated.stats['calibrated_weights']} weights)")
    print(f"{'run':64s} {'min cos':>8s} {'mean cos':>8s} {'size':>6s} {'seconds':>8s}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, needs_data, make in RUNS:
            if args.only and args.only not in label:
                continue
            source = calibrated.program if needs_data else program
            t0 = time.perf_counter()
            result = Pipeline(make()).apply(source)
            seconds = time.perf_counter() - t0 + (cal_seconds if needs_data else 0.0)
            out = os.path.join(tmp, "m.onnx")
            save_model(result, out)
            c = cosines(embeddings(out, ev), reference)
            print(f"{label:64s} {c.min():8.4f} {c.mean():8.4f} {os.path.getsize(out) / fp32_bytes:6.3f} "
                  f"{seconds:8.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
