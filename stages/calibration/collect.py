"""calibrate: run the model on calibration data and record, per weight, the statistics of
what it multiplies (stats.py says what and where).

    calibrate(data=pipeline.calibration.calibration_data("calib.npz"))

``data`` is any object with ``feeds(function) -> list of {input name: array}`` (the
batches to run, each in a shape the function accepts) and ``to_dict()`` (its content
digest: the stage's cache key holds it, so other data is another key). The pipeline layer
builds it (pipeline/calibration.py: .npz files, a directory of them, arrays in memory),
batched by the loader verify uses; this module never reads files.

Which weights: every dense float const of function "main" read through one of the slots
below (and only through those: a weight also read elsewhere gets no statistics, since
they would describe only part of its use):

    linear.weight [out, in]            rows of x, feature axis -1
    matmul.y (2-D)                     rows of x, feature axis -1 (-2 with transpose_x)
    onnx.MatMul.in1 (2-D)              rows of in0, feature axis -1
    conv.weight [out, in/g, k...]      channels of x (axis 1); per pixel; and its patch rows (below)
    onnx.Conv.in1 (a kept ONNX Conv)   the same, its geometry from the ONNX attributes
    gather.x / onnx.Gather.in0, axis 0 token counts of the indices

How it runs: the activations those ops read are added to the function's outputs (a probe
program, never returned) and the probe is run batch by batch, by onnxruntime on the program
exported to ONNX in memory (fast), or by the reference interpreter when the program does not
export or ``evaluator="interpreter"``. The sums are accumulated in float64 over all rows
and divided by the row count at the end, so the batch split does not change the result
beyond float rounding. A NaN or Inf activation is a CalibrationError naming it and the batch.
The result is the input program with the statistics attached: nothing else changes.

Conv weights: besides the channel moments, the Gram matrix of the input unfolded into patch
rows exactly as the conv reads it (strides, dilations, pads, groups: patches.py), ``gram``
[D, D] with D = C_in * prod(kernel) when groups == 1, ``group_gram`` [groups, D, D] with
D = C_in/groups * prod(kernel) (one per group of output channels: a depthwise conv's is
prod(kernel) square) otherwise, so that GPTQ and the proxy see the conv's own output error.
Not kept when D > CONV_GRAM_MAX (4608) or groups * D^2 > CONV_GRAM_MAX^2 (only input_moment
then). A batch's patch rows beyond max(4096, 2^28 / (groups D^2)) are subsampled (a fixed
seed per batch: deterministic), so one Gram product stays ~1e9 multiply-adds at most; the
Gram is the mean over the rows used.

``sensitivity=N`` (N > 0) adds, per weight of more than 2048 elements, ``sensitivity``: its
end-to-end output error per unit of its output-error proxy, measured on the first N samples
(sensitivity.py), which mixed_precision uses to weigh weights against each other.
"""
from __future__ import annotations

from typing import Literal, Mapping, Optional

import numpy as np

from ir.core import Program
from stages.base import DEFAULT_CONTEXT, StageError, StageResult, stage
from stages.calibration import patches
from stages.calibration.sensitivity import kept_probe_batches, measure
from stages.calibration.stats import with_calibration
from stages.contracts import exact
from stages.compression.weights import weight_views

EVALUATORS = ("auto", "onnxruntime", "interpreter")


class CalibrationError(StageError):
    """Calibration data the model cannot use (non-finite activations, an unusable source)."""


# (consumer op type, weight slot) -> (activation slot, what is recorded)
_LINEAR_SLOTS = {("linear", "weight"): "x", ("matmul", "y"): "x", ("onnx.MatMul", "in1"): "in0"}
_GATHER_SLOTS = {("gather", "x"): "indices", ("onnx.Gather", "in0"): "in1"}
_CONV_SLOTS = {("conv", "weight"): "x", ("onnx.Conv", "in1"): "in0"}
CONV_GRAM_MAX = 4608  # the largest patch dimension D whose Gram is kept (a 512-channel 3x3 conv)


class _Watch:
    """One (weight, consumer) pair: where its activation is, how to reduce it."""

    __slots__ = ("weight", "op", "kind", "var", "feature_axis", "rows", "geometry")

    def __init__(self, weight, op, kind, var, feature_axis=-1, rows=0, geometry=None):
        self.weight, self.op, self.kind, self.var = weight, op, kind, var
        self.feature_axis, self.rows, self.geometry = feature_axis, rows, geometry


def _flag(op, name) -> bool:
    v = op.get(name)
    return bool(v is not None and v.val is not None and np.asarray(v.val).reshape(-1)[0])


def _gather_axis(op) -> int:
    if op.op_type == "gather":
        v = op.get("axis")
        return 0 if v is None or v.val is None else int(v.val)
    return int(op.attrs.get("axis", 0))


def _watch_of(view, op, slot) -> Optional[_Watch]:
    key = (op.op_type, slot)
    if key in _LINEAR_SLOTS:
        if op.op_type != "linear" and len(view.shape) != 2:
            return None
        axis = -2 if op.op_type == "matmul" and _flag(op, "transpose_x") else -1
        return _Watch(view.name, op, "linear", op.inputs[_LINEAR_SLOTS[key]], axis)
    if key in _GATHER_SLOTS and _gather_axis(op) == 0:
        return _Watch(view.name, op, "gather", op.inputs[_GATHER_SLOTS[key]], rows=view.shape[0])
    if key in _CONV_SLOTS:
        return _Watch(view.name, op, "conv", op.inputs[_CONV_SLOTS[key]], 1,
                      geometry=_gram_geometry(op, view.shape))
    return None


def _gram_geometry(op, shape):
    """The conv's geometry when its patch Gram is kept (module docstring), else None."""
    g = patches.geometry(op, shape)
    if g is None or g.groups < 1 or len(shape) < 3:
        return None
    d = int(shape[1]) * g.columns
    return g if d <= CONV_GRAM_MAX and g.groups * d * d <= CONV_GRAM_MAX ** 2 else None


def watches(fn) -> list:
    """Every (weight, consumer) pair of `fn` that statistics are recorded for (module docstring)."""
    found = []
    for view in weight_views(fn):
        if not view.shape:
            continue
        pairs = [(op, slot) for op in view.consumers for slot, v in op.inputs.items()
                 if not isinstance(v, tuple) and v.name == view.name]
        mine = [_watch_of(view, op, slot) for op, slot in pairs]
        if mine and all(w is not None for w in mine) and len({w.kind for w in mine}) == 1:
            found += mine
    return found


# ---- running the probe ---------------------------------------------------------------------

def _probe(program: Program, fn, vars_) -> Program:
    """The program with `vars_` appended to main's outputs (only for running it)."""
    have = {v.name for v in fn.outputs}
    extra = tuple(v for v in vars_ if v.name not in have)
    block = fn.block.replace(outputs=fn.outputs + extra)
    return Program(program.functions.set(fn.name, fn.replace(block=block)), program.attrs)


class _OrtRunner:
    def __init__(self, probe: Program, fn, names):
        import onnxruntime as ort

        from ir.formats.onnx.exporter import to_onnx_model

        model = to_onnx_model(probe, None, fn.name).SerializeToString()
        options = ort.SessionOptions()
        options.log_severity_level = 4
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        wanted = [i.name for i in self.session.get_inputs()]
        ours = [v.name for v in fn.inputs]
        self.feed_names = dict(zip(ours, wanted)) if set(wanted) != set(ours) else {n: n for n in wanted}
        self.out_names = [v.name for v in probe.functions[fn.name].outputs]
        self.names = names

    def __call__(self, feeds: Mapping) -> dict:
        got = self.session.run(None, {self.feed_names[k]: v for k, v in feeds.items() if k in self.feed_names})
        out = dict(zip(self.out_names, got))
        return {n: out[n] for n in self.names}


class _InterpreterRunner:
    def __init__(self, probe: Program, fn, names):
        self.probe, self.function, self.names = probe, fn.name, names

    def __call__(self, feeds: Mapping) -> dict:
        from ir.interpret import evaluate

        out = evaluate(self.probe, feeds, self.function)
        return {n: out[n] for n in self.names}


def _runner(program, fn, internal, evaluator: str):
    probe = _probe(program, fn, internal)
    names = [v.name for v in internal]
    if evaluator in ("auto", "onnxruntime"):
        try:
            return _OrtRunner(probe, fn, names), "onnxruntime"
        except Exception as e:  # noqa: BLE001 - export or onnxruntime refusing the program
            if evaluator == "onnxruntime":
                raise CalibrationError(f"calibrate: evaluator='onnxruntime' cannot run this program "
                                       f"({' '.join(str(e).split())[:200]}); use evaluator='interpreter'") from None
    return _InterpreterRunner(probe, fn, names), "interpreter"


# ---- accumulating ------------------------------------------------------------------------

class _Sums:
    """float64 sums over every batch for one activation (weights reading the same activation
    the same way, as a layer's query / key / value projections do, share one)."""

    # rows are gathered up to this many before one Gram product: a batch of one short sentence has
    # ~25 rows, and a [1536, 1536] float64 sum per batch was most of calibrate's time
    FLUSH_ROWS = 2048

    # a conv batch's patch rows beyond max(PATCH_ROWS, PATCH_MACS / (groups D^2)) are subsampled
    PATCH_ROWS, PATCH_MACS = 4096, 1 << 28

    def __init__(self, kind: str, gram: bool, rows: int = 0, geometry=None):
        self.kind, self.want_gram, self.rows, self.geometry = kind, gram, rows, geometry
        self.sq = self.gram = self.counts = None
        self.n = self.gram_rows = self.batches = 0
        self.gram_finished = False
        self.pending, self.pending_rows, self.pending_patches = [], 0, []

    def add_rows(self, x: np.ndarray) -> None:
        x = np.ascontiguousarray(x, np.float32 if x.dtype != np.float64 else np.float64)
        self.n += x.shape[0]
        self.gram_rows += x.shape[0]
        sq = np.einsum("ij,ij->j", x, x, dtype=np.float64)
        self.sq = sq if self.sq is None else self.sq + sq
        if self.want_gram:
            self.pending.append(x)
            self.pending_rows += x.shape[0]
            if self.pending_rows >= self.FLUSH_ROWS:
                self.flush()

    def flush(self) -> None:
        """Add the pending rows' X^T X: products in float32 over at most ~FLUSH_ROWS rows (relative
        error ~1e-6), summed in float64 across flushes: half the time of float64 products, where
        GPTQ needs no more."""
        if not self.pending:
            return
        x = self.pending[0] if len(self.pending) == 1 else np.concatenate(self.pending)
        self.pending, self.pending_rows = [], 0
        g = x.T @ x
        if self.gram is None:
            self.gram = g.astype(np.float64)
        else:
            self.gram += g

    def add_channels(self, x: np.ndarray) -> None:  # conv input [N, C, spatial...]
        if self.want_gram and self.geometry is not None and x.ndim == len(self.geometry.kernel) + 2:
            self.add_patches(x)
        x = np.moveaxis(x.astype(np.float64, copy=False), 1, -1).reshape(-1, x.shape[1])
        self.n += x.shape[0]
        sq = np.einsum("ij,ij->j", x, x)
        self.sq = sq if self.sq is None else self.sq + sq

    def add_patches(self, x: np.ndarray) -> None:
        """Add the Gram of x's patch rows (patches.py), per group, float32 products summed in
        float64; at most max(PATCH_ROWS, PATCH_MACS / (groups D^2)) rows of this batch, drawn
        with the batch's ordinal as the seed."""
        g = self.geometry
        total = patches.patch_rows(x.shape, g)
        d = (x.shape[1] // g.groups) * g.columns
        cap = max(self.PATCH_ROWS, self.PATCH_MACS // max(g.groups * d * d, 1))
        self.batches += 1
        if total == 0:
            return
        p = patches.unfold(x, g, patches.sample_rows(total, cap, self.batches))
        self.pending_patches.append(p)
        self.pending_rows += p.shape[1]
        if self.pending_rows >= d:
            self.flush_patches()

    def flush_patches(self) -> None:
        """Add the pending patch rows' Gram per group. Batches with fewer rows than D wait for
        others (a [2880, 2880] float64 sum per one-image batch of 40 rows was most of calibrate's
        time on a recognizer); more are never gathered (fresh large arrays are slow to touch)."""
        if not self.pending_patches:
            return
        p = self.pending_patches[0] if len(self.pending_patches) == 1 else np.concatenate(self.pending_patches, 1)
        self.pending_patches, self.pending_rows = [], 0
        if p.shape[0] == 1:
            gram = (p[0].T @ p[0])[None]
        else:
            gram = np.matmul(p.transpose(0, 2, 1), p)  # [groups, D, D]
        if self.gram is None:
            self.gram = gram.astype(np.float64)
        else:
            np.add(self.gram, gram, out=self.gram)
        self.gram_rows += p.shape[1]

    def add_indices(self, idx: np.ndarray) -> None:
        rows = self.rows
        i = idx.astype(np.int64).reshape(-1)
        i = np.where(i < 0, i + rows, i)
        c = np.bincount(i[(i >= 0) & (i < rows)], minlength=rows).astype(np.float64)
        self.n += i.size
        self.counts = c if self.counts is None else self.counts + c


def _total(parts: list, kind: str) -> dict:
    """One weight's statistics from the sums of the activations it reads (usually one)."""
    n = sum(p.n for p in parts)
    for p in parts:
        if kind != "gather":
            p.flush()
            p.flush_patches()
    if kind == "gather":
        return {"token_counts": _frozen(sum(p.counts for p in parts if p.counts is not None)), "count": n}
    out = {"input_moment": _frozen(sum(p.sq for p in parts) / max(n, 1)), "count": n}
    grams = [p.gram for p in parts if p.gram is not None]
    if grams and len(grams) == len(parts) and len({g.shape for g in grams}) == 1:
        if len(parts) == 1:
            g = _finished_gram(parts[0])
        else:
            rows = max(sum(p.gram_rows for p in parts), 1)
            g = sum(_finished_gram(p) * (p.gram_rows / rows) for p in parts)
        out["gram_rows"] = int(sum(p.gram_rows for p in parts))
        if g.ndim == 2:
            out["gram"] = _frozen(g)
        elif g.shape[0] == 1:
            out["gram"] = _frozen(g[0])  # a conv with groups == 1
        else:
            out["group_gram"] = _frozen(g)
    return out


def _finished_gram(p: _Sums) -> np.ndarray:
    """p's Gram divided by its rows and made exactly symmetric, in place and once (a [2880, 2880]
    sum is 66 MB: fresh copies of it were most of calibrate's time on a recognizer; a _Sums
    shared by weights reading the same activation is finished by the first of them)."""
    if not p.gram_finished:
        g = p.gram
        g /= max(p.gram_rows, 1)
        _symmetrize(g)
        p.gram_finished = True
    return p.gram


def _symmetrize(g: np.ndarray, block: int = 512) -> None:
    """g (2-D, or stacked [..., D, D]) := (g + g^T) / 2 in place, a block pair at a time (no
    full-size temporary)."""
    d = g.shape[-1]
    for i in range(0, d, block):
        for j in range(i, d, block):
            upper = g[..., i:i + block, j:j + block]
            lower = g[..., j:j + block, i:i + block]
            mean = (upper + np.swapaxes(lower, -1, -2)) / 2
            upper[...] = mean
            lower[...] = np.swapaxes(mean, -1, -2)


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    a.flags.writeable = False  # a fresh array of ours: read-only without a copy
    return a


def _rows(x: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis]) if x.ndim else x.reshape(1, 1)


def _finite(name: str, weight: str, x: np.ndarray, batch: int) -> None:
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise CalibrationError(f"calibration batch {batch}: activation {name!r} (read by weight {weight!r}) "
                               "has NaN or Inf values")


def _key(w: _Watch) -> tuple:
    return (w.var.name, w.kind, w.feature_axis, w.rows, w.geometry)  # a conv's patches depend on its geometry


def _accumulate(sums: dict, ws: list, values: Mapping, batch: int) -> None:
    done = set()
    for w in ws:
        key = _key(w)
        if key in done:
            continue
        done.add(key)
        x = np.asarray(values[w.var.name])
        s = sums[key]
        if w.kind == "gather":
            s.add_indices(x)
            continue
        _finite(w.var.name, w.weight, x, batch)
        if w.kind == "linear":
            s.add_rows(_rows(x, w.feature_axis))
        else:
            s.add_channels(x)


@stage("calibrate", version="3", contract=exact(why="attaches statistics to the program; the graph is untouched"))
def calibrate(program, *, data=None, evaluator: Literal[EVALUATORS] = "auto", gram: bool = True,
              sensitivity: int = 0, context=DEFAULT_CONTEXT):
    """Attach calibration statistics collected by running `data` through function main; with
    ``sensitivity`` = N > 0, also each weight's measured end-to-end sensitivity on the first N
    samples (sensitivity.py)."""
    if isinstance(sensitivity, bool) or not isinstance(sensitivity, int) or sensitivity < 0:
        raise CalibrationError(f"calibrate: sensitivity={sensitivity!r} must be a number of samples >= 0")
    if data is None or not callable(getattr(data, "feeds", None)):
        raise CalibrationError("calibrate: data= must be calibration data (pipeline.calibration."
                               "calibration_data(path or arrays)), got "
                               f"{'nothing' if data is None else type(data).__name__}")
    fn = program.main
    ws = watches(fn)
    feeds = list(data.feeds(fn))
    inputs = {v.name for v in fn.inputs}
    internal = {}
    for w in ws:
        if w.var.name not in inputs and w.var.val is None:
            internal.setdefault(w.var.name, w.var)
    kinds, reads = {}, {}
    for w in ws:
        kinds.setdefault(w.weight, w.kind)
        reads.setdefault(w.weight, [])
        if _key(w) not in reads[w.weight]:
            reads[w.weight].append(_key(w))
    sums = {_key(w): _Sums(w.kind, gram and w.kind in ("linear", "conv"), w.rows, w.geometry) for w in ws}
    runner, used = _runner(program, fn, list(internal.values()), evaluator) if internal else (None, "inputs")
    for i, batch in enumerate(context.track(feeds, desc="calibrate", total=len(feeds))):
        values = dict(batch)
        if runner is not None:
            values.update(runner(batch))
        for w in ws:
            if w.var.val is not None:
                values[w.var.name] = w.var.val
        _accumulate(sums, ws, values, i)
    table = {name: _total([sums[k] for k in keys], kinds[name]) for name, keys in reads.items()}
    if sensitivity:
        found, note = measure(program, table, feeds, sensitivity,
                              lambda views: context.track(views, desc="calibrate: sensitivity", total=len(views)))
    rows = {name: int(t["count"]) for name, t in table.items()}
    if sensitivity:
        # a weight calibrate saw no input of (read through a Slice, say) is probed too, against its
        # data-free proxy: otherwise its distortion would stay in other units than every other's
        for name, measured in found.items():
            table[name] = {**table.get(name, {}), **measured}
    info = {"data_digest": str(data.to_dict().get("calibration_data", "")), "batches": len(feeds),
            "evaluator": used, "weights": len(rows)}
    if sensitivity:
        info["sensitivity"] = note
        kept = kept_probe_batches(feeds, sensitivity)
        if kept is not None:
            info["probe_batches"] = kept
    stats = {"calibrated_weights": len(rows), "batches": len(feeds), "evaluator": used, "rows": rows}
    return StageResult(with_calibration(program, table, info), stats)
