"""Finding the weights of a program and replacing them, shared by every
compression stage.

A weight is one of these *forms* (the "kind" of a WeightView):

* ``dense``: a float const read by at least one op, none of them a constexpr
  (a const that feeds a constexpr op is part of a compressed form already).
* ``sparse``: ``constexpr_sparse_to_dense`` (iOS18 form) over a const float
  ``nonzero_data`` and a const mask: what joint compression compresses further
  (palettize or quantize the nonzero values).
* ``lut``: ``constexpr_lut_to_dense`` (iOS18 form) or ``constexpr_lut_to_sparse``
  (inside a sparse_to_dense) over a const float LUT: quantization after
  palettization quantizes the LUT.

A stage says which forms it accepts and supplies ``compress(view, params,
names) -> Replacement | None``. ``transform_weights`` finds the weights,
resolves each one's parameters (OptimizationConfig, then op_selector, then the
stage's own keywords), maps ``compress`` over them with the runner's executor
(``context.map``), and splices every replacement in with one sweep of the
shared rewrite driver. ``compress`` is a module-level function so that a
process pool can ship it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

import numpy as np
from pyrsistent import freeze, pmap

from ir import lazy
from ir.analysis import use_def
from ir.core import Function, Op, Program, Var
from ir.digest import tensor_digest
from ir.fold import fold_value, is_constexpr
from ir.rewrite import Pattern, Rewrite, map_functions, merge_counts, sweep_function_counted
from stages.base import StageContext, StageResult
from stages.compression.config import OptimizationConfig
from stages.compression.forms import pre_ios18_joint

DEFAULT_MIN_ELEMENTS = 2048  # the seed compresses only weights larger than this

# the output-channel axis of the weight slot of each op type (conv_transpose is [C_in, C_out/g, ...]);
# ONNX ops kept as they are name their inputs in0, in1, ...: an RNN's W / R are
# [directions, gates * hidden, input]: axis 1 gives every gate's every unit its own scale
_RNN_AXES = {(f"onnx.{t}", slot): 1 for t in ("LSTM", "GRU", "RNN") for slot in ("in1", "in2")}
OUTPUT_AXIS = {("linear", "weight"): 0, ("conv", "weight"): 0, ("conv_transpose", "weight"): 1,
               ("matmul", "y"): -1, ("matmul", "x"): -2,
               ("onnx.MatMul", "in1"): -1, ("onnx.MatMul", "in0"): -2, ("onnx.Conv", "in1"): 0,
               ("onnx.ConvTranspose", "in1"): 1, **_RNN_AXES}
# the input (reduction) axis: where n:m structured sparsity runs
INPUT_AXIS = {("linear", "weight"): 1, ("conv", "weight"): 1, ("conv_transpose", "weight"): 0,
              ("matmul", "y"): -2, ("matmul", "x"): -1,
              ("onnx.MatMul", "in1"): -2, ("onnx.MatMul", "in0"): -1, ("onnx.Conv", "in1"): 1,
              ("onnx.ConvTranspose", "in1"): 0, **{k: 2 for k in _RNN_AXES}}

KINDS = ("dense", "sparse", "lut")


class Skip(str):
    """A compress function's documented reason for leaving a weight as it is."""


def dense_value(view, who: str):
    """The dense weight a calibrated method works on, or why not: `who` takes dense weights
    (a sparse or LUT form would be compressed again), and an empty one has nothing to fit."""
    if view.kind != "dense":
        return Skip(f"{who} takes dense weights")
    w = view.value
    return Skip("empty weight") if w.size == 0 else w


# a 0-D weight: every compressed form takes more bytes (and the constexpr ops need rank >= 1)
_SCALAR = Skip("a scalar: no compressed form is smaller")


class WeightView:
    """What an op_selector and a compressor see of one weight.

    ``name``: the weight's value name (what its consumers read); ``value``: the
    dense weight, read-only (computed on first use for compressed forms);
    ``consumers``: the ops that read it; ``kind``: its form (see the module
    docstring); ``sources``: role -> op of the form ("weight" for a dense const;
    "nonzero_data", "mask", "end" for sparse; "lut", "end" for lut).
    """

    __slots__ = ("name", "var", "dtype", "shape", "consumers", "producer", "kind", "sources",
                 "opset", "function", "_value")

    def __init__(self, var: Var, consumers, producer: Op, kind: str, sources: Mapping,
                 opset: str, function: str):
        self.name, self.var, self.dtype, self.shape = var.name, var, var.dtype, tuple(var.shape)
        self.consumers, self.producer, self.kind = tuple(consumers), producer, kind
        self.sources, self.opset, self.function = pmap(sources), opset, function
        self._value = var.val

    def producer_of(self, var: Var) -> Optional[Op]:
        """The op of this weight's form that makes `var` (None for values outside the form)."""
        for op in self.sources.values():
            if any(out.name == var.name for out in op.outputs):
                return op
        return None

    def reconstruct(self, known: Mapping) -> np.ndarray:
        """The dense weight with some of the form's values replaced (name -> array), by the op kernels."""
        return fold_value(self.var, self.producer_of, dict(known))

    @property
    def value(self) -> np.ndarray:
        if self._value is None:
            value = fold_value(self.var, self.producer_of)
            if value.flags.writeable:
                value = value.copy()
                value.flags.writeable = False
            self._value = value
        return self._value

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def consumer_types(self) -> tuple:
        return tuple(sorted({c.op_type for c in self.consumers}))

    def _axis(self, table) -> Optional[int]:
        axes = set()
        for c in self.consumers:
            for slot, v in c.inputs.items():
                if not isinstance(v, tuple) and v.name == self.name:
                    axes.add(table.get((c.op_type, slot), 0))
        if len(axes) != 1:
            return 0 if not axes else None
        a = axes.pop()
        rank = len(self.shape)
        return a + rank if a < 0 else min(a, max(rank - 1, 0))

    def output_axis(self) -> Optional[int]:
        """The output-channel axis implied by how the weight is used (None if consumers disagree)."""
        return self._axis(OUTPUT_AXIS)

    def input_axis(self) -> Optional[int]:
        """The input (reduction) axis implied by how the weight is used (None if consumers disagree)."""
        return self._axis(INPUT_AXIS)

    def __getstate__(self):
        return {s: getattr(self, s) for s in self.__slots__}

    def __setstate__(self, state):
        for k, v in state.items():
            setattr(self, k, v)

    def __repr__(self) -> str:
        return f"<WeightView {self.name} {self.kind} {self.dtype}{list(self.shape)}>"


@dataclass(frozen=True)
class Replacement:
    """New ops standing for (part of) one weight's form.

    ``claims``: roles in ``view.sources`` whose ops are removed (default: the
    dense const). ``replace``: old value name -> new Var (default: the weight's
    name -> the last new op's first output). ``stats``: figures for the report.
    """

    ops: tuple
    stats: Mapping = field(default_factory=dict)
    claims: tuple = ("weight",)
    replace: Optional[Mapping] = None


def default_selector(view: WeightView) -> bool:
    """More than 2048 elements (the seed's rule). Without an op_selector, transform_weights
    also leaves a weight whose compressed form would not be smaller than it."""
    return view.size > DEFAULT_MIN_ELEMENTS


def _float_const(var: Optional[Var], producer: Callable) -> Optional[Op]:
    op = None if var is None else producer(var)
    if op is None or op.op_type != "const" or var.val is None or not var.type.dt.is_float:
        return None
    return op


def _only_reader(var: Var, op: Op, ud) -> bool:
    return all(c is op for c in ud.consumers_of(var)) and not ud.is_block_output(var)


def _consts_but(op: Op, link: Optional[Var]) -> bool:
    """Every input of op is a known value, except the chain link."""
    return all(v.val is not None for v in op.input_vars() if link is None or v.name != link.name)


def _form_of(op: Op, ud, kinds) -> Optional[tuple]:
    """(kind, sources, weight Var) when op ends a weight form of one of `kinds`."""
    producer = ud.producer
    if op.op_type == "const" and "dense" in kinds and len(op.outputs) == 1:
        out = op.outputs[0]
        readers = ud.consumers_of(out)
        if _float_const(out, producer) is not None and readers and not any(is_constexpr(c) for c in readers):
            return "dense", {"weight": op}, out
        return None
    if op.op_type == "constexpr_sparse_to_dense" and op.get("shape") is None:
        mask = producer(op.mask)
        nz = _float_const(op.nonzero_data, producer)
        if nz is not None and "sparse" in kinds and _only_reader(op.nonzero_data, op, ud) \
                and mask is not None and mask.op_type == "const":
            return "sparse", {"nonzero_data": nz, "mask": mask, "end": op}, op.outputs[0]
        inner = producer(op.nonzero_data)
        if inner is not None and inner.op_type == "constexpr_lut_to_sparse" and "lut" in kinds:
            lut = _float_const(inner.lut, producer)
            if lut is not None and _only_reader(inner.lut, inner, ud) and _consts_but(inner, None) \
                    and _only_reader(inner.outputs[1], op, ud) and op.mask.name == inner.outputs[0].name:
                return "lut", {"lut": lut, "inner": inner, "end": op}, op.outputs[0]
        return None
    if op.op_type == "constexpr_lut_to_dense" and op.get("shape") is None and "lut" in kinds:
        lut = _float_const(op.lut, producer)
        if lut is not None and _only_reader(op.lut, op, ud) and _consts_but(op, None):
            return "lut", {"lut": lut, "end": op}, op.outputs[0]
    return None


def weight_views(fn: Function, kinds=("dense",)) -> list:
    """Every weight of the function (nested blocks included) in one of the given forms."""
    ud = use_def(fn)
    views = []
    for op in fn.block.walk():
        found = _form_of(op, ud, kinds) or pre_ios18_joint(op, fn.opset, kinds)
        if found is None:
            continue
        kind, sources, var = found
        consumers = ud.consumers_of(var)
        if not consumers and not ud.is_block_output(var):
            continue  # dead: nothing to gain
        views.append(WeightView(var, consumers, op, kind, sources, fn.opset, fn.name))
    return views


def resolve_params(view: WeightView, stage_params: Mapping, config: Optional[OptimizationConfig],
                   op_selector: Optional[Callable]):
    """The parameters to compress this weight with, or a Skip saying why it is left alone.

    A config entry (name > type > global; None skips) overrides the stage's
    keywords; the op_selector (default: more than 2048 elements) must accept it too.
    """
    params = dict(stage_params)
    if config is not None:
        chosen, where = config.resolve_explained(view.name, [c.name for c in view.consumers],
                                                 view.consumer_types)
        if chosen is None:
            return Skip(f"config: {where} is None")
        params.update(dict(chosen))
    if op_selector is None:
        if default_selector(view):
            return params
        return Skip(f"below the size threshold: {view.size} elements, compressed when more than "
                    f"{DEFAULT_MIN_ELEMENTS}")
    if op_selector(view):
        return params
    return Skip(f"op_selector {getattr(op_selector, '__qualname__', type(op_selector).__name__)} declined it")


def unclaimed_weights(fn: Function, views, desc: str = "this stage") -> list:
    """(value name, reason) for every weight-like value of the function that is not one of
    `views` (the weights a stage takes): constexpr chains in a form the stage does not
    compress, consts that constexpr ops read too, large non-float consts. Small non-float
    consts (shapes, axes, indices) are not weights and are not listed."""
    ud = use_def(fn)
    taken = {v.name for v in views}
    found = []
    for op in fn.block.walk():
        for var in op.outputs:
            if var.name in taken:
                continue
            reason = _why_not_taken(op, var, ud, desc)
            if reason is not None:
                found.append((var.name, reason))
    return found


def _why_not_taken(op: Op, var: Var, ud, desc: str) -> Optional[str]:
    readers = ud.consumers_of(var)
    plain = [c for c in readers if not is_constexpr(c)]
    if not plain:  # an ingredient of a compressed form, or dead: not a weight of its own
        return None
    if op.op_type == "const":
        if var.val is None:
            return None
        if not var.type.dt.is_float:
            size = int(np.prod(var.shape, dtype=np.int64))
            return f"dtype {var.dtype}: only float weights are compressed" if size > DEFAULT_MIN_ELEMENTS else None
        inside = sorted({c.op_type for c in readers if is_constexpr(c)})
        return f"also read by {', '.join(inside)} (part of a compressed form)" if inside else None
    if is_constexpr(op):
        return f"already compressed ({op.op_type}): not a form {desc} compresses further"
    return None


# ---- names -----------------------------------------------------------------------------

class Names:
    """Fresh names for the new ops of one weight, reserved before the jobs run (so that
    parallel jobs never pick the same name). ``names("lut")`` -> e.g. "w_lut"."""

    ROLES = ("q", "scale", "offset", "indices", "lut", "mask", "nonzero", "sparse", "dense", "pcs",
             "lut_q", "lut_scale", "lut_offset", "palettized", "axis", "shape", "fp16", "dtype")

    def __init__(self, base: str, taken: set):
        self.base = base
        self._names = {}
        for role in self.ROLES:
            hint, i = f"{base}_{role}", 0
            name = hint
            while any(n in taken for n in (name, f"{name}_0", f"{name}_1")):
                i += 1
                name = f"{hint}_{i}"
            taken.update((name, f"{name}_0", f"{name}_1"))
            self._names[role] = name

    def __call__(self, role: str) -> str:
        return self._names[role]


# ---- the transform -----------------------------------------------------------------------

def transform_weights(program: Program, compress: Callable, stage_params: Mapping,
                      context: StageContext, config=None, op_selector=None,
                      kinds=("dense",), desc: str = "weights", check: Optional[Callable] = None) -> StageResult:
    """Compress every selected weight of every function; the input program when none changed.

    `check(params)` validates each weight's resolved parameters before any work starts.
    Stats: {"weights": {name: figures}, "compressed": n, "skipped": n,
    "original_bytes": n, "compressed_bytes": n} over the weights compressed. Every weight of
    the program appears in "weights": compressed (its figures) or {"skipped": reason}, the
    reason saying why it was left alone (size threshold, op_selector, a None config entry,
    a layout its shape cannot take, a form the stage does not compress, not a float, and
    without an op_selector a compressed form not smaller than the weight).
    """
    config = as_config(config)
    stats = {}

    counts: list = [{"splice_weights": {"matched": 0, "rewritten": 0}}]

    def one_function(fn: Function) -> Function:
        taken = set(use_def(fn).names)
        jobs = []
        views = weight_views(fn, kinds)
        for view in views:
            params = resolve_params(view, stage_params, config, op_selector)
            if not view.shape and not isinstance(params, Skip):
                params = _SCALAR
            if isinstance(params, Skip):
                stats[_key(fn, view.name)] = pmap({"skipped": str(params)})
                continue
            if check is not None:
                check(params)
            jobs.append((view, params, Names(view.name, taken)))
        for name, reason in unclaimed_weights(fn, views, desc):
            stats[_key(fn, name)] = pmap({"skipped": reason})
        tasks = [(compress, view, params, names) for view, params, names in jobs]
        results = tracked_map(context, _run_job, tasks, desc, after=_spiller(getattr(context, "spill", None)))
        chosen = {}
        for (view, _, _), (rep, seconds) in zip(jobs, results):
            key = _key(fn, view.name)
            if isinstance(rep, Replacement):
                _refreeze(rep)
            if isinstance(rep, Replacement) and op_selector is None and not _smaller(rep):
                rep = _not_smaller(rep)
            if isinstance(rep, Replacement):
                stats[key] = pmap({**rep.stats, "seconds": seconds})
                splice = _splice(view, rep)
                for op in splice.claims:
                    chosen[id(op)] = splice
            else:  # a documented skip: the reason (compress functions never return None)
                stats[key] = pmap({"skipped": _reason(rep, view.name), "seconds": seconds})
        if not chosen:
            return fn
        new_fn, c = sweep_function_counted(fn, (_splice_pattern(chosen),))
        counts.append(c)
        return new_fn

    new = map_functions(program, one_function)
    return StageResult(new, summarize(stats).set("patterns", merge_counts(*counts)))


def _refreeze(rep: Replacement) -> None:
    """Make the arrays of a replacement read-only again. One that came back from a process
    pool was unpickled, and numpy unpickles every array writeable: the IR would then hold
    writeable constants (ir.validate between steps caught it). The arrays are this
    process's fresh copies, so flipping their flag touches nothing anyone else holds."""
    for op in rep.ops:
        for value in (*op.attrs.values(), *(v.val for v in op.outputs)):
            if isinstance(value, np.ndarray) and value.flags.writeable:
                value.flags.writeable = False


def _key(fn: Function, name: str) -> str:
    return name if fn.name == "main" else f"{fn.name}/{name}"


def _reason(skip, name: str) -> str:
    """A compress function's reason without the weight's name (the stats key names it)."""
    text = str(skip) if skip is not None else "the compressor gave no replacement"
    return text[len(name) + 2:] if text.startswith(f"{name}: ") else text


def _smaller(rep: Replacement) -> bool:
    """The default selection (no op_selector) writes a compressed form only when it takes
    fewer bytes than what it replaces (a per-channel scale for each element of a bias, LUTs
    for groups of a few values, a mask over a weight with almost no zeros would make the
    file bigger). An explicit op_selector is obeyed as it is."""
    before, after = rep.stats.get("original_bytes"), rep.stats.get("compressed_bytes")
    return before is None or after is None or after < before


def _layout(st) -> str:
    """The layout a stage chose for a weight, from its stats: "per_block, block_size 25 (requested 32)"."""
    parts = [str(st["granularity"])] if "granularity" in st else []
    for key in ("block_size", "group_size"):
        if key in st:
            asked = st.get(f"{key}_requested")
            parts.append(f"{key} {st[key]}" + (f" (requested {asked})" if asked is not None else ""))
    if st.get("cluster_dim", 1) != 1:
        parts.append(f"cluster_dim {st['cluster_dim']}")
    return ", ".join(parts)


def _not_smaller(rep: Replacement) -> Skip:
    st = rep.stats
    what = " ".join(str(x) for x in (st.get("mode"), st.get("dtype")) if x)
    layout = _layout(st)
    return Skip(f"not smaller once compressed: {what}{f' ({layout})' if layout else ''} takes "
                f"{st['compressed_bytes']} bytes against the weight's {st['original_bytes']}")


def tracked_map(context: StageContext, fn: Callable, tasks: list, desc: str,
                after: Optional[Callable] = None) -> list:
    """context.map(fn, tasks) as a list; the progress bar (if any) advances as each result
    comes back, since the runner's map yields results in order as they are ready.
    `after(result)`, when given, runs on each result as it arrives (before the next is asked for)."""
    def results():  # the map starts when the bar first asks, so the bar is there from the start
        for r in context.map(fn, tasks):
            yield r if after is None else after(r)

    return list(context.track(results(), desc=desc, total=len(tasks)))


def as_config(config) -> Optional[OptimizationConfig]:
    if config is None or isinstance(config, OptimizationConfig):
        return config
    if isinstance(config, Mapping):
        return OptimizationConfig.from_dict(config)
    if isinstance(config, str):
        return OptimizationConfig.from_text(config)
    from stages.compression.config import ConfigError

    raise ConfigError(f"config must be an OptimizationConfig, a mapping or TOML/JSON text, "
                      f"got {type(config).__name__}")


def summarize(stats: dict):
    done = [s for s in stats.values() if "skipped" not in s]
    return freeze({"weights": stats, "compressed": len(done), "skipped": len(stats) - len(done),
                   "original_bytes": sum(int(s.get("original_bytes", 0)) for s in done),
                   "compressed_bytes": sum(int(s.get("compressed_bytes", 0)) for s in done)})


def _run_job(task):
    # module level so that process pools can ship it
    compress, view, params, names = task
    start = time.perf_counter()
    rep = compress(view, params, names)
    # a file-backed weight (ir.lazy): check its file did not change under us, and give back
    # the pages reading it touched, so only the weights in flight stay resident
    source = view.var.val
    if source is not None:
        lazy.verify(source)
        lazy.release(source)
    return rep, time.perf_counter() - start


def _spiller(spill) -> Optional[Callable]:
    """With a spill store (the runner lends one when the model's weights are file-backed),
    each job's result has its big constants moved to files as it arrives, so a stage holds
    the weights in flight, not every compressed weight of the model."""
    if spill is None:
        return None

    def after(result):
        rep, seconds = result
        return (_spilled(rep, spill) if isinstance(rep, Replacement) else rep), seconds

    return after


def _spilled(rep: Replacement, spill) -> Replacement:
    """rep with each big const's value replaced by an equal file-backed array, and the ops
    that read those consts pointing at the new Vars (the old arrays are then unreferenced)."""
    swap: dict = {}
    ops = []
    for op in rep.ops:
        if op.op_type == "const" and spill.wants(op.attrs.get("val")):
            old = op.outputs[0]
            val = spill.put(op.attrs["val"], tensor_digest(op.attrs["val"]))  # hashed while in memory
            new = Var(old.name, old.type, val)
            swap[id(old)] = new
            ops.append(Op.make("const", op.name, outputs=(new,), attrs=op.attrs.set("val", val)))
            continue
        if swap and any(id(v) in swap for v in op.input_vars()):
            ins = {k: (tuple(swap.get(id(x), x) for x in v) if isinstance(v, tuple) else swap.get(id(v), v))
                   for k, v in op.inputs.items()}
            op = op.replace(inputs=ins)
        ops.append(op)
    if not swap:
        return rep
    replace = None if rep.replace is None else {k: swap.get(id(v), v) for k, v in rep.replace.items()}
    return Replacement(tuple(ops), rep.stats, rep.claims, replace)


@dataclass(frozen=True)
class _Splice:
    claims: tuple
    new_ops: tuple
    replace: dict


def _splice(view: WeightView, rep: Replacement) -> _Splice:
    claims = tuple(view.sources[role] for role in rep.claims)
    replace = dict(rep.replace) if rep.replace is not None else {view.name: rep.ops[-1].outputs[0]}
    return _Splice(claims, tuple(rep.ops), replace)


def _splice_pattern(chosen: dict) -> Pattern:
    def match(op, ctx):
        return chosen.get(id(op))

    def rewrite(s, ctx):
        return Rewrite(claims=s.claims, new_ops=s.new_ops, replace=s.replace)

    return Pattern("splice_weights", match, rewrite)
