"""Finding the weights of a program and replacing them, shared by every
compression stage.

A weight is a float const read by at least one op (never only by block
outputs). A compression stage supplies `compress(view, params) ->
Replacement | None`; `transform_weights` finds the weights, resolves each
one's parameters (op_selector / OptimizationConfig / the stage's own
keywords), maps `compress` over them with the runner's executor, and splices
every replacement in with one sweep of the shared rewrite driver.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

import numpy as np
from pyrsistent import pmap

from ir.analysis import use_def
from ir.core import Function, Op, Program
from ir.rewrite import Pattern, Rewrite, map_functions, sweep_function
from stages.base import StageContext, StageResult
from stages.compression.config import OptimizationConfig

DEFAULT_MIN_ELEMENTS = 2048  # the seed compresses only weights larger than this

# the output-channel axis of the weight slot of each op type (conv_transpose is [C_in, C_out/g, ...])
OUTPUT_AXIS = {("linear", "weight"): 0, ("conv", "weight"): 0, ("conv_transpose", "weight"): 1,
               ("matmul", "y"): -1, ("matmul", "x"): -2}


@dataclass(frozen=True)
class WeightView:
    """What an op_selector and a compressor see of one weight."""

    name: str
    value: np.ndarray  # read-only
    dtype: str  # IR dtype
    consumers: tuple  # the ops that read it
    producer: Op  # the const (or constexpr) op that makes it

    @property
    def size(self) -> int:
        return int(self.value.size)

    @property
    def shape(self) -> tuple:
        return tuple(self.value.shape)

    @property
    def consumer_types(self) -> tuple:
        return tuple(sorted({c.op_type for c in self.consumers}))

    def output_axis(self) -> Optional[int]:
        """The output-channel axis implied by how the weight is used (None if consumers disagree)."""
        axes = set()
        for c in self.consumers:
            for slot, v in c.inputs.items():
                if not isinstance(v, tuple) and v.name == self.name:
                    axes.add(OUTPUT_AXIS.get((c.op_type, slot), 0))
        if len(axes) != 1:
            return 0 if not axes else None
        a = axes.pop()
        return a + self.value.ndim if a < 0 else a


@dataclass(frozen=True)
class Replacement:
    """New ops standing for one weight; the last op's first output takes the weight's place."""

    ops: tuple
    stats: Mapping = field(default_factory=dict)


def default_selector(view: WeightView) -> bool:
    return view.size > DEFAULT_MIN_ELEMENTS


def weight_views(fn: Function, producers=("const",)) -> list:
    """Every float weight of the function (nested blocks included) made by one of `producers`."""
    ud = use_def(fn)
    views = []
    for op in fn.block.walk():
        if op.op_type not in producers or len(op.outputs) != 1:
            continue
        out = op.outputs[0]
        consumers = ud.consumers_of(out)
        if not consumers or not out.type.dt.is_float or out.val is None:
            continue
        views.append(WeightView(out.name, out.val, out.dtype, consumers, op))
    return views


def resolve_params(view: WeightView, stage_params: Mapping, config: Optional[OptimizationConfig],
                   op_selector: Optional[Callable]) -> Optional[Mapping]:
    """The parameters to compress this weight with, or None to leave it."""
    if config is not None:
        chosen = config.resolve(view.name, [c.name for c in view.consumers], view.consumer_types)
        if chosen is None:
            return None
        params = {**stage_params, **dict(chosen)}
    else:
        params = dict(stage_params)
    selector = op_selector or default_selector
    return params if selector(view) else None


def transform_weights(program: Program, compress: Callable, stage_params: Mapping,
                      context: StageContext, config=None, op_selector=None,
                      producers=("const",), desc: str = "weights") -> StageResult:
    """Compress every selected weight of every function; the input program when none changed."""
    if isinstance(config, Mapping):
        config = OptimizationConfig.from_dict(config)
    stats = {}

    def one_function(fn: Function) -> Function:
        jobs = []
        for view in weight_views(fn, producers):
            params = resolve_params(view, stage_params, config, op_selector)
            if params is not None:
                jobs.append((view, params))
        tasks = [(compress, view, params) for view, params in jobs]
        results = context.map(_run_job, list(context.track(tasks, desc=desc, total=len(tasks))))
        chosen = {}
        for (view, _), rep in zip(jobs, results):
            if rep is not None:
                chosen[id(view.producer)] = (view, rep)
                stats[view.name] = pmap(rep.stats)
        if not chosen:
            return fn
        return sweep_function(fn, (_splice_pattern(chosen),))

    new = map_functions(program, one_function)
    return StageResult(new, pmap({"weights": pmap(stats)}))


def _run_job(task):
    # module level so that process pools can ship it
    compress, view, params = task
    return compress(view, params)


def _splice_pattern(chosen: dict) -> Pattern:
    def match(op, ctx):
        return chosen.get(id(op))

    def rewrite(m, ctx):
        view, rep = m
        last = rep.ops[-1].outputs[0]
        return Rewrite(claims=(view.producer,), new_ops=rep.ops, replace={view.name: last})

    return Pattern("splice_weights", match, rewrite)
