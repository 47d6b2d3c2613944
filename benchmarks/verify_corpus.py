"""`verify` over the real models of the corpus (benchmarks/corpus/models.py) and their int8 compression.

    python benchmarks/verify_corpus.py                     # every available model
    python benchmarks/verify_corpus.py --only bert_tiny --only magika --samples 8

For each model: import, compress with affine_quantize_weights{dtype="int8"}, then verify the
compressed program against the original four ways: generated inputs (the model's domain:
token ids below their table, 0/1 masks, symbolic dims drawn 1..4 unless --dim) and the
corpus's own inputs, each in the interpreter and in onnxruntime, at --snr-db (default 20).
One line per way: passed / FAILED with the reason, the worst output's SNR and cosine, seconds.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]


def _worst(report) -> str:
    if not report.outputs:
        return "-"
    name, o = min(report.outputs.items(), key=lambda kv: (kv[1].snr_db if not math.isnan(kv[1].snr_db) else -1e9))
    return f"{name}: SNR {o.snr_db:.1f} dB, cosine {o.cosine:.5f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", help="model name (repeatable)")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--snr-db", type=float, default=20.0)
    ap.add_argument("--dim", action="append", default=[], help="name=N for generated inputs")
    args = ap.parse_args(argv)
    dims = {k: int(v) for k, _, v in (d.partition("=") for d in args.dim)}

    from corpus import models as corpus

    from ir.formats.onnx import import_onnx
    from pipeline import Pipeline, verify

    pipe = Pipeline.from_spec('affine_quantize_weights{dtype="int8"}')
    for model in corpus.MODELS:
        if args.only and model.name not in args.only:
            continue
        try:
            path = corpus.locate(model)
            before = import_onnx(path)
            after = pipe.run(before).result
        except Exception as e:  # noqa: BLE001 - one line per model
            print(f"{model.name:20s} unavailable or not compressible: {type(e).__name__}: {e}"[:300])
            continue
        fn_dims = {k: v for k, v in dims.items()
                   if any(k == d for v_ in before.functions["main"].inputs for d in v_.shape)}
        for way, kwargs in (("generated", {"samples": args.samples, "dims": fn_dims}),
                            ("real", {"inputs": model.inputs(0)})):
            for evaluator in ("interpreter", "onnxruntime"):
                started = time.perf_counter()
                try:
                    report = verify(before, after, snr_db=args.snr_db, evaluator=evaluator, **kwargs)
                    verdict = "passed" if report.passed else f"FAILED ({report.reason})"
                    line = f"{verdict[:400]}; {report.samples} samples; {_worst(report)}"
                except Exception as e:  # noqa: BLE001
                    line = f"ERROR {type(e).__name__}: {' '.join(str(e).split())[:200]}"
                seconds = time.perf_counter() - started
                print(f"{model.name:20s} {way:9s} {evaluator:11s} {seconds:7.2f} s  {line}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
