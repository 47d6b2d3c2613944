"""End-to-end output error: the model before and after compression run on the same samples
(the calibration samples, when `weightpress compress --calibration` was given), compared
output by output. The figure the report and the compress summary show beside the
per-weight ones: a weight's SNR says how far the weight moved, this says how far the
answers did.

    errors = output_errors(before, after, feeds)     # feeds: [{input name: array}, ...]
    for e in errors: e.output, e.samples, e.min_cosine, e.mean_cosine, e.snr_db, e.equal

Per output: every batch is cut along its leading axis into samples (a batch of one, or an
output without a leading axis of the batch's size, is one sample); per sample the cosine of
the flattened output against the reference; over all samples together the SNR and the max
abs error relative to the reference's largest magnitude. Every figure is defined in
stages.compression.numeric.metrics. An integer output (class labels, token ids) gets the
share of equal elements instead (`equal`), its float figures are None.

Both programs run in onnxruntime when they export to ONNX and it is installed (fast on big
models), else in the interpreter (ir.interpret, the oracle); `evaluator` says which. At most
`max_batches` batches are run: the figure is a summary, not an evaluation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from stages.compression.numeric import metrics


@dataclass(frozen=True)
class OutputError:
    output: str
    samples: int
    evaluator: str
    cosines: tuple = ()  # per sample, in order (float outputs)
    snr_db: Optional[float] = None
    max_rel_error: Optional[float] = None
    equal: Optional[float] = None  # integer outputs: share of equal elements

    @property
    def min_cosine(self) -> Optional[float]:
        return min(self.cosines) if self.cosines else None

    @property
    def mean_cosine(self) -> Optional[float]:
        return float(np.mean(self.cosines)) if self.cosines else None


def _ort_runner(program, function: str):
    import onnxruntime as ort

    from ir.formats.onnx.exporter import to_onnx_model

    fn = program.functions[function]
    model = to_onnx_model(program, None, function).SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = 4
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    # the exporter may rename inputs / outputs it must (keywords, clashes): match by position
    feed_names = dict(zip([v.name for v in fn.inputs], [i.name for i in session.get_inputs()]))
    out_names = [v.name for v in fn.outputs]

    def run(feeds):
        got = session.run(None, {feed_names[k]: v for k, v in feeds.items() if k in feed_names})
        return dict(zip(out_names, got))

    return run


def _interpreter_runner(program, function: str):
    from ir.interpret import evaluate

    return lambda feeds: evaluate(program, feeds, function)


def _runners(before, after, function: str, evaluator: str):
    """(run before, run after, evaluator name): onnxruntime for both or the interpreter for both."""
    if evaluator in ("auto", "onnxruntime"):
        try:
            return _ort_runner(before, function), _ort_runner(after, function), "onnxruntime"
        except Exception:  # noqa: BLE001 - not exportable, or no onnxruntime: the oracle runs anything
            if evaluator == "onnxruntime":
                raise
    return _interpreter_runner(before, function), _interpreter_runner(after, function), "interpreter"


def _samples(arr: np.ndarray, batch: int) -> list:
    arr = np.asarray(arr)
    if arr.ndim and arr.shape[0] == batch and batch > 1:
        return [arr[i] for i in range(batch)]
    return [arr]


def _batch_size(feeds) -> int:
    sizes = {np.shape(v)[0] for v in feeds.values() if np.ndim(v)}
    return sizes.pop() if len(sizes) == 1 else 1


def _figures(name, refs: list, gots: list, evaluator: str) -> OutputError:
    ref0 = np.asarray(refs[0])
    if ref0.dtype.kind not in "fc":
        same = sum(int(np.sum(np.asarray(r) == np.asarray(g))) for r, g in zip(refs, gots))
        total = sum(np.asarray(r).size for r in refs)
        return OutputError(name, len(refs), evaluator, equal=same / total if total else 1.0)
    cos, total, peak = [], metrics.Sums(), 0.0
    for r, g in zip(refs, gots):
        s = metrics.sums(r, g)
        cos.append(s.cosine)
        total = total + s
        peak = max(peak, float(np.max(np.abs(np.asarray(r, np.float64)))) if np.size(r) else 0.0)
    rel = total.max_abs_error / peak if peak > 0 else total.max_abs_error
    return OutputError(name, len(refs), evaluator, tuple(cos), total.snr_db, rel)


def output_errors(before, after, feeds, max_batches: int = 8, function: str = "main",
                  evaluator: str = "auto") -> list:
    """One OutputError per output of `function` over the first `max_batches` feeds."""
    feeds = list(feeds)[:max_batches]
    if not feeds:
        return []
    run_before, run_after, used = _runners(before, after, function, evaluator)
    refs: dict = {}
    gots: dict = {}
    for f in feeds:
        batch = _batch_size(f)
        ref, got = run_before(f), run_after(f)
        for name, value in ref.items():
            if name not in got or np.shape(value) != np.shape(got[name]):
                raise ValueError(f"output error: output {name!r} is missing or changed shape after compression")
            refs.setdefault(name, []).extend(_samples(value, batch))
            gots.setdefault(name, []).extend(_samples(got[name], batch))
    return [_figures(name, refs[name], gots[name], used) for name in refs]


def output_error_line(errors, source: str = "the calibration samples") -> str:
    """One line for the compress summary: the worst output first."""
    parts = []
    for e in errors:
        if e.equal is not None:
            parts.append(f"{e.output}: {e.equal:.1%} equal")
        else:
            snr = "inf" if e.snr_db is not None and math.isinf(e.snr_db) else f"{e.snr_db:.1f} dB"
            parts.append(f"{e.output}: cosine min {e.min_cosine:.4f} / mean {e.mean_cosine:.4f}, SNR {snr}")
    n = max((e.samples for e in errors), default=0)
    return f"output error on {n} of {source} ({errors[0].evaluator if errors else '-'}): " + "; ".join(parts)
