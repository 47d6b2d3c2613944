"""Small stages and programs of the pipeline tests' own (they do not wait on the real stages)."""
from __future__ import annotations

import os

import numpy as np

from ir.builder import TensorSpec, program
from ir.rewrite import map_functions
from stages.base import REGISTRY, Stage


TEST_STAGES: dict = {}


def stage(name: str, version: str = "1"):
    """Like stages.base.stage, but kept out of the global registry: tests register them
    for their own duration (conftest), so other suites' stages.names() never see them."""
    def wrap(fn):
        st = Stage(name, fn, version)
        st.defaults
        TEST_STAGES[name] = st
        return st

    return wrap


def register() -> None:
    """Put the test stages in the registry for good (fresh processes started by tests)."""
    REGISTRY.update(TEST_STAGES)

CALLS_FILE_ENV = "WP_TEST_CALLS_FILE"  # when set, every test-stage call appends a line to it
CALLS: list = []


def _record(name: str) -> None:
    CALLS.append(name)
    path = os.environ.get(CALLS_FILE_ENV)
    if path:
        with open(path, "a") as f:
            f.write(name + "\n")


def _map_const(prog, name: str, fn):
    """Replace the value of const `name` with fn(value); returns prog itself when absent."""
    from ir.construct import const_op

    def one(f):
        ops = list(f.block.ops)
        hits = [i for i, op in enumerate(ops) if op.op_type == "const" and op.name == name]
        if not hits:
            return f
        old = ops[hits[0]]
        new = const_op(name, fn(old.attrs["val"]))
        from ir.rewrite import replace_all_uses

        ops[hits[0]] = new
        f2 = f.replace(block=f.block.replace(ops=ops))
        return replace_all_uses(f2, {old.outputs[0].name: new.outputs[0]})

    return map_functions(prog, one)


@stage("test_scale_const", version="1")
def scale_const(prog, *, name="w0", factor=2.0, context=None):
    """Multiplies one named weight (a weight-changing, non-equivalent stage)."""
    _record(f"scale_const:{name}:{factor}")
    return _map_const(prog, name, lambda v: (v * np.float32(factor)).astype(v.dtype))


@stage("test_round_const", version="1")
def round_const(prog, *, name="w0", decimals=2, context=None):
    _record(f"round_const:{name}")
    return _map_const(prog, name, lambda v: np.round(v, decimals).astype(v.dtype))


@stage("test_identity", version="1")
def identity(prog, *, tag="", context=None):
    _record("identity")
    return prog


@stage("test_boom", version="1")
def boom(prog, *, context=None):
    _record("boom")
    raise RuntimeError("boom went the stage")


def mlp(n_layers: int = 3, width: int = 8, seed: int = 0):
    """x -> linear(w0) -> relu -> linear(w1) -> ... ; consts named w0, w1, ..."""
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal((width, width)).astype(np.float32) for _ in range(n_layers)]

    @program(inputs={"x": TensorSpec((1, width), "fp32")})
    def net(b, x):
        h = x
        for i, w in enumerate(weights):
            h = b.linear(x=h, weight=b.const(w, name=f"w{i}"), name=f"lin{i}")
            if i < n_layers - 1:
                h = b.relu(x=h, name=f"relu{i}")
        return h

    return net


def _halve(item):
    name, arr = item
    return name, (arr * np.float32(0.5)).astype(arr.dtype)


@stage("test_halve_all", version="1")
def halve_all(prog, *, context=None):
    """Maps over every const through context.map (what compression stages do with weights)."""
    _record("halve_all")
    consts = [(op.name, op.attrs["val"]) for _f, op in prog.walk()
              if op.op_type == "const" and op.attrs["val"].dtype == np.float32 and op.attrs["val"].ndim == 2]
    done = dict(context.map(_halve, context.track(consts, desc="halve", total=len(consts))))
    out = prog
    for name, val in done.items():
        out = _map_const(out, name, lambda _v, val=val: val)
    return out


def _where(item):
    """Which process and thread ran this item (a module-level function: picklable)."""
    import threading
    import time

    time.sleep(0.05)  # long enough that a pool hands items to more than one worker
    return item, os.getpid(), threading.get_ident()


@stage("test_where", version="1")
def where(prog, *, n=4, context=None):
    """Maps n items through context.map and reports where each ran (in its stats)."""
    from pyrsistent import pmap

    from stages.base import StageResult

    ran = list(context.map(_where, list(range(n))))  # map yields results: read them once
    return StageResult(prog, pmap({"items": tuple(r[0] for r in ran),
                                   "pids": tuple(sorted({r[1] for r in ran})),
                                   "threads": tuple(sorted({r[2] for r in ran}))}))
