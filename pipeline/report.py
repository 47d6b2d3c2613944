"""Describing models and what compression did to them, for people.

- `weights_of(program)`: every weight (a const, or the dense value a chain of
  constexpr ops decompresses to) with its stored size, sparsity, unique
  values, how it is stored and the layers that read it (through re-layout ops);
  the table `weightpress inspect` prints, in the spirit of coremltools'
  get_weights_metadata, with `op_type_counts` as its second table.
- `compare_weights(before, after)`: per weight bytes before/after (as written in
  the files when measured, see pipeline.filesizes; else estimated, and the
  column says so), ratio, SNR, max abs error and the reason a stage left it as
  it was: the summary after `weightpress compress`. SNR and max abs error are
  the compressing stage's own figures from the trace (`stage_figures`) when one
  stage alone compressed the weight, else computed here; either way defined in
  stages.compression.numeric.metrics.
- `diff_models(a, b)`: weights added / removed / changed and op counts changed.
- `format_table`, `render_report(path, ...)`: plain text, Markdown, HTML; the
  reports draw each weight's histogram with its LUT or quantization grid as
  inline SVG made here (no plotting dependency). The HTML page, a model-level
  view first (layer chart, allocation, output error, sortable table), is laid
  out in pipeline.report_page; the output error is measured in pipeline.output_error.
"""
from __future__ import annotations

import base64
import html
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ir.analysis import use_def
from ir.fold import fold_value, is_constexpr, is_foldable
from stages.compression.numeric import metrics

CONSTEXPR = "constexpr_"


# ---- weights of a program ---------------------------------------------------

@dataclass(frozen=True)
class Weight:
    name: str
    shape: tuple
    dtype: str  # dtype of the dense value
    stored_bytes: int  # what the stored form takes (sub-byte data counted packed)
    source: object  # the dense value, or a function computing it (see `value`)
    compression: str  # "plain", or the constexpr chain, outermost first
    consumers: tuple  # ((op name, input name), ...)
    marks: Optional[np.ndarray] = None  # LUT entries / quantization grid of the first block
    marks_label: str = ""
    users: tuple = ()  # Use: the layers that read the (decompressed) weight

    @property
    def value(self) -> np.ndarray:
        """The dense value, computed each time it is asked for when the weight is compressed
        (not kept: a report over a big model holds one decompressed weight at a time)."""
        return self.source() if callable(self.source) else self.source

    @property
    def in_file(self) -> bool:
        """Whether the value is a region of a file not read yet (ir.lazy): reading it costs I/O."""
        from ir.lazy import region_of

        return not callable(self.source) and region_of(self.source) is not None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def dense_bytes(self) -> int:
        from ir.dtypes import dtype as lookup_dtype

        return self.size * lookup_dtype(self.dtype).storage.itemsize

    @property
    def sparsity(self) -> float:
        return 1.0 - np.count_nonzero(self.value) / self.value.size if self.value.size else 0.0

    @property
    def unique_values(self) -> int:
        return int(np.unique(self.value).size)


@dataclass(frozen=True)
class Use:
    """An op that reads a weight: its type and name, and the re-layout ops in between."""
    op_type: str
    op_name: str
    via: tuple = ()  # op types of the pass-through ops the value went through, in order

    def __str__(self) -> str:
        via = f", via {' > '.join(self.via)}" if self.via else ""
        return f"{self.op_type} ({self.op_name}{via})"


# ops that only re-layout or convert one value (slot -> the data input): a weight read by
# one of them belongs to the layer that reads its output, which is what a user asks for
PASS_THROUGH = {"transpose": "x", "reshape": "x", "cast": "x", "expand_dims": "x", "squeeze": "x"}


def _users(name, consumers, via=()) -> list:
    """The ops reading value `name`, looking through pass-through ops (an op whose output
    nothing reads is itself the user)."""
    found = []
    for op, key in consumers.get(name, []):
        if op.op_type == "const" or op.op_type.startswith(CONSTEXPR):
            continue
        if PASS_THROUGH.get(op.op_type) == key and len(via) < 16:
            further = _users(op.outputs[0].name, consumers, via + (op.op_type,))
            if further:
                found += further
                continue
        found.append(Use(op.op_type, op.name, via))
    return found


def _const_bytes(var) -> int:
    return (int(np.prod(var.shape, dtype=np.int64)) * var.type.dt.bits + 7) // 8


class _Constants(Mapping):
    """name -> value of every const and const-only constexpr output of a function, each
    computed when asked for and not kept (constant_values would decompress every weight of
    the model at once); a const's value is its own array, read from its file only if used."""

    def __init__(self, fn):
        self.ud = use_def(fn)
        self.vars = {}
        for op in fn.block.walk():
            if op.op_type == "const" or is_constexpr(op):
                for out in op.outputs:
                    if is_foldable(out, self.ud.producer):
                        self.vars[out.name] = out

    def __getitem__(self, name):
        var = self.vars[name]
        return var.val if var.val is not None else fold_value(var, self.ud.producer, {})

    def __contains__(self, name):  # without computing the value (Mapping's would)
        return name in self.vars

    def thunk(self, name):
        var = self.vars[name]
        return var.val if var.val is not None else (lambda: self[name])

    def __iter__(self):
        return iter(self.vars)

    def __len__(self):
        return len(self.vars)


def _evaluate_constants(fn):
    """Values of every const and const-only constexpr output, their producers and consumers."""
    env, producer, consumers = _Constants(fn), {}, {}
    for op in fn.block.walk():
        for key, v in op.inputs.items():
            for var in v if isinstance(v, tuple) else (v,):
                consumers.setdefault(var.name, []).append((op, key))
        producer.update((var.name, op) for var in op.outputs if var.name in env)
    return env, producer, consumers


def _stored_bytes(name, producer, seen=None) -> int:
    """Bytes of the consts a weight is made of, each counted once (a joint op's two
    outputs both feed sparse_to_dense: its inputs are stored once)."""
    seen = set() if seen is None else seen
    op = producer[name]
    if id(op) in seen:
        return 0
    seen.add(id(op))
    if op.op_type == "const":
        return _const_bytes(op.outputs[0])
    return sum(_stored_bytes(v.name, producer, seen) for v in op.input_vars())


def _describe(name, producer) -> str:
    op = producer[name]
    if op.op_type == "const":
        return "plain"
    parts = []
    while op is not None and op.op_type.startswith(CONSTEXPR):
        ints = [v.dtype for v in op.input_vars() if v.type.dt.is_integer and v.rank > 0]
        parts.append(op.op_type[len(CONSTEXPR):] + (f"({ints[0]})" if ints else ""))
        # follow a nested constexpr (a quantized LUT, a palettized sparse weight ...)
        nested = [producer[v.name] for v in op.input_vars()
                  if v.name in producer and producer[v.name].op_type.startswith(CONSTEXPR)]
        op = nested[0] if nested else None
    return " <- ".join(parts)


def _first_block(param: np.ndarray) -> float:
    return float(np.asarray(param).reshape(-1)[0])


def _grid(data_dtype, scale, offset) -> np.ndarray:
    q = np.arange(data_dtype.min, data_dtype.max + 1, dtype=np.float64)
    off = 0.0 if offset is None else _first_block(offset)
    return _first_block(scale) * (q - off)


def _marks(name, producer, env):
    """(values, label): what the compressed weight can take, for its first block."""
    op = producer[name]
    get = lambda key: env.get(op.inputs[key].name) if key in op.inputs else None  # noqa: E731
    kind = op.op_type[len(CONSTEXPR):] if op.op_type.startswith(CONSTEXPR) else None
    if kind in ("lut_to_dense", "lut_to_sparse"):
        lut = get("lut")
        first = lut if lut.ndim == 1 else lut[(0,) * (lut.ndim - 2)]
        blocks = 1 if lut.ndim == 1 else int(np.prod(lut.shape[:-2]))
        return np.asarray(first, np.float64).reshape(-1), _of_blocks("LUT", blocks)
    data_key = {"blockwise_shift_scale": "data", "sparse_blockwise_shift_scale": "nonzero_data",
                "affine_dequantize": "quantized_data"}.get(kind)
    if data_key is None:
        return None, ""
    offset_key = "zero_point" if kind == "affine_dequantize" else "offset"
    scale = get("scale")
    dt = op.inputs[data_key].type.dt
    return _grid(dt, scale, get(offset_key)), _of_blocks(f"{dt.name} grid", int(np.size(scale)))


def _of_blocks(what: str, blocks: int) -> str:
    return what if blocks <= 1 else f"{what} of block 1 of {blocks}"


def weights_of(program, min_size: int = 2) -> list:
    """Every float weight of at least `min_size` elements, in program order."""
    out = []
    multi = len(program.functions) > 1
    for fname, fn in program.functions.items():
        env, producer, consumers = _evaluate_constants(fn)
        block_outputs = {v.name for v in fn.block.outputs}
        for name, op in producer.items():
            uses = [(c.name, key) for c, key in consumers.get(name, [])
                    if not c.op_type.startswith(CONSTEXPR) and c.op_type != "const"]
            if not uses and name not in block_outputs:
                continue  # an ingredient of a compressed weight, or dead
            var = next(v for v in op.outputs if v.name == name)
            shape = tuple(var.shape)
            if not var.type.dt.is_float or int(np.prod(shape, dtype=np.int64)) < min_size:
                continue
            marks, label = _marks(name, producer, env)
            out.append(Weight(f"{fname}/{name}" if multi else name, shape, var.dtype,
                              _stored_bytes(name, producer), env.thunk(name), _describe(name, producer),
                              tuple(uses), marks, label, tuple(_users(name, consumers))))
    return out


def _used_by(w: Weight, shown: int = 2) -> str:
    """The layers reading the weight, the first `shown` by name: "linear (fc1) +3 more"."""
    if not w.users:
        return "(function output)"
    first = ", ".join(str(u) for u in w.users[:shown])
    return first + (f" +{len(w.users) - shown} more" if len(w.users) > shown else "")


def inspect_rows(weights) -> tuple:
    headers = ("weight", "shape", "dtype", "size", "sparsity", "unique", "compression", "used by")
    # a weight still in its file (ONNX external data, ir.lazy) is not read to fill two columns:
    # inspecting a 100 GB model reads its headers only
    rows = [(w.name, "x".join(map(str, w.shape)), w.dtype, human_bytes(w.stored_bytes),
             "in file" if w.in_file else f"{w.sparsity:.1%}", "in file" if w.in_file else str(w.unique_values),
             w.compression, _used_by(w)) for w in weights]
    total = sum(w.stored_bytes for w in weights)
    rows.append((f"total ({len(weights)} weights)", "", "", human_bytes(total), "", "", "", ""))
    return headers, rows


def op_type_counts(program) -> Counter:
    """How many ops of each type the program has, nested blocks included."""
    return Counter(op.op_type for _, op in program.walk())


def op_count_rows(counts: Counter) -> tuple:
    """The op-type table of `weightpress inspect`: most frequent first."""
    rows = [(t, str(n)) for t, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]
    rows.append((f"all ({len(counts)} op types)", str(sum(counts.values()))))
    return ("op type", "count"), rows


# ---- numbers ------------------------------------------------------------------

def snr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    """SNR of approx against reference (the one definition: stages.compression.numeric.metrics)."""
    return metrics.snr_db(reference, approx)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{n:.1f} GB"  # pragma: no cover


def fmt_db(x: Optional[float]) -> str:
    if x is None:
        return ""
    return "inf" if math.isinf(x) and x > 0 else f"{x:.1f} dB"


# ---- before / after -------------------------------------------------------------

@dataclass(frozen=True)
class WeightChange:
    before: Weight
    after: Optional[Weight]  # None: the weight is gone
    seconds: Optional[float] = None
    note: str = ""  # why a stage left the weight as it was (the stage's own words)
    before_file: Optional[int] = None  # bytes as written in the input file, when measured
    after_file: Optional[int] = None  # bytes as written in the output file, when measured
    # the error figures the compressing stage computed exactly (its Step.stats["weights"]
    # entry: snr_db, max_abs_error), when one stage alone changed the weight; else None and
    # the figures are computed here from the two dense values
    figures: Optional[dict] = None

    @property
    def name(self) -> str:
        return self.before.name

    @property
    def before_bytes(self) -> int:
        return self.before_file if self.before_file is not None else self.before.stored_bytes

    @property
    def after_bytes(self) -> int:
        if self.after is None:
            return 0
        return self.after_file if self.after_file is not None else self.after.stored_bytes

    @property
    def ratio(self) -> float:
        return self.before_bytes / self.after_bytes if self.after_bytes else math.inf

    @property
    def comparable(self) -> bool:
        return self.after is not None and self.after.shape == self.before.shape

    @property
    def snr(self) -> Optional[float]:
        if self.figures is not None:
            return self.figures["snr_db"]
        return self._sums.snr_db if self.comparable else None

    @property
    def max_abs_error(self) -> Optional[float]:
        if self.figures is not None:
            return self.figures["max_abs_error"]
        if not self.comparable or not self.before.size:
            return None
        return self._sums.max_abs_error

    @property
    def _sums(self):
        return metrics.sums(self.before.value, self.after.value)


def _index(weights):
    by_name = {w.name: w for w in weights}
    by_use = {}
    for w in weights:
        for use in w.consumers:
            by_use.setdefault(use, w)
    return by_name, by_use


def match_weights(before, after) -> list:
    """Pair each weight of `before` with its counterpart in `after`: same name,
    else the weight feeding the same input of the same op (stages may rename)."""
    by_name, by_use = _index(after)
    pairs = []
    for w in before:
        twin = by_name.get(w.name)
        if twin is None:
            twin = next((by_use[u] for u in w.consumers if u in by_use), None)
        pairs.append((w, twin))
    return pairs


def compare_weights(before_program, after_program, seconds_by_weight=None, notes=None,
                    before_sizes=None, after_sizes=None, figures_by_weight=None) -> list:
    """One WeightChange per weight of `before_program`. notes: weight name -> why it was
    left as it was; before_sizes / after_sizes: weight name -> bytes as written in the
    input / output file (filesizes.measure_file), used instead of the estimate where given."""
    return compare(weights_of(before_program), weights_of(after_program), seconds_by_weight, notes,
                   before_sizes, after_sizes, figures_by_weight)


def compare_files(before_program, after_program, before_path, after_path, seconds_by_weight=None,
                  notes=None, figures_by_weight=None) -> list:
    """compare_weights with each weight's bytes as written in the two files, where their
    format is measured (pipeline.filesizes: ONNX, .wpz), else estimated: what `compress`
    reports."""
    from pipeline.filesizes import measure_file

    before_w, after_w = weights_of(before_program), weights_of(after_program)
    sizes_in = measure_file(before_path, before_program, [w.name for w in before_w])
    sizes_out = measure_file(after_path, after_program, [w.name for w in after_w])
    return compare(before_w, after_w, seconds_by_weight, notes, sizes_in.weights if sizes_in else None,
                   sizes_out.weights if sizes_out else None, figures_by_weight)


def compare(before_weights, after_weights, seconds_by_weight=None, notes=None, before_sizes=None,
            after_sizes=None, figures_by_weight=None) -> list:
    """compare_weights over weights already listed (weights_of). figures_by_weight: weight
    name (a stage's stats key) -> the figures its stage computed (stage_figures), shown
    instead of figures recomputed from the dense values."""
    seconds_by_weight, notes = seconds_by_weight or {}, notes or {}
    before_sizes, after_sizes = before_sizes or {}, after_sizes or {}
    pairs = match_weights(before_weights, after_weights)
    return [WeightChange(b, a, seconds_by_weight.get(b.name), notes.get(b.name, ""), before_sizes.get(b.name),
                         after_sizes.get(a.name) if a is not None else None,
                         _figures_for(b, a, figures_by_weight or {})) for b, a in pairs]


def _figures_for(before: Weight, after: Optional[Weight], figures_by_weight) -> Optional[dict]:
    """The stage's own figures for a weight still there with its shape; a stage names a
    weight of function main without the "main/" prefix weights_of gives it."""
    if after is None or after.shape != before.shape:
        return None
    name = before.name
    found = figures_by_weight.get(name)
    if found is None and name.startswith("main/"):
        found = figures_by_weight.get(name[len("main/"):])
    return found


def stage_figures(weight_stats) -> dict:
    """weight name -> {"snr_db", "max_abs_error"} from the steps' per-weight stats
    (an iterable of {name: stats} mappings, one per step): only for a weight that exactly
    one step compressed, where that step's figures (against its input) are the end-to-end
    ones; figures of several steps do not compose, so those weights are left out."""
    seen: dict = {}
    for per_step in weight_stats:
        for name, st in per_step.items():
            if hasattr(st, "get") and "snr_db" in st and "max_abs_error" in st:
                seen.setdefault(name, []).append({"snr_db": float(st["snr_db"]),
                                                  "max_abs_error": float(st["max_abs_error"])})
    return {name: found[0] for name, found in seen.items() if len(found) == 1}


def _bytes_column(label: str, measured: list) -> tuple:
    """(header, mark for an estimated cell): "after (file)" when every figure was measured
    from the file, "after (est.)" when none was; in between, estimated cells carry a '~'."""
    if measured and all(measured):
        return f"{label} (file)", ""
    if not any(measured):
        return f"{label} (est.)", ""
    return f"{label} (file, ~est.)", "~"


def summary_rows(changes, total_seconds: Optional[float] = None) -> tuple:
    before_head, before_mark = _bytes_column("before", [c.before_file is not None for c in changes])
    after_head, after_mark = _bytes_column("after", [c.after_file is not None for c in changes if c.after])
    headers = ("weight", "shape", before_head, after_head, "ratio", "SNR", "max abs err", "compression", "note",
               "time")
    rows = []
    for c in changes:
        err = c.max_abs_error
        before = ("" if c.before_file is not None else before_mark) + human_bytes(c.before_bytes)
        after = (("" if c.after_file is not None else after_mark) + human_bytes(c.after_bytes)) if c.after else "-"
        rows.append((c.name, "x".join(map(str, c.before.shape)), before, after, f"{c.ratio:.2f}x",
                     fmt_db(c.snr), "" if err is None else f"{err:.3g}",
                     c.after.compression if c.after else "removed", c.note,
                     "" if c.seconds is None else f"{c.seconds:.3f} s"))
    before = sum(c.before_bytes for c in changes)
    after = sum(c.after_bytes for c in changes)
    ratio = before / after if after else math.inf
    rows.append((f"total ({len(changes)} weights)", "", human_bytes(before), human_bytes(after),
                 f"{ratio:.2f}x", "", "", "", "", "" if total_seconds is None else f"{total_seconds:.3f} s"))
    return headers, rows


def file_line(model_name: str, model_bytes: int, out_name: str, out_bytes: int, changes) -> str:
    """The files themselves, beside the table's weights: what the saving is on disk."""
    saved = sum(c.before_bytes - c.after_bytes for c in changes)
    disk = model_bytes - out_bytes
    ratio = model_bytes / out_bytes if out_bytes else math.inf
    kept = f", {disk / saved:.0%} of the weights' saving" if saved > 0 else ""
    return (f"files: {model_name} {human_bytes(model_bytes)} -> {out_name} {human_bytes(out_bytes)} "
            f"({ratio:.2f}x on disk{kept})")


# ---- model diff -----------------------------------------------------------------

@dataclass(frozen=True)
class ModelDiff:
    added: tuple  # Weights only in b
    removed: tuple  # Weights only in a
    changed: tuple  # WeightChanges whose value or storage differ
    unchanged: int
    op_counts: tuple  # (op_type, count in a, count in b) where they differ
    io_changes: tuple = field(default=())  # lines on inputs / outputs

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.op_counts or self.io_changes)


def _signature(program) -> dict:
    return {f"{fname} {kind} {v.name}": str(v.type)
            for fname, fn in program.functions.items()
            for kind, vars_ in (("input", fn.block.inputs), ("output", fn.block.outputs)) for v in vars_}


def _same(a: Weight, b: Weight) -> bool:
    return (a.compression == b.compression and a.stored_bytes == b.stored_bytes and a.dtype == b.dtype
            and a.shape == b.shape and np.array_equal(a.value, b.value))


def diff_models(a, b) -> ModelDiff:
    wa, wb = weights_of(a), weights_of(b)
    pairs = match_weights(wa, wb)
    matched = {id(t) for _, t in pairs if t is not None}
    changed = tuple(WeightChange(x, y) for x, y in pairs if y is not None and not _same(x, y))
    unchanged = sum(1 for x, y in pairs if y is not None and _same(x, y))
    ca = Counter(op.op_type for _, op in a.walk())
    cb = Counter(op.op_type for _, op in b.walk())
    ops = tuple((t, ca[t], cb[t]) for t in sorted(set(ca) | set(cb)) if ca[t] != cb[t])
    sa, sb = _signature(a), _signature(b)
    io = tuple(f"{k}: {sa.get(k, '(none)')} -> {sb.get(k, '(none)')}"
               for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k))
    return ModelDiff(tuple(w for w in wb if id(w) not in matched),
                     tuple(x for x, y in pairs if y is None), changed, unchanged, ops, io)


def render_diff(d: ModelDiff) -> str:
    if d.empty:
        return "no differences"
    lines = []
    for title, items in (("added", d.added), ("removed", d.removed)):
        if items:
            lines.append(f"weights {title}:")
            lines += [f"  {'+' if title == 'added' else '-'} {w.name} {w.dtype}"
                      f"[{'x'.join(map(str, w.shape))}] {human_bytes(w.stored_bytes)} ({w.compression})"
                      for w in items]
    if d.changed:
        headers = ("weight", "before", "after", "bytes", "ratio", "SNR", "max abs err")
        rows = [(c.name, c.before.compression, c.after.compression,
                 f"{human_bytes(c.before.stored_bytes)} -> {human_bytes(c.after.stored_bytes)}",
                 f"{c.ratio:.2f}x", fmt_db(c.snr),
                 "" if c.max_abs_error is None else f"{c.max_abs_error:.3g}") for c in d.changed]
        lines.append(f"weights changed ({len(d.changed)}):")
        lines += ["  " + line for line in format_table(headers, rows).splitlines()]
    lines.append(f"weights unchanged: {d.unchanged}")
    if d.op_counts:
        lines.append("ops changed:")
        lines += [f"  {t}: {x} -> {y} ({y - x:+d})" for t, x, y in d.op_counts]
    if d.io_changes:
        lines.append("signature changed:")
        lines += [f"  {line}" for line in d.io_changes]
    return "\n".join(lines)


# ---- tables ---------------------------------------------------------------------

def format_table(headers, rows) -> str:
    """A plain text table; columns after the first that look numeric align right."""
    cells = [tuple(str(c) for c in headers)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [i > 0 and all(_numeric(r[i]) for r in cells[1:]) for i in range(len(headers))]

    def line(r):
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


def _numeric(text: str) -> bool:
    head = text.split(" ")[0].rstrip("x%")
    if not head:
        return True
    try:
        float(head)
        return True
    except ValueError:
        return head in ("inf", "-")


# ---- histograms as SVG ---------------------------------------------------------------

SPIKE = 2  # a bin this many times taller than every other is drawn cut, with its count


def _scale_peak(counts) -> float:
    """The count that fills the plot's height: the tallest bin, unless one bin is a spike
    that would flatten the rest; then a little above the second tallest."""
    if not counts.size:
        return 1
    ordered = np.sort(counts)
    first, second = int(ordered[-1]), int(ordered[-2]) if counts.size > 1 else 0
    if second and first > SPIKE * second:
        return 1.25 * second
    return max(first, 1)


def histogram_svg(values, marks=None, title: str = "", width: int = 520, height: int = 170,
                  bins: int = 64) -> str:
    """A histogram of `values`; each mark (LUT entry, grid point) is a vertical line
    when there are few of them, a tick under the axis when there are many."""
    vals = np.asarray(values, np.float64).reshape(-1)
    vals = vals[np.isfinite(vals)]
    marks = None if marks is None else np.asarray(marks, np.float64).reshape(-1)
    lo, hi = (float(vals.min()), float(vals.max())) if vals.size else (0.0, 1.0)
    if marks is not None and marks.size:
        inside = marks[(marks >= lo - 0.05 * (hi - lo)) & (marks <= hi + 0.05 * (hi - lo))]
        lo, hi = min(lo, *inside) if inside.size else lo, max(hi, *inside) if inside.size else hi
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(vals, bins=bins, range=(lo, hi))
    left, right, top, bottom = 8, width - 8, 22, height - 30
    sx = lambda x: left + (x - lo) / (hi - lo) * (right - left)  # noqa: E731
    peak = _scale_peak(counts)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
             f'<text x="{left}" y="14">{html.escape(title)}</text>']
    for c, x0, x1 in zip(counts, edges[:-1], edges[1:]):
        if c:
            h = (bottom - top) * min(c, peak) / peak
            parts.append(f'<rect x="{sx(x0):.2f}" y="{bottom - h:.2f}" width="{max(sx(x1) - sx(x0) - 0.5, 0.5):.2f}" '
                         f'height="{h:.2f}" fill="#7aa6d6"/>')
            if c > peak:  # a spike (often exact zeros) cut at the top: say how tall it is
                parts.append(f'<text x="{(sx(x0) + sx(x1)) / 2:.2f}" y="{top - 2}" text-anchor="middle" '
                             f'font-size="9" fill="#555">{int(c)} \u2191</text>')
    parts.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#333"/>')
    if lo < 0 < hi and min(sx(0) - left, right - sx(0)) > 40:  # where zero is, between the end labels
        parts.append(f'<line x1="{sx(0):.2f}" y1="{bottom}" x2="{sx(0):.2f}" y2="{bottom + 4}" stroke="#333"/>'
                     f'<text x="{sx(0):.2f}" y="{height - 6}" text-anchor="middle">0</text>')
    if marks is not None and marks.size:
        shown = marks[(marks >= lo) & (marks <= hi)]
        few = shown.size <= 32
        for m in shown:
            x = sx(m)
            y1, y2 = (top, bottom) if few else (bottom, bottom + 6)
            parts.append(f'<line x1="{x:.2f}" y1="{y1}" x2="{x:.2f}" y2="{y2}" stroke="#d62728" '
                         f'stroke-width="{1 if few else 0.6}"/>')
    parts.append(f'<text x="{left}" y="{height - 6}">{lo:.3g}</text>')
    parts.append(f'<text x="{right}" y="{height - 6}" text-anchor="end">{hi:.3g}</text>')
    parts.append("</svg>")
    return "".join(parts)


def weight_figure(change: WeightChange) -> tuple:
    """(histogram SVG, caption) of one weight's values before compression with its LUT or grid after."""
    after = change.after
    label = after.marks_label if after is not None and after.marks is not None else ""
    title = f"{change.name}: {after.compression if after else 'removed'}"
    svg = histogram_svg(change.before.value, after.marks if after is not None else None, title)
    caption = (f"values of {change.name} before compression; red: {label}" if label
               else f"values of {change.name} before compression")
    return svg, caption


# ---- reports --------------------------------------------------------------------------

def render_markdown(title: str, headers, rows, changes, notes=()) -> str:
    out = [f"# {title}", ""] + [f"{n}  " for n in notes] + [""]
    out.append("| " + " | ".join(headers) + " |")
    out.append("|" + "|".join("---" for _ in headers) + "|")
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    out += ["", "## Weights", ""]
    for c in changes:
        svg, caption = weight_figure(c)
        data = base64.b64encode(svg.encode()).decode()
        out += [f"### {c.name}", "", f"![{caption}](data:image/svg+xml;base64,{data})", "", f"*{caption}*", ""]
    return "\n".join(out)


def render_html(title: str, headers, rows, changes, notes=(), total_seconds=None, allocations=(),
                output_errors=(), output_note: str = "") -> str:
    """The HTML page: a model-level view first (pipeline.report_page)."""
    from pipeline.report_page import render_page

    return render_page(title, changes, total_seconds, notes, allocations, output_errors, output_note)


REPORT_RENDERERS = {".md": render_markdown, ".markdown": render_markdown,
                    ".html": render_html, ".htm": render_html}


def report_kind(path) -> str:
    from pathlib import Path

    suffix = Path(path).suffix.lower()
    if suffix not in REPORT_RENDERERS:
        raise ValueError(f"{path}: a report is .html or .md, not {suffix or '(no extension)'!r}")
    return suffix


def render_report(path, title, changes, total_seconds=None, notes=(), allocations=(), output_errors=(),
                  output_note: str = "") -> str:
    """The report for `path`'s kind. allocations: mixed_precision's summaries (allocations_of);
    output_errors: pipeline.output_error.output_errors on the calibration samples, if measured;
    output_note: why they were not (default: no calibration samples given)."""
    headers, rows = summary_rows(changes, total_seconds)
    kind = report_kind(path)
    if kind in (".html", ".htm"):
        return render_html(title, headers, rows, changes, notes, total_seconds, allocations, output_errors,
                           output_note)
    text = render_markdown(title, headers, rows, changes, notes)
    from pipeline.report_page import layers_svg

    layers = base64.b64encode(layers_svg(changes).encode()).decode()
    extra = [f"## Layers\n\n![bytes before / after and SNR per compressed weight]"
             f"(data:image/svg+xml;base64,{layers})\n"]
    extra += [_allocation_markdown(allocations)] if allocations else []
    extra.append(_output_error_markdown(output_errors, output_note))
    return text.replace("\n## Weights\n", "\n" + "\n".join(extra) + "\n## Weights\n", 1)


def _output_error_markdown(errors, note: str = "") -> str:
    out = ["## End-to-end output error", ""]
    if not errors:
        return "\n".join(out + [note or "not measured: no calibration samples were given "
                                 "(compress --calibration FILE.npz measures it)", ""])
    out += [f"both models run by {errors[0].evaluator} on the calibration samples", "",
            "| output | samples | min cosine | mean cosine | SNR | max abs err / max \\|ref\\| |",
            "|---|---|---|---|---|---|"]
    for e in errors:
        if e.equal is not None:
            out.append(f"| {e.output} | {e.samples} | {e.equal:.2%} equal | | | |")
        else:
            out.append(f"| {e.output} | {e.samples} | {e.min_cosine:.5f} | {e.mean_cosine:.5f} | "
                       f"{fmt_db(e.snr_db)} | {e.max_rel_error:.3g} |")
    return "\n".join(out + [""])


# ---- mixed precision: the allocation a mixed_precision step chose ------------------------------

def allocations_of(trace) -> list:
    """The "allocation" stats of every step that has one (stages.compression.mixed_precision)."""
    found = []
    for step in getattr(trace, "steps", ()):
        stats = getattr(step, "stats", None) or {}
        a = stats.get("allocation") if hasattr(stats, "get") else None
        if a is not None:
            found.append(a)
    return found


def allocation_line(a) -> str:
    """One line: the budget, what was used, the distortion and how far from optimal it can be."""
    budget = f"target {a['target_bpw']:g} bits per weight" if a.get("target_bpw") is not None \
        else f"target size {human_bytes(a['target_size'])}"
    proof = ("optimal (gap 0)" if a["gap"] == 0 else
             f"optimal (branch and bound, {a['nodes']} nodes; LP gap {a['gap']:.4g})" if a["proved"] else
             f"within {a['gap']:.4g} ({a['relative_gap']:.2%}) of optimal")
    return (f"mixed precision ({budget}; proxy: {a['proxy']}): {a['bpw']:.3f} bits per weight, "
            f"{human_bytes(a['size_bytes'])} of {human_bytes(a['budget_bytes'])} for {len(a['table'])} weights; "
            f"distortion {a['distortion']:.4g}, dual bound {a['dual_bound']:.4g}: {proof}" + _worst_clause(a))


def _worst_clause(a) -> str:
    w = a.get("worst_sample")
    if w is None:
        return ""
    return (f"; objective: the worst calibration sample, estimated error {w['estimate']:.4g} "
            f"(mean {w['mean']:.4g}; bound {w['bound']:.4g}, within {w['relative_gap']:.2%} of optimal)")


def allocation_rows(a) -> tuple:
    headers = ("weight", "candidate", "method", "bits", "bits/weight", "before", "after", "distortion")
    rows = [(r["weight"], r["candidate"], r["method"], "" if r["bits"] is None else str(r["bits"]),
             f"{r['bpw']:.2f}", human_bytes(r["original_bytes"]), human_bytes(r["bytes"]), f"{r['distortion']:.4g}")
            for r in a["table"]]
    return headers, rows


def frontier_svg(a, width: int = 520, height: int = 220) -> str:
    """The allocation's rate-distortion curve (total bytes against total distortion over the
    candidates' convex hulls) with the chosen point and the budget."""
    pts = [(float(x), float(y)) for x, y in a["frontier"]]
    chosen = (float(a["size_bytes"]), float(a["distortion"]))
    xs = [p[0] for p in pts] + [chosen[0], float(a["budget_bytes"])]
    ys = [p[1] for p in pts] + [chosen[1]]
    floor = min((y for y in ys if y > 0), default=1.0)
    ly = lambda y: math.log10(max(y, floor / 10))  # noqa: E731 - distortion spans decades: log scale
    x0, x1, y0, y1 = min(xs), max(xs), min(map(ly, ys)), max(map(ly, ys))
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    left, right, top, bottom = 50, width - 10, 22, height - 30
    sx = lambda x: left + (x - x0) / (x1 - x0) * (right - left)  # noqa: E731
    sy = lambda y: bottom - (ly(y) - y0) / (y1 - y0) * (bottom - top)  # noqa: E731
    path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
    bx = sx(float(a["budget_bytes"]))
    return "".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="sans-serif" font-size="11">',
        '<text x="50" y="14">rate-distortion: total bytes vs distortion (log), chosen point in red</text>',
        f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#333"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#333"/>',
        f'<polyline points="{path}" fill="none" stroke="#7aa6d6" stroke-width="1.5"/>',
        f'<line x1="{bx:.1f}" y1="{top}" x2="{bx:.1f}" y2="{bottom}" stroke="#999" stroke-dasharray="4 3"/>',
        f'<circle cx="{sx(chosen[0]):.1f}" cy="{sy(chosen[1]):.1f}" r="4" fill="#d62728"/>',
        f'<text x="{min(sx(chosen[0]) + 8, right - 150):.1f}" y="{max(sy(chosen[1]) - 6, top + 24):.1f}" '
        f'fill="#d62728">chosen: {human_bytes(chosen[0])}, {chosen[1]:.3g}</text>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end" font-size="9">{10 ** y1:.2g}</text>',
        f'<text x="{left - 4}" y="{bottom}" text-anchor="end" font-size="9">{10 ** y0:.2g}</text>',
        f'<text x="{(left + right) / 2:.1f}" y="{height - 8}" text-anchor="middle" fill="#777">total bytes</text>',
        f'<text x="{left}" y="{height - 8}">{human_bytes(x0)}</text>',
        f'<text x="{right}" y="{height - 8}" text-anchor="end">{human_bytes(x1)}</text>',
        f'<text x="{bx + 3:.1f}" y="{top + 10}" fill="#777">budget</text>',
        "</svg>"])


def allocation_bars_svg(a, width: int = 640, bar: int = 12) -> str:
    """Per weight, bytes before (grey) and after (blue) on one scale, labelled with the
    candidate chosen and its distortion: where the budget went."""
    rows = list(a["table"])
    top, label_w, right = 22, 190, 170
    height = top + len(rows) * (bar + 6) + 10
    peak = max((float(r["original_bytes"]) for r in rows), default=1.0) or 1.0
    span = width - label_w - right
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10">',
             '<text x="4" y="14">bytes per weight: before (grey), after (blue); candidate and distortion</text>']
    for i, r in enumerate(rows):
        y = top + i * (bar + 6)
        before = span * float(r["original_bytes"]) / peak
        after = span * float(r["bytes"]) / peak
        name = str(r["weight"])
        name = name if len(name) <= 30 else "\u2026" + name[-29:]
        parts.append(f'<text x="{label_w - 4}" y="{y + bar - 2}" text-anchor="end">{html.escape(name)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{before:.1f}" height="{bar}" fill="#ddd"/>')
        parts.append(f'<rect x="{label_w}" y="{y + 2}" width="{max(after, 0.5):.1f}" height="{bar - 4}" fill="#4a7fc1"/>')
        parts.append(f'<text x="{label_w + span + 4}" y="{y + bar - 2}">{html.escape(str(r["candidate"]))} '
                     f'({r["bpw"]:.2f} b/w), d {r["distortion"]:.3g}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _allocation_markdown(allocations) -> str:
    out = ["## Mixed precision", ""]
    for a in allocations:
        headers, rows = allocation_rows(a)
        out += [allocation_line(a), "", "| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
        for what, svg in (("rate-distortion curve", frontier_svg(a)), ("bytes per weight", allocation_bars_svg(a))):
            data = base64.b64encode(svg.encode()).decode()
            out += ["", f"![{what}](data:image/svg+xml;base64,{data})", ""]
    return "\n".join(out)


def allocation_html(allocations) -> str:
    esc = html.escape
    out = ["<h2>Mixed precision</h2>"]
    for a in allocations:
        headers, rows = allocation_rows(a)
        # the per-weight bytes are the page's layer chart: here the curve and the choice
        out.append(f"<p>{esc(allocation_line(a))}</p><figure>{frontier_svg(a, 620, 260)}</figure>")
        out.append("<table class='sortable'><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers)
                   + "</tr></thead><tbody>")
        out += ["<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in r) + "</tr>" for r in rows]
        out.append("</tbody></table>")
    return "".join(out)
