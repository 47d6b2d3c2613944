"""Measured sensitivity: how much of a weight's error reaches the model's outputs, per unit of
the output-error proxy at its own op.

The proxy of a weight error dW (``proxy_distortion``: tr(dW H dW^T) for a linear / matmul
weight, the lookup-weighted row error for an embedding table) measures the error where the
weight is used. What reaches the outputs depends on everything after it: a query or key
projection feeds a softmax that damps most of its error, the last attention output projection
writes into the residual stream right before the final normalisation. On all-MiniLM-L6-v2,
end-to-end error over proxy spans more than 1000x between weights, which is what made the
mixed-precision allocation rank the weights wrongly. So the exchange rate is measured:

for each probed weight alone, the weight is replaced by itself rounded to a symmetric 4-bit
grid per output channel (a fixed, quantization-like error: the probe), the model is run on the
first ``samples`` calibration samples, and

    sensitivity = mean over samples and float outputs of |y' - y|^2 / |y|^2
                  / proxy_distortion(probe error)

is recorded in the weight's statistics, and the same ratio per probe batch (each batch's own
error over the proxy: ``sensitivity_per_batch``, one entry per calibration sample when they are
fed one at a time). ``mixed_precision`` multiplies each candidate's proxy
by it: the proxy keeps the shape of the error within a weight (which candidate is better for
it), the measurement sets the exchange rate between weights. Per sample, |y' - y|^2 / |y|^2
is 2 (1 - cosine) plus the change of norm, to first order: the quantity a sentence encoder's
cosine target is about, and meaningful for any output.

The figures are rounded to 4 significant digits, so the allocation cannot flip between two
runs on float noise of the runtime. Probed: every float weight of more than 2048
elements (what the compression stages select by default), a weight calibrate recorded no
statistics for (read through a Slice, say) against its data-free proxy |dW|^2, the one
mixed_precision then ranks it by. Runs on onnxruntime with the probed
weights as overridable inputs of the exported graph (one session, one run per weight);
without onnxruntime nothing is measured and the stats say why.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Optional

import numpy as np

from ir.core import Program

PROBE_BITS = 4
DIGITS = 4
# the probe batches ride along in the program (calibration_info) up to this many bytes: token ids
# of a few sentences are kilobytes; a vision model's 16 images could be tens of megabytes, and
# every digest of the program would hash them
KEEP_PROBES_BYTES = 8 << 20


def probe_error(w: np.ndarray, out_axis: int) -> np.ndarray:
    """The probe's error (rounded - original, float64): w rounded to a symmetric grid of
    2**(PROBE_BITS-1) - 1 steps each side per slice along ``out_axis``."""
    w = np.asarray(w, np.float64)
    if w.ndim == 0:
        return np.zeros_like(w)
    moved = np.moveaxis(w, out_axis, 0).reshape(w.shape[out_axis], -1)
    top = (1 << (PROBE_BITS - 1)) - 1
    scale = np.abs(moved).max(axis=1, keepdims=True) / top
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(moved / scale), -top, top) * scale
    back = q.reshape(np.moveaxis(w, out_axis, 0).shape)
    return np.moveaxis(back, 0, out_axis) - w


def relative_error(before: list, after: list) -> tuple:
    """(sum over samples and outputs of |y' - y|^2 / |y|^2, how many terms); a sample is a slice
    along an output's leading axis (the whole output when it has none)."""
    total, n = 0.0, 0
    for a, b in zip(before, after):
        a = np.asarray(a, np.float64)
        b = np.asarray(b, np.float64)
        a2 = a.reshape(a.shape[0], -1) if a.ndim else a.reshape(1, 1)
        b2 = b.reshape(a2.shape)
        den = np.einsum("ij,ij->i", a2, a2)
        d = b2 - a2
        num = np.einsum("ij,ij->i", d, d)
        ok = den > 0
        total += float(np.sum(num[ok] / den[ok]))
        n += int(np.sum(ok))
    return total, n


def _rounded(x: float) -> float:
    return float(f"{x:.{DIGITS - 1}e}")


class _Session:
    """onnxruntime over the program exported with the probed weights as overridable inputs."""

    def __init__(self, program: Program, fn, names):
        import onnxruntime as ort

        from ir.formats.onnx.exporter import to_onnx_model

        # the exporter writes a weight under the ONNX name it was imported from (when it has one)
        # and lists it as a graph input when that name is in attrs["onnx_overridable"]
        renamed = {**dict(program.attrs.get("onnx_names", ())), **dict(program.attrs.get("onnx_io_names", ()))}
        self.onnx_name = {n: renamed.get(n, n) for n in names}
        attrs = program.attrs.set("onnx_overridable", tuple(self.onnx_name.values()))
        model = to_onnx_model(Program(program.functions, attrs), None, fn.name).SerializeToString()
        options = ort.SessionOptions()
        options.log_severity_level = 4
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        inputs = {i.name for i in self.session.get_inputs()}
        overridable = {i.name for i in self.session.get_overridable_initializers()}
        self.overridable = {n for n in names if self.onnx_name[n] in overridable}
        taken = {self.onnx_name[n] for n in self.overridable}
        ours = [v.name for v in fn.inputs]
        self.feed_names = {n: n for n in ours if n in inputs}
        if len(self.feed_names) != len(ours):  # renamed on export: in order
            graph_inputs = [i.name for i in self.session.get_inputs() if i.name not in taken]
            self.feed_names = dict(zip(ours, graph_inputs))
        # tensors only: a ZipMap's seq(map(int64, tensor(float))) mentions float too
        self.float_outputs = [i for i, o in enumerate(self.session.get_outputs())
                              if o.type.startswith("tensor(") and "float" in o.type]

    def __call__(self, feeds: Mapping, overrides: Mapping) -> list:
        got = self.session.run(None, {**{self.feed_names[k]: v for k, v in feeds.items() if k in self.feed_names},
                                      **{self.onnx_name[k]: v for k, v in overrides.items()}})
        return [got[i] for i in self.float_outputs]


def _sample_count(batch: Mapping) -> int:
    first = next(iter(batch.values()), None)
    return int(np.shape(first)[0]) if first is not None and np.ndim(first) else 1


def probe_batches(feeds: list, samples: int) -> list:
    """The first batches holding at least `samples` samples (all of them when fewer)."""
    out, n = [], 0
    for b in feeds:
        if n >= samples:
            break
        out.append(b)
        n += _sample_count(b)
    return out


def kept_probe_batches(feeds: list, samples: int) -> Optional[tuple]:
    """The probe batches as calibration_info keeps them (a tuple of {input: read-only array}), or
    None when they exceed KEEP_PROBES_BYTES."""
    from pyrsistent import pmap

    batches = probe_batches(feeds, samples)
    if sum(np.asarray(v).nbytes for b in batches for v in b.values()) > KEEP_PROBES_BYTES:
        return None
    return tuple(pmap({k: _frozen_copy(v) for k, v in b.items()}) for b in batches)


def _frozen_copy(value) -> np.ndarray:
    """A read-only copy, made even of a read-only array: a read-only view of the caller's array
    would still change with it."""
    out = np.array(value, copy=True)
    out.flags.writeable = False
    return out


class FormErrors(NamedTuple):
    """What measure_forms found: per weight, errors [forms, batches] (each batch's |y' - y|^2 /
    |y|^2 averaged over its terms, 0 for a batch without any); terms [batches], how many sample
    x output terms each batch has, so that the pooled figure the sensitivity uses is
    errors @ terms / sum(terms); and why nothing was measured, when nothing was."""
    errors: dict
    terms: np.ndarray
    note: str


def measure_forms(program: Program, forms: Mapping) -> FormErrors:
    """The end-to-end error of the program with each weight replaced, alone, by each of its
    decoded forms (forms: {weight of main: [array, or a function giving it, ...]}; a function is
    called when its form is measured, so one decoded table is held at a time), on the probe
    batches calibrate kept (FormErrors). Nothing, with the reason, when there are none or
    onnxruntime cannot run the program or one of its forms."""
    info = program.attrs.get("calibration_info") or {}
    batches = info.get("probe_batches")
    if not batches or not forms:
        return FormErrors({}, np.zeros(0), "no probe batches kept by calibrate(sensitivity=N)")
    try:
        session = _Session(program, program.main, list(forms))
        base = [session(b, {}) for b in batches]
        terms = np.array([relative_error(y, y)[1] for y in base], np.float64)
        found = {}
        for name, decoded in forms.items():
            if name not in session.overridable:
                continue
            rows = []
            for value in decoded:
                errors = _batch_errors(session, batches, base, name, value() if callable(value) else value)
                rows.append([_rounded(t / k) if k else 0.0 for t, k in errors])
            found[name] = np.array(rows, np.float64)
    except Exception as e:  # noqa: BLE001 - no onnxruntime, or a program or form it cannot run
        return FormErrors({}, np.zeros(0), _not_run(e))
    return FormErrors(found, terms, f"measured end to end on {len(batches)} probe batches")


def measure(program: Program, table: Mapping, feeds: list, samples: int, track=None) -> tuple:
    """({weight: {"sensitivity": mean, "sensitivity_per_batch": array}}, note): the measured
    sensitivity of every probed weight of main (module docstring), over all probed samples and per
    probe batch. `table` holds the statistics collect gathered; `track` wraps the loop over weights
    (progress)."""
    from stages.compression.calibrated import proxy_distortion
    from stages.compression.weights import Skip, resolve_params, weight_views

    fn = program.main
    views = [v for v in weight_views(fn, ("dense",)) if v.shape and v.value.dtype.kind == "f"
             and not isinstance(resolve_params(v, {}, None, None), Skip)]
    if not views:
        return {}, "no weight to probe"
    batches = probe_batches(feeds, samples)
    try:
        session = _Session(program, fn, [v.name for v in views])
    except Exception as e:  # noqa: BLE001 - no onnxruntime, or a program it cannot run
        return {}, _not_run(e)
    base = [session(b, {}) for b in batches]
    found = {}
    loop = views if track is None else track(views)
    for view in loop:
        if view.name not in session.overridable:
            continue
        out_axis, in_axis, is_table = _axes(view)
        err = probe_error(view.value, out_axis)
        proxy = proxy_distortion(err, table.get(view.name), in_axis, is_table)
        if not proxy > 0:
            continue
        probed = (np.asarray(view.value, np.float64) + err).astype(view.value.dtype)
        errors = _batch_errors(session, batches, base, view.name, probed)
        total, n = sum(t for t, _ in errors), sum(k for _, k in errors)
        per_batch = [t / k / proxy if k else 0.0 for t, k in errors]
        if n:
            found[view.name] = {"sensitivity": _rounded(total / n / proxy),
                                "sensitivity_per_batch": np.array([_rounded(v) for v in per_batch])}
    return found, f"measured on {sum(_sample_count(b) for b in batches)} samples"


def _batch_errors(session, batches, base, name: str, value) -> list:
    """[(sum of |y' - y|^2 / |y|^2, terms)] per probe batch with weight `name` replaced by `value`."""
    return [relative_error(y, session(b, {name: value})) for b, y in zip(batches, base)]


def _not_run(e: Exception) -> str:
    return f"not measured: onnxruntime cannot run this program ({' '.join(str(e).split())[:160]})"


def _axes(view) -> tuple:
    """(output axis of the probe's grid, input axis and table flag as mixed_precision's proxy
    reads the weight)."""
    from stages.compression.calibrated import input_axis, is_table, matrix_axes

    axes = None if is_table(view) else matrix_axes(view)
    return (0 if axes is None else axes[0]), input_axis(view), is_table(view)


def sensitivity_per_batch(stats: Optional[Mapping]) -> Optional[np.ndarray]:
    """The measured sensitivity per probe batch in a weight's statistics, or None."""
    s = None if stats is None else stats.get("sensitivity_per_batch")
    return None if s is None else np.asarray(s, np.float64)


def sensitivity_of(stats: Optional[Mapping]) -> Optional[float]:
    """The measured sensitivity in a weight's statistics, or None."""
    if stats is None:
        return None
    s = stats.get("sensitivity")
    return None if s is None else float(s)
