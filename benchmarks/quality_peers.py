"""Peers for the quality benchmark, as rows: NNCF's weight compression on an ONNX model.

    from benchmarks.quality_peers import nncf_rows
    rows = nncf_rows("model.onnx", calib_feeds, eval_fn, workdir)
    # [{"run": str, "min_cos": float|None, "mean_cos": float|None, "size": float|None,
    #   "seconds": float|None, "bytes": int|None, "note": str}, ...]

- `calib_feeds`: calibration batches, each {input name: array} as onnxruntime takes them;
- `eval_fn(model_path) -> (min_cos, mean_cos)`: the caller's metric on its evaluation samples;
- `size`: bytes on disk of what was written (model + external data) over the fp32 model's;
- `seconds`: NNCF's compress_weights call (statistics collection included), not the save.

NNCF (`pip install nncf`; never a weightpress dependency: the `bench` extra) compresses
MatMul / Gemm weights (and Gather embedding tables, into its int8 backup) of an ONNX model.
Its ONNX backend (nncf 3.4) takes int8 / int4 modes, group sizes, AWQ and scale estimation
with a dataset, and the mixed int4 / int8 precision chosen by sensitivity (`ratio`); it
refuses GPTQ and LoRA correction for ONNX. Each run is asked for as the NNCF documentation
gives it; a run NNCF refuses or that fails here is a row saying why (min_cos None), so a
missing or changed NNCF never stops the benchmark. When NNCF is not installed, one row says so.

NNCF 3.4.0 writes a MatMulNBits with the bias of the Add after the MatMul *and* keeps that
Add (found on all-MiniLM-L6-v2: 35 of 35 nodes, the bias added twice; min cosine 0.45 for
int4 RTN where onnxruntime's own quantizer gets 0.96). Each run that has such nodes gets a
second row, marked "double bias removed", with the bias input taken out of those nodes
(`drop_double_bias`): NNCF's weights as they are, without the bug. Both rows are printed.

Runs:
  NNCF int8_asym per-channel (data-free)
  NNCF int4_sym g32, all layers int4 (data-free RTN)        ratio 1.0
  NNCF int4_sym g32 + scale estimation (data-aware)         ratio 1.0, AWQ asked for too
  NNCF int4_sym g32, 80% int4 by sensitivity + AWQ + SE     ratio 0.8 (NNCF's usual data-aware set-up)
  NNCF int4_sym g32 + GPTQ (data-aware)                     ratio 1.0 (refused by the ONNX backend)
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable

GROUP = 32  # the group size of the int4 runs: what our int4 per-block and onnxruntime's rows use


def _runs(nncf) -> list:
    """(label, compress_weights keywords, needs data)."""
    m = nncf.CompressWeightsMode
    sens = nncf.SensitivityMetric.HESSIAN_INPUT_ACTIVATION
    return [
        ("NNCF int8_asym per-channel (data-free)", dict(mode=m.INT8_ASYM), False),
        ("NNCF int4_sym g32, all int4 (data-free RTN)", dict(mode=m.INT4_SYM, group_size=GROUP, ratio=1.0), False),
        ("NNCF int4_sym g32 + AWQ + scale estimation (data-aware)",
         dict(mode=m.INT4_SYM, group_size=GROUP, ratio=1.0, awq=True, scale_estimation=True), True),
        ("NNCF int4_sym g32, 80% int4 by sensitivity + AWQ + SE (data-aware)",
         dict(mode=m.INT4_SYM, group_size=GROUP, ratio=0.8, sensitivity_metric=sens, awq=True,
              scale_estimation=True), True),
        ("NNCF int4_sym g32 + GPTQ (data-aware)", dict(mode=m.INT4_SYM, group_size=GROUP, ratio=1.0, gptq=True), True),
    ]


def _row(run, min_cos=None, mean_cos=None, size=None, seconds=None, nbytes=None, note="") -> dict:
    return {"run": run, "min_cos": min_cos, "mean_cos": mean_cos, "size": size, "seconds": seconds,
            "bytes": nbytes, "note": note}


def _why(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


def _disk_bytes(path: str) -> int:
    """The model file and every external-data file it names."""
    from benchmarks.corpus.checks import on_disk_bytes

    return on_disk_bytes(path)


def _quiet(nncf) -> None:
    logging.getLogger("nncf").setLevel(logging.ERROR)
    try:
        nncf.set_log_level(logging.ERROR)
    except AttributeError:  # older NNCF: the logger above is all there is
        pass


def nncf_rows(fp32_model_path: str, calib_feeds, eval_fn: Callable, workdir: str) -> list:
    """One row per NNCF run (see the module docstring); never raises for NNCF's sake."""
    try:
        import nncf
        import onnx
    except ImportError as e:
        return [_row("NNCF compress_weights", note=f"not run: nncf is not installed ({_why(e)}); "
                                                   "pip install nncf")]
    _quiet(nncf)
    version = getattr(nncf, "__version__", "?")
    fp32_bytes = _disk_bytes(fp32_model_path)
    feeds = list(calib_feeds)
    wanted = {i.name for i in onnx.load(fp32_model_path, load_external_data=False).graph.input}
    dataset = nncf.Dataset([{k: v for k, v in f.items() if k in wanted} for f in feeds])
    rows = []
    for i, (label, options, data) in enumerate(_runs(nncf)):
        label = f"{label} [nncf {version}]"
        out_dir = os.path.join(workdir, f"nncf_{i}")
        os.makedirs(out_dir, exist_ok=True)
        out = os.path.join(out_dir, "m.onnx")
        try:
            model = onnx.load(fp32_model_path)  # each run gets its own copy: NNCF edits the proto it is given
            t0 = time.perf_counter()
            compressed = nncf.compress_weights(model, dataset=dataset if data else None,
                                               subset_size=max(len(feeds), 1) if data else 128, **options)
            seconds = time.perf_counter() - t0
            onnx.save(compressed, out, save_as_external_data=compressed.ByteSize() > 1_900_000_000)
        except Exception as e:  # noqa: BLE001 - a peer that refuses or fails is a row, not a crash
            rows.append(_row(label, note=f"not run: {_why(e)}"))
            continue
        try:
            min_cos, mean_cos = eval_fn(out)
        except Exception as e:  # noqa: BLE001 - e.g. onnxruntime without the op NNCF wrote
            rows.append(_row(label, seconds=seconds, note=f"written but not evaluated: {_why(e)}"))
            continue
        nbytes = _disk_bytes(out)
        rows.append(_row(label, float(min_cos), float(mean_cos), nbytes / fp32_bytes, seconds, nbytes,
                         _what_nncf_wrote(compressed)))
        fixed = drop_double_bias(compressed)
        if fixed:  # the same weights with NNCF's double bias taken out: what its weights are worth
            out_fixed = os.path.join(out_dir, "fixed.onnx")
            onnx.save(compressed, out_fixed)
            try:
                min_cos, mean_cos = eval_fn(out_fixed)
                nbytes = _disk_bytes(out_fixed)
                rows.append(_row(f"{label}, double bias removed", float(min_cos), float(mean_cos),
                                 nbytes / fp32_bytes, seconds, nbytes,
                                 f"{fixed} MatMulNBits had the bias their Add adds too (NNCF bug); removed"))
            except Exception as e:  # noqa: BLE001
                rows.append(_row(f"{label}, double bias removed", note=f"not evaluated: {_why(e)}"))
    return rows


def drop_double_bias(model) -> int:
    """Remove the bias input of each MatMulNBits whose output feeds an Add of that same bias
    (NNCF 3.4's ONNX backend moves a MatMul's bias into MatMulNBits and keeps the Add: the
    bias is added twice). Edits `model` in place; returns how many nodes it fixed."""
    consumers: dict = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    fixed = 0
    for node in model.graph.node:
        if node.op_type != "MatMulNBits" or len(node.input) < 6 or not node.input[5]:
            continue
        bias = node.input[5]
        if any(c.op_type == "Add" and bias in c.input for c in consumers.get(node.output[0], [])):
            node.input[5] = ""
            while node.input and not node.input[-1]:
                node.input.pop()
            fixed += 1
    return fixed


def _what_nncf_wrote(model) -> str:
    """Which compressed forms the model holds (MatMulNBits, DequantizeLinear ...): a short note."""
    from collections import Counter

    kinds = Counter(n.op_type for n in model.graph.node if n.op_type in ("MatMulNBits", "DequantizeLinear",
                                                                         "GatherBlockQuantized", "MatMul", "Gemm"))
    return ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items()))


def main(argv=None) -> int:
    """A small run of the rows on its own: nncf_rows on a corpus model with bench_quality's samples
    and metric (python benchmarks/quality_peers.py [--model all_minilm_l6_v2] [--calibration 64])."""
    import argparse
    import sys
    import tempfile

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks import bench_quality as bq
    from benchmarks.corpus import models

    ap = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    ap.add_argument("--model", default="all_minilm_l6_v2")
    ap.add_argument("--calibration", type=int, default=128)
    ap.add_argument("--evaluation", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args(argv)
    path = models.locate(models.get(args.model))
    cal, ev, how = bq.samples(args.model, args.calibration, args.evaluation, args.batch)
    reference = bq.embeddings(path, ev)

    def eval_fn(model_path):
        c = bq.cosines(bq.embeddings(model_path, ev), reference)
        return float(c.min()), float(c.mean())

    print(f"model {args.model}: {path}; {how}; {args.calibration} calibration / {args.evaluation} evaluation")
    print(f"{'run':72s} {'min cos':>8s} {'mean cos':>8s} {'size':>6s} {'seconds':>8s}  note")
    with tempfile.TemporaryDirectory() as tmp:
        for r in nncf_rows(path, cal, eval_fn, tmp):
            if r["min_cos"] is None:
                print(f"{r['run']:72s} {r['note']}")
            else:
                print(f"{r['run']:72s} {r['min_cos']:8.4f} {r['mean_cos']:8.4f} {r['size']:6.3f} "
                      f"{r['seconds']:8.1f}  {r['note']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
