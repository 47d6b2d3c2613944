"""AWQ's exactly folded per-channel scales (awq_scale_weights) before the int4 / LUT quantizers,
on the real encoder of bench_quality: the same model, samples, metric and size, each run with
and without the scaling in front.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_awq.py [--model all_minilm_l6_v2] [--calibration 128]
                                                         [--evaluation 64] [--only TEXT]

Runs (label, the quantizing stages; "+ AWQ" puts awq_scale_weights with the matching target first):
int4 per-block 32 by plain rounding, GPTQ int4 per-block 32 (tables 4-bit token-weighted LUT),
GPTQ uint4 per-block 32 (tables 6-bit), GPTQ 4-bit LUTs per 16 channels. Calibration statistics
are collected once (calibrate, as bench_quality does) and every run starts from them; the
seconds are the compression's, AWQ's search included, not the calibration's.

``--demo``: the same pairs on weightpress's demo MLP (pipeline.demo: linear -> relu -> linear ->
relu -> linear, where the relus let fc1's output channels take fc2's input scales), calibrated
on its first 256 held-out digits and measured on the other 194: top-1 agreement with fp32,
accuracy, min cosine of the logits, size of the .onnx written over fp32's.

For bench_quality (the lead's): ``AWQ_RUNS`` has its OURS row format (label, stages needed, data,
make(stage getter, fp32 bytes), target key), so ``OURS + AWQ_RUNS`` adds the AWQ rows there.
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
from benchmarks.bench_quality import (GROUPED4, INT4_BLOCK, UINT4_BLOCK, cosines, disk_bytes,  # noqa: E402
                                      embeddings, samples)
from benchmarks.corpus import models  # noqa: E402
from ir.formats.onnx import import_onnx  # noqa: E402
from pipeline import Pipeline  # noqa: E402
from pipeline.models import save_model  # noqa: E402


def _awq(target: str, **extra):
    return lambda s: [s("awq_scale_weights")(target=target, **extra)]


def _int4_rtn(s):
    return [s("affine_quantize_weights")(**INT4_BLOCK)]


def _gptq_int4(s):
    return [s("gptq_quantize_weights")(**INT4_BLOCK), s("weighted_palettize_weights")(nbits=4),
            s("affine_quantize_weights")(**INT4_BLOCK)]


def _gptq_uint4(s):
    return [s("gptq_quantize_weights")(**UINT4_BLOCK), s("weighted_palettize_weights")(nbits=6),
            s("affine_quantize_weights")(**UINT4_BLOCK)]


def _gptq_lut4(s):
    return [s("gptq_palettize_weights")(**GROUPED4), s("weighted_palettize_weights")(nbits=4),
            s("palettize_weights")(**GROUPED4)]


# (label, quantizing stages, the AWQ stage that goes before them)
PAIRS = (
    ("int4 per-block 32 (rounding)", _int4_rtn, _awq("int4_block")),
    ("calibrated int4 per-block 32 (GPTQ), tables 4-bit", _gptq_int4, _awq("int4_block")),
    ("calibrated uint4 per-block 32 (GPTQ), tables 6-bit", _gptq_uint4, _awq("uint4_block")),
    ("calibrated palettize 4-bit per 16 ch (GPTQ LUT)", _gptq_lut4, _awq("lut", nbits=4, group_size=16)),
)
# the same with AWQ's search rounding by GPTQ (what runs after it) instead of plain rounding
GPTQ_SEARCH = (
    ("calibrated int4 per-block 32 (GPTQ), tables 4-bit", _gptq_int4, _awq("int4_block", search="gptq")),
    ("calibrated uint4 per-block 32 (GPTQ), tables 6-bit", _gptq_uint4, _awq("uint4_block", search="gptq")),
    ("calibrated palettize 4-bit per 16 ch (GPTQ LUT)", _gptq_lut4,
     _awq("lut", nbits=4, group_size=16, search="gptq")),
)


def runs() -> list:
    """(label, make(stage getter) -> stages) for every run, each without and with AWQ."""
    out = []
    for label, quantize, awq in PAIRS:
        out.append((label, quantize))
        out.append((f"AWQ + {label}", lambda s, q=quantize, a=awq: a(s) + q(s)))
    for label, quantize, awq in GPTQ_SEARCH:
        out.append((f"AWQ (GPTQ search) + {label}", lambda s, q=quantize, a=awq: a(s) + q(s)))
    return out


# bench_quality's OURS format: (label, stages needed, data, make(s, fp32 bytes), target key)
AWQ_RUNS = tuple((label, ("awq_scale_weights",), "stats", (lambda s, b, m=make: m(s)), None)
                 for label, make in runs() if label.startswith("AWQ"))


def _awq_note(trace) -> str:
    for step in trace.steps:
        if step.stage.name == "awq_scale_weights":
            groups = dict(step.stats.get("groups") or {})
            scaled = [g for g in groups.values() if g["alpha"] > 0]
            own = lambda g, k: g.get(k, 0.0)  # noqa: E731 - the producer weight's part of the proxy
            before = sum(g["proxy_unscaled"] - own(g, "producer_proxy_unscaled") for g in groups.values())
            after = sum(g["proxy"] - own(g, "producer_proxy") for g in groups.values())
            mine = sum(own(g, "producer_proxy") - own(g, "producer_proxy_unscaled") for g in groups.values())
            return (f"[AWQ: {len(scaled)} of {len(groups)} fold groups scaled, {step.stats['scaled']} weights; "
                    f"readers' proxy {after:.4g} vs {before:.4g} unscaled, producers' {mine:+.3g}; alphas "
                    + ",".join(f"{groups[k]['alpha']:.2f}" for k in sorted(groups)) + "]")
    return ""


def demo_main(only=None) -> int:
    from ir.interpret import evaluate
    from pipeline import demo
    from pipeline.calibration import calibration_data

    x, y = demo.held_out()
    cal, ev, labels = x[:256], x[256:], y[256:]
    program = demo.build_program()
    logits = lambda p: np.asarray(next(iter(evaluate(p, {"image": ev}).values())), np.float64)  # noqa: E731
    ref = logits(program)
    calibrated = stages.get("calibrate")(data=calibration_data({"image": cal})).run(program).program
    with tempfile.TemporaryDirectory() as tmp:
        save_model(program, os.path.join(tmp, "fp32.onnx"))
        fp32 = os.path.getsize(os.path.join(tmp, "fp32.onnx"))
        print(f"demo MLP: {len(cal)} calibration / {len(ev)} evaluation digits; fp32 accuracy "
              f"{np.mean(ref.argmax(1) == labels):.4f}")
        print(f"{'run':72s} {'top-1':>6s} {'acc':>6s} {'min cos':>8s} {'size':>6s}")
        for i, (label, make) in enumerate(runs()):
            if only and only not in label:
                continue
            trace = Pipeline(make(stages.get)).run(calibrated)
            out = os.path.join(tmp, f"run{i}.onnx")
            save_model(trace.result, out)
            got = logits(trace.result)
            print(f"{label:72s} {np.mean(got.argmax(1) == ref.argmax(1)):6.4f} {np.mean(got.argmax(1) == labels):6.4f} "
                  f"{cosines(got, ref).min():8.4f} {os.path.getsize(out) / fp32:6.3f}  {_awq_note(trace)}", flush=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="all_minilm_l6_v2")
    ap.add_argument("--calibration", type=int, default=128)
    ap.add_argument("--evaluation", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--only", default=None, help="run only the runs whose label contains this text")
    ap.add_argument("--demo", action="store_true", help="the demo MLP instead of the encoder")
    args = ap.parse_args(argv)
    if args.demo:
        return demo_main(args.only)

    path = models.locate(models.get(args.model))
    cal, ev, how = samples(args.model, args.calibration, args.evaluation, args.batch, 1)
    program = import_onnx(path)
    reference = embeddings(path, ev)
    fp32_bytes = os.path.getsize(path)
    print(f"model {args.model}: {path} ({fp32_bytes / 1e6:.1f} MB); {len(reference)} evaluation sentences, "
          f"{args.calibration} calibration ones (disjoint; {how})")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start; "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    from pipeline.calibration import calibration_data

    t0 = time.perf_counter()
    calibrated = stages.get("calibrate")(data=calibration_data(cal)).run(program).program
    print(f"calibrate: {time.perf_counter() - t0:.1f} s (load {os.getloadavg()[0]:.1f})")
    print(f"{'run':72s} {'min cos':>8s} {'mean cos':>8s} {'size':>6s} {'seconds':>8s}")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, make) in enumerate(runs()):
            if args.only and args.only not in label:
                continue
            t0 = time.perf_counter()
            trace = Pipeline(make(stages.get)).run(calibrated)
            seconds = time.perf_counter() - t0
            out_dir = os.path.join(tmp, f"run{i}")
            os.makedirs(out_dir)
            save_model(trace.result, os.path.join(out_dir, "m.onnx"))
            c = cosines(embeddings(os.path.join(out_dir, "m.onnx"), ev), reference)
            ratio = disk_bytes(out_dir) / fp32_bytes
            print(f"{label:72s} {c.min():8.4f} {c.mean():8.4f} {ratio:6.3f} {seconds:8.1f}  {_awq_note(trace)}",
                  flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
