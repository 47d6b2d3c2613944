"""A second, deliberately naive implementation of the quantization and decompression ops.

Verification must not trust the kernels it checks: a bug in the production `quantize`
kernel (round -> floor, or the zero point subtracted) appears on both sides of a
before/after comparison and cancels. So the ops of ir/ops/quant.py get a reference
implementation here, written from the op semantics (DESIGN.md, MIL's iOS17 / iOS18 op
definitions) and sharing no code with ir/ops/quant.py nor with
stages/compression/numeric/: plain formulas in float64 over explicit per-element index
arithmetic, no fast paths, no chunking, no lookup tables.

    from ir import oracle
    run = oracle.evaluate(program, {"x": x})       # quant ops by the oracle, the rest as usual
    run.outputs, run.values, run.disagreements     # disagreements: production kernel vs oracle
    oracle.const_values(program)                   # every value computable from consts alone

`evaluate` runs every op of KERNELS with the oracle and, unless `compare=False`, the
production kernel too on the same inputs, recording where they differ beyond `ULPS`
units in the last place (integers: at all). The oracle's value is what flows on, so
everything downstream sees the reference semantics. `pin={value name: array}` replaces
a value as soon as it is computed (the contract checks use it to hold a value fixed).
Ops with nested blocks run their blocks through this evaluator as well.

Semantics (x: data, s: scale, z: zero point / offset; blocks: a parameter of shape p
over data of shape d covers d[a] / p[a] consecutive elements on every axis a):

- quantize: clip(round_half_even(x / s) + z, dtype range); x / s in x's dtype.
- dequantize, constexpr_affine_dequantize: (q - z) * s, exact, rounded once to s's dtype.
- constexpr_blockwise_shift_scale: (data - offset) * scale per block, rounded once to
  scale's dtype.
- constexpr_lut_to_dense: iOS16 lut[indices] reshaped to `shape`; iOS18 each index reads
  the LUT of its block, a vector of `vector_size` elements laid out along `vector_axis`.
- constexpr_sparse_to_dense: zeros with nonzero_data written at the set mask bits in
  row-major order (flat mask + shape in iOS16).
- constexpr_lut_to_sparse: the LUT lookup of the sparse indices; (mask widened along
  vector_axis, the looked-up values at its set bits).
- constexpr_sparse_blockwise_shift_scale: (mask, shift-scale of the nonzero values with
  the parameters of their dense positions).
- constexpr_cast: fp16 -> fp32.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

import numpy as np

from ir.core import Block, Op, Program
from ir.dtypes import dtype as lookup_dtype
from ir.interpret import EvaluationError, _bind_inputs, _conform, _gather, conform_value
from ir.ops import BLOCK_KERNELS, Context, OpError, foreign_handler, is_foreign, schema

ULPS = 4  # production and oracle floats may differ by this many units in the last place


# ---- the formulas ------------------------------------------------------------------------

def round_half_even(y: np.ndarray) -> np.ndarray:
    """Nearest integer, ties to the even one, by floor and the fractional part (not np.round)."""
    y = np.asarray(y, np.float64)
    out = y.copy()
    fin = np.isfinite(y)
    f = np.floor(y[fin])
    frac = y[fin] - f
    odd = np.mod(f, 2.0) == 1.0
    up = (frac > 0.5) | ((frac == 0.5) & odd)
    out[fin] = f + up
    return out


def param_index(data_shape, param_shape) -> tuple:
    """For every element of data, the index of the parameter entry covering it, as a tuple of
    broadcastable integer arrays (one per axis): element i on axis a -> i // (d[a] / p[a])."""
    rank = len(data_shape)
    index = []
    for a, (d, p) in enumerate(zip(data_shape, param_shape)):
        per = d // p if p else 1
        coord = np.arange(d) // max(per, 1)
        index.append(coord.reshape([d if k == a else 1 for k in range(rank)]))
    return tuple(index)


def per_element(param, data_shape, axis) -> np.ndarray:
    """A scalar, per-axis (1-D, with axis) or per-block (data's rank) parameter, one value per
    element of data, in float64."""
    p = np.asarray(param)
    if p.ndim == 0:
        return np.full(data_shape, float(p), np.float64) if p.dtype.kind == "f" else \
            np.full(data_shape, int(p), np.float64)
    rank = len(data_shape)
    if p.ndim == 1 and (rank > 1 or axis is not None):  # per-axis: needs the axis
        if axis is None:
            raise OpError(f"oracle: a 1-D parameter for data of shape {tuple(data_shape)} needs an axis")
        a = int(axis) % rank
        shape = [1] * rank
        shape[a] = p.size
        p = p.reshape(shape)
    if p.ndim != rank:
        raise OpError(f"oracle: parameter of shape {p.shape} for data of shape {tuple(data_shape)}")
    return np.broadcast_to(p.astype(np.float64)[param_index(data_shape, p.shape)], data_shape)


def quantize(x, scale, zero_point, axis, out_dtype: str) -> np.ndarray:
    dt = lookup_dtype(out_dtype)
    x = np.asarray(x)
    s = np.asarray(scale).astype(x.dtype)
    # the division in the input's dtype, as the op defines it; everything after in float64
    div = (x / per_element(s, x.shape, axis).astype(x.dtype)).astype(np.float64)
    q = round_half_even(div)
    if zero_point is not None:
        q = q + per_element(np.asarray(zero_point).astype(np.int64), x.shape, axis)
    q = np.where(np.isnan(q), 0.0, q)
    return np.minimum(np.maximum(q, dt.min), dt.max).astype(dt.storage)


def dequantize(q, scale, zero_point, axis) -> np.ndarray:
    q = np.asarray(q)
    centered = q.astype(np.float64)
    if zero_point is not None:
        centered = centered - per_element(zero_point, q.shape, axis)
    return (centered * per_element(scale, q.shape, axis)).astype(np.asarray(scale).dtype)


def shift_scale(data, scale, offset) -> np.ndarray:
    data = np.asarray(data)
    centered = data.astype(np.float64)
    if offset is not None:
        centered = centered - per_element(offset, data.shape, None)
    return (centered * per_element(scale, data.shape, None)).astype(np.asarray(scale).dtype)


def lut_lookup(indices, lut, vector_axis=None) -> np.ndarray:
    """iOS18 constexpr_lut_to_dense: lut [blocks..., entries, vector_size]."""
    indices, lut = np.asarray(indices), np.asarray(lut)
    rank, vs = indices.ndim, lut.shape[-1]
    out_shape = list(indices.shape)
    axis = None if vector_axis is None or vs == 1 else int(vector_axis) % rank
    if axis is not None:
        out_shape[axis] *= vs
    # for every output element: which index element, which vector component, which block
    coords, component = [], np.zeros([1] * rank, np.int64)
    for a, n in enumerate(out_shape):
        c = np.arange(n)
        if a == axis:
            component = (c % vs).reshape([n if k == a else 1 for k in range(rank)])
            c = c // vs
        coords.append(c.reshape([n if k == a else 1 for k in range(rank)]))
    idx = indices[tuple(coords)].astype(np.int64)
    if np.any(idx < 0) or np.any(idx >= lut.shape[-2]):
        raise IndexError(f"LUT index outside [0, {lut.shape[-2]})")
    blocks = tuple(c // (indices.shape[a] // lut.shape[a]) for a, c in enumerate(coords))
    return lut[blocks + (idx, component)].astype(lut.dtype)


def scatter(values, mask) -> np.ndarray:
    """Zeros of mask's shape with `values` at the set bits, in row-major order."""
    mask = np.asarray(mask)
    flat = np.zeros(mask.size, np.asarray(values).dtype)
    where = np.flatnonzero(mask.reshape(-1))  # positions of the set bits, row-major
    if len(where) != np.asarray(values).size:
        raise ValueError(f"{len(where)} set mask bits for {np.asarray(values).size} values")
    flat[where] = np.asarray(values).reshape(-1)
    return flat.reshape(mask.shape)


def gather_set(dense, mask) -> np.ndarray:
    """The elements of dense at mask's set bits, row-major."""
    return np.asarray(dense).reshape(-1)[np.flatnonzero(np.asarray(mask).reshape(-1))]


# ---- the op kernels (vals, out_types) -> list of outputs -----------------------------------

def _quantize_op(v, out_types):
    return [quantize(v["input"], v["scale"], v.get("zero_point"), v.get("axis"), out_types[0].dt.name)]


def _dequantize_op(v, out_types):
    return [dequantize(v["input"], v["scale"], v.get("zero_point"), v.get("axis"))]


def _affine_op(v, out_types):
    axis = 0 if v.get("axis") is None else int(v["axis"])
    return [dequantize(v["quantized_data"], v["scale"], v["zero_point"], axis)]


def _shift_scale_op(v, out_types):
    return [shift_scale(v["data"], v["scale"], v.get("offset"))]


def _lut_op(v, out_types):
    if v.get("shape") is not None:  # iOS16: flat LUT and indices
        lut, idx = np.asarray(v["lut"]), np.asarray(v["indices"]).reshape(-1).astype(np.int64)
        shape = tuple(int(s) for s in np.asarray(v["shape"]).reshape(-1))
        return [lut[idx].reshape(shape)]
    return [lut_lookup(v["indices"], v["lut"], v.get("vector_axis"))]


def _sparse_op(v, out_types):
    dense = scatter(v["nonzero_data"], v["mask"])
    return [dense if v.get("shape") is None else dense.reshape(out_types[0].shape)]


def _lut_sparse_op(v, out_types):
    mask, lut = np.asarray(v["indices_mask"]), np.asarray(v["lut"])
    dense = lut_lookup(scatter(v["indices_nonzero_data"], mask), lut, v.get("vector_axis"))
    if v.get("vector_axis") is not None and lut.shape[-1] > 1:
        axis = int(v["vector_axis"]) % mask.ndim
        # every set bit stands for the vector_size elements its index expands to
        wide = np.arange(mask.shape[axis] * lut.shape[-1]) // lut.shape[-1]
        mask = np.take(mask, wide, axis=axis)
    return [mask, gather_set(dense, mask)]


def _sparse_shift_op(v, out_types):
    mask = np.asarray(v["data_mask"])
    dense = shift_scale(scatter(v["nonzero_data"], mask), v["scale"], v.get("offset"))
    return [mask, gather_set(dense, mask)]


def _cast_op(v, out_types):
    # fp16 -> fp32 is exact: through float64, not the production kernel's direct cast
    src = np.asarray(v["source_val"])
    return [src.astype(np.float64).astype(out_types[0].dt.storage)]


# where an op's result is not defined, so production and oracle may differ: a NaN quantized
# to an integer (numpy's cast of NaN to int is platform-specific)
UNDEFINED = {"quantize": lambda v: np.isnan(np.asarray(v["input"], np.float64))}

KERNELS = {
    "quantize": _quantize_op,
    "dequantize": _dequantize_op,
    "constexpr_affine_dequantize": _affine_op,
    "constexpr_blockwise_shift_scale": _shift_scale_op,
    "constexpr_lut_to_dense": _lut_op,
    "constexpr_sparse_to_dense": _sparse_op,
    "constexpr_lut_to_sparse": _lut_sparse_op,
    "constexpr_sparse_blockwise_shift_scale": _sparse_shift_op,
    "constexpr_cast": _cast_op,
}


# ---- agreement of two results ------------------------------------------------------------

def differs(expected: np.ndarray, got: np.ndarray, ulps: int = ULPS) -> Optional[str]:
    """Why `got` is not `expected` (None when equal; floats within `ulps` units in the last
    place of their dtype, NaN equal to NaN; integers exactly)."""
    e, g = np.asarray(expected), np.asarray(got)
    if e.shape != g.shape:
        return f"shape {g.shape} instead of {e.shape}"
    if e.dtype != g.dtype:
        return f"dtype {g.dtype} instead of {e.dtype}"
    if e.dtype.kind in "fiub" and np.array_equal(e.reshape(-1).view(np.uint8), g.reshape(-1).view(np.uint8)):
        return None  # bit-identical: the usual case, decided without float arithmetic
    if e.dtype.kind != "f":
        bad = np.flatnonzero(e.reshape(-1) != g.reshape(-1))
        return None if not bad.size else _where(bad, e, g)
    e64, g64 = e.astype(np.float64).reshape(-1), g.astype(np.float64).reshape(-1)
    same = (e64 == g64) | (np.isnan(e64) & np.isnan(g64))
    with np.errstate(invalid="ignore", over="ignore"):
        room = ulps * np.spacing(np.maximum(np.abs(e), np.abs(g)).astype(e.dtype)).astype(np.float64).reshape(-1)
        close = np.abs(e64 - g64) <= room
    bad = np.flatnonzero(~(same | close))
    return None if not bad.size else _where(bad, e, g)


def _where(bad, e, g) -> str:
    i = int(bad[0])
    pos = np.unravel_index(i, e.shape) if e.ndim else ()
    return (f"{bad.size} of {e.size} elements differ, first at {tuple(int(p) for p in pos)}: "
            f"{g.reshape(-1)[i]!r} instead of {e.reshape(-1)[i]!r}")


# ---- the evaluator -----------------------------------------------------------------------

@dataclass(frozen=True)
class Disagreement:
    op_type: str
    op_name: str
    output: str
    detail: str

    def __str__(self) -> str:
        return (f"the production kernel of {self.op_type} {self.op_name!r} disagrees with the oracle "
                f"on {self.output!r}: {self.detail}")


@dataclass
class OracleRun:
    outputs: dict                      # output name -> array
    values: dict                       # every value name of the function's block -> array
    disagreements: list = field(default_factory=list)


class _Runner:
    def __init__(self, pin, compare, cache):
        self.pin = dict(pin or {})
        self.compare = compare
        self.cache = cache if cache is not None else {}
        self.constant: set = set()  # value names computed from consts alone in this evaluation
        self.disagreements = []

    def op(self, op: Op, env: dict) -> list:
        """The op's results; an op computable from consts alone (and no pinned value) is
        computed once per cache, which the caller keeps across the samples of one program."""
        # a pinned value is not the const it replaces: an op reading one is computed afresh (and
        # not cached: the cache is shared with unpinned runs of the same program)
        pin = self.pin
        constant = not op.blocks and all((v.val is not None and v.name not in pin) or v.name in self.constant
                                         for v in op.input_vars())
        if constant and id(op) in self.cache:
            results = self.cache[id(op)]
        else:
            results = self._compute(op, env)
            if constant:
                self.cache[id(op)] = results
        if constant:
            self.constant.update(v.name for v in op.outputs if v.name not in self.pin)
        return results

    def _compute(self, op: Op, env: dict) -> list:
        vals = _gather(op, env)
        types = [v.type for v in op.outputs]
        try:
            if op.op_type in KERNELS:
                results = _conform(op, KERNELS[op.op_type](vals, types))
                if self.compare:
                    self._compare(op, vals, types, results)
                return results
            if op.blocks and op.op_type in BLOCK_KERNELS:
                return _conform(op, BLOCK_KERNELS[op.op_type](op, vals, types, self.block_fn(env)))
            if is_foreign(op.op_type):
                handler = foreign_handler(op.op_type)
                if handler is None:
                    raise EvaluationError(f"{op.op_type} {op.name!r}: no evaluator registered for this foreign op")
                return _conform(op, handler.compute(op, vals, types))
            ctx = Context(tuple(types), op.attrs, self.block_fn(env), op)
            return _conform(op, schema(op.op_type).compute(vals, ctx))
        except (EvaluationError, OpError):
            raise
        except (ValueError, TypeError, IndexError, FloatingPointError, MemoryError) as e:
            raise EvaluationError(f"{op.op_type} {op.name!r}: {type(e).__name__}: {e}") from e

    def _compare(self, op, vals, types, results):
        try:
            prod = _conform(op, schema(op.op_type).compute(vals, Context(tuple(types), op.attrs, None, op)))
        except Exception as e:  # noqa: BLE001 - the kernel under test may fail in any way
            prod = e
        undefined = UNDEFINED[op.op_type](vals) if op.op_type in UNDEFINED else None
        for var, ref, got in zip(op.outputs, results, prod if isinstance(prod, list) else [prod] * len(results)):
            if undefined is not None and not isinstance(got, Exception) and np.shape(got) == np.shape(undefined):
                ref, got = np.where(undefined, 0, ref).astype(ref.dtype), np.where(undefined, 0, got).astype(ref.dtype)
            why = f"raised {type(got).__name__}: {got}" if isinstance(got, Exception) else differs(ref, got)
            if why is not None:
                self.disagreements.append(Disagreement(op.op_type, op.name, var.name, why))

    def block_fn(self, outer: dict):
        return lambda block, args: self.block(block, args, outer)

    def block(self, block: Block, args, outer: dict, keep: Optional[dict] = None) -> tuple:
        env = dict(outer)
        for var, a in zip(block.inputs, args):
            env[var.name] = a
        with np.errstate(all="ignore"):
            for op in block.ops:
                for var, r in zip(op.outputs, self.op(op, env)):
                    env[var.name] = conform_value(var.type, self.pin[var.name], f"pinned {var.name!r}") \
                        if var.name in self.pin else r
        if keep is not None:
            keep.update(env)
        return tuple(env[v.name] for v in block.outputs)


def evaluate(program: Program, inputs: Mapping, function: str = "main", *, pin: Optional[Mapping] = None,
             compare: bool = True, cache: Optional[dict] = None) -> OracleRun:
    """Run `function` with the oracle kernels for the ops of KERNELS (see the module docstring).

    `cache`: a dict kept by the caller across calls on the same program, so ops whose inputs
    are all consts (the constexpr decoders) are computed and compared once."""
    if function not in program.functions:
        raise EvaluationError(f"no function {function!r} (have {sorted(program.functions)})")
    fn = program.functions[function]
    runner = _Runner(pin, compare, cache)
    values: dict = {}
    outs = runner.block(fn.block, (), _bind_inputs(fn, inputs), keep=values)
    return OracleRun({v.name: o for v, o in zip(fn.outputs, outs)}, values, runner.disagreements)


def const_values(program: Program, function: str = "main", *, compare: bool = True,
                 cache: Optional[dict] = None) -> OracleRun:
    """Every value of the function computable from consts alone (weights and their decoded
    forms, nested blocks included), by the oracle kernels; `outputs` is empty."""
    fn = program.functions[function]
    runner = _Runner(None, compare, cache)
    env: dict = {}
    with np.errstate(all="ignore"):
        for op in fn.block.walk():  # parents first: an outer value is there before a block reads it
            if op.blocks or any(v.name not in env for v in op.input_vars()):
                continue
            try:
                results = runner.op(op, env)
            except (EvaluationError, OpError):
                continue  # not a weight computation this can follow; the run-time check will
            for var, r in zip(op.outputs, results):
                env[var.name] = r
    return OracleRun({}, env, runner.disagreements)


__all__ = ["KERNELS", "ULPS", "per_element", "param_index", "Disagreement", "OracleRun", "evaluate", "const_values", "differs",
           "quantize", "dequantize", "shift_scale", "lut_lookup", "scatter", "gather_set", "round_half_even"]
