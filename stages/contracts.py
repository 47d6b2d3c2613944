"""Stage contracts: what each stage promises to preserve, as data next to its code.

    @stage("dead_code_elimination", contract=exact())
    @stage("distributive_quantized_binary_op_scale_normalization", contract=within(1))
    @compression_stage("sparsify_weights", check_sparsify, contract=lossy(sparsify_bound))

Kinds:

- ``exact()``: every output bit-identical (dtype, shape, values; NaN equals NaN).
- ``within(k, values="quantize", rtol=0)``: the named quantized values (the outputs of ops
  of type ``values`` that keep their name across the step) move by at most ``k``
  quantization steps; with those values held at their old contents, every output is
  bit-identical, or (``rtol`` > 0: float arithmetic reassociated) within
  ``rtol * max |output|``.
- ``lossy(bound)``: the stage changes weights, and promises something about each one:
  ``bound(case) -> [problem, ...]`` is checked on the weights themselves (decompressed
  before and after by the independent oracle, ir/oracle.py, never the production
  decoders); with every compressed weight held at its new decoded value, every output is
  bit-identical (the stage changed nothing but weights).
- ``composed(name, ...)``: a stage that runs other stages (canonicalize_quantization):
  the union of its parts' allowances (steps add up over distinct parts, rtol is the
  largest, exact parts allow nothing).

Checks (each returns a list of Violation, empty when the promise holds):

    check_step(before, after, stage, stats, inputs=())   # everything below
    check_weights(before, after, stage, stats)           # lossy bounds (no inputs needed)
    check_outputs(before, after, contract, inputs, stats)  # exact / within / lossy outputs
    check_report(before, after, stage, stats, require_change=False)  # no silent no-op

`inputs` is a list of {input name: array} for function "main" (pipeline.contracts draws
them when none are given). Every evaluation runs the quantization and decoder ops through
ir.oracle and compares the production kernels with it op by op: a kernel bug that would
cancel in a before/after comparison is a violation of its own ("kernel").

No silent no-op (check_report): always, a stage's report must match the program (a weight
reported compressed is in a compressed form, a weight reported skipped is untouched and
has a reason, a weight of the program in a form the stage takes is in the report, pattern
counts are consistent: rewritten <= matched, and a changed program has a rewrite). With
``require_change``, the step must also have changed the program; the default is off, since
a pipeline legitimately holds stages that do not apply to a given program (the
canonicalize_quantization preset runs ten passes; a typical program needs two or three).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

import numpy as np

from ir import oracle
from ir.core import Program


# ---- the contract kinds -------------------------------------------------------------------

@dataclass(frozen=True)
class Contract:
    kind: str                             # "exact" | "within" | "lossy" | "composed"
    steps: int = 0                        # within: steps the named quantized values may move
    values: str = "quantize"              # within: the op type whose outputs are those values
    rtol: float = 0.0                     # within: float outputs may move by rtol * max |output|
    bound: Optional[Callable] = None      # lossy: bound(WeightCase) -> list of problems (str)
    parts: tuple = ()                     # composed: the names of the stages it runs
    why: str = ""

    def describe(self) -> str:
        if self.kind == "within":
            extra = f", floats within rtol {self.rtol:g}" if self.rtol else ""
            return f"within {self.steps} step(s) of the {self.values} values{extra}"
        if self.kind == "lossy":
            return f"lossy ({getattr(self.bound, '__name__', 'bound')})"
        if self.kind == "composed":
            return f"composed of {', '.join(self.parts)}"
        return self.kind


def exact(why: str = "") -> Contract:
    return Contract("exact", why=why)


def within(k: int, values: str = "quantize", rtol: float = 0.0, why: str = "") -> Contract:
    if k < 0 or rtol < 0:
        raise ValueError(f"within({k}, rtol={rtol}): need k >= 0 and rtol >= 0")
    return Contract("within", steps=int(k), values=values, rtol=float(rtol), why=why)


def lossy(bound: Callable, why: str = "") -> Contract:
    return Contract("lossy", bound=bound, why=why)


def composed(*stage_names: str, why: str = "") -> Contract:
    return Contract("composed", parts=tuple(stage_names), why=why)


def effective(contract: Optional[Contract]) -> Optional[Contract]:
    """A composed contract resolved from its parts' contracts (None if a part has none)."""
    if contract is None or contract.kind != "composed":
        return contract
    from stages import get

    parts = [effective(get(n).contract) for n in dict.fromkeys(contract.parts)]
    if any(p is None for p in parts):
        return None
    if any(p.kind == "lossy" for p in parts):
        bounds = tuple(p.bound for p in parts if p.kind == "lossy")
        return lossy(bounds[0] if len(bounds) == 1 else _all_of(bounds), why=contract.why)
    steps = sum(p.steps for p in parts if p.kind == "within")
    rtol = max((p.rtol for p in parts if p.kind == "within"), default=0.0)
    if steps == 0 and rtol == 0.0:
        return exact(contract.why)
    return within(steps, rtol=rtol, why=contract.why)


def _all_of(bounds):
    def every_bound(case):
        return [p for b in bounds for p in b(case)]
    return every_bound


def contract_of(stage) -> Optional[Contract]:
    """The effective contract of a (bound) stage; a combinator's is its steps' composed."""
    steps = getattr(stage, "params", {}).get("steps") if getattr(stage, "contract", None) is None else None
    if steps is not None and hasattr(steps, "stages"):
        return effective(composed(*(s.name for s in steps.stages)))
    return effective(getattr(stage, "contract", None))


@dataclass(frozen=True)
class Violation:
    promise: str   # "exact", "within 1 step(s) ...", "affine", "kernel", "report", ...
    where: str     # "output 'y'", "weight 'w'", "op quantize 'q'", "pattern 'p'"
    detail: str

    def __str__(self) -> str:
        return f"{self.where}: {self.detail} (promise: {self.promise})"


# ---- weights: what a lossy bound sees --------------------------------------------------------

@dataclass
class WeightCase:
    """One weight a lossy step compressed (or decompressed).

    name: the weight's value name in `before` (the stats key, without a function prefix);
    original: its value before (decoded by the oracle); decoded: the value its readers get
    after (decoded by the oracle); after_name: that value's name in `after`; params: the
    stage's parameters; stats: the stage's record of this weight; after / values_after:
    the function after and its const values (to read the emitted form's parameters)."""
    name: str
    function: str
    original: np.ndarray
    decoded: np.ndarray
    after_name: str
    params: Mapping
    stats: Mapping
    after: object
    values_after: dict
    values_before: dict
    before: object


def _producers(fn) -> dict:
    prod = {}
    for op in fn.block.walk():
        for v in op.outputs:
            prod[v.name] = op
    return prod


def _consumers(fn) -> dict:
    cons: dict = {}
    for op in fn.block.walk():
        for v in op.input_vars():
            cons.setdefault(v.name, []).append(op)
    return cons


def find_form(fn, value_name: str, op_types) -> Optional[object]:
    """The nearest op of one of op_types among the constexpr ops producing value_name."""
    prod = _producers(fn)
    todo, seen = [value_name], set()
    while todo:
        op = prod.get(todo.pop(0))
        if op is None or id(op) in seen or not op.op_type.startswith("constexpr_"):
            continue
        seen.add(id(op))
        if op.op_type in op_types:
            return op
        todo.extend(v.name for v in op.input_vars())
    return None


def _renamed(before_fn, after_fn, name: str) -> Optional[str]:
    """The value after's readers read where before's readers read `name` (same name if it
    still exists; else through a reader op that kept its name)."""
    after_prod = _producers(after_fn)
    if name in after_prod:
        return name
    after_ops = {op.name: op for op in after_fn.block.walk()}
    for reader in _consumers(before_fn).get(name, []):
        twin = after_ops.get(reader.name)
        if twin is None:
            continue
        for key, v in reader.inputs.items():
            if not isinstance(v, tuple) and v.name == name and key in twin.inputs:
                return twin.inputs[key].name
    return None


def _split_key(key: str) -> tuple:
    return tuple(key.split("/", 1)) if "/" in key else ("main", key)


def weight_cases(before: Program, after: Program, stage, stats) -> tuple:
    """(WeightCase for every weight the stats report compressed / decompressed, problems)."""
    weights = (stats or {}).get("weights", {}) or {}
    cases, problems, consts = [], [], {}
    params = dict(getattr(stage, "all_params", {}) or {})
    for key, st in weights.items():
        if "skipped" in st:
            continue
        fname, name = _split_key(key)
        if fname not in before.functions or fname not in after.functions:
            problems.append(Violation("report", f"weight {key!r}", f"function {fname!r} is missing"))
            continue
        if fname not in consts:
            consts[fname] = (oracle.const_values(before, fname), oracle.const_values(after, fname))
        (cb, ca) = consts[fname]
        new_name = _renamed(before.functions[fname], after.functions[fname], name)
        if name not in cb.values or new_name is None or new_name not in ca.values:
            problems.append(Violation("report", f"weight {key!r}",
                                      "reported compressed, but its value cannot be found before and after"))
            continue
        cases.append(WeightCase(name, fname, cb.values[name], ca.values[new_name], new_name, params, st,
                                after.functions[fname], ca.values, cb.values, before.functions[fname]))
    for fname, (cb, ca) in consts.items():
        for d in cb.disagreements + ca.disagreements:
            problems.append(Violation("kernel", f"op {d.op_type} {d.op_name!r}", str(d)))
    return cases, problems


# ---- affine ---------------------------------------------------------------------------------

# dtype -> (signed, bits); the code range per mode is the seed's (symmetric drops one code)
_QDTYPES = {"int8": (True, 8), "uint8": (False, 8), "int4": (True, 4), "uint4": (False, 4)}


def code_range(dtype: str, mode: str) -> tuple:
    signed, bits = _QDTYPES[dtype]
    lo, hi = (-2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    if mode == "linear_symmetric":
        lo, hi = (lo + 1, hi) if signed else (lo, hi - 1)
    return lo, hi


def _blocked(values: np.ndarray, param_shape) -> np.ndarray:
    """values [d0, d1, ...] as [p0, d0/p0, p1, d1/p1, ...] (blocks on even axes)."""
    shape = []
    for d, p in zip(values.shape, param_shape):
        shape += [p, d // p]
    return values.reshape(shape)


def _block_reduce(values: np.ndarray, param_shape, fn) -> np.ndarray:
    b = _blocked(values, param_shape)
    return fn(b, axis=tuple(range(1, b.ndim, 2)))


def _full_rank(param, rank: int, axis) -> np.ndarray:
    """A scalar / per-axis / per-block parameter with the data's rank."""
    p = np.asarray(param)
    if p.ndim == rank:
        return p
    shape = [1] * rank
    if p.ndim == 1 and rank:
        shape[int(axis or 0) % rank] = p.size
    return p.reshape(shape)


def _ulp(x: np.ndarray, dtype) -> np.ndarray:
    return np.spacing(np.abs(np.asarray(x, np.float64)).astype(dtype)).astype(np.float64)


def affine_tensor_problems(original, codes, scale, zero_point, dtype: str, mode: str, where: str,
                           valid=None) -> list:
    """The affine promise on one quantized tensor (dense shape; `valid`: the elements it
    quantized, all by default): codes in the mode's range; every value inside the
    representable range within scale/2 of its reconstruction; the scale and zero point the
    mode defines from each block's range, up to one unit in the last place of the scale."""
    problems = []
    w = np.asarray(original)
    wdt = w.dtype
    rank = w.ndim
    s = np.asarray(scale)
    z = np.zeros(s.shape, np.int64) if zero_point is None else np.asarray(zero_point).astype(np.int64)
    lo, hi = code_range(dtype, mode)
    valid = np.ones(w.shape, bool) if valid is None else np.asarray(valid, bool)
    c = np.asarray(codes).astype(np.int64)
    bad = valid & ((c < lo) | (c > hi))
    if bad.any():
        i = np.flatnonzero(bad)[0]
        problems.append(f"{where}: {int(bad.sum())} code(s) outside [{lo}, {hi}] ({dtype} {mode}), "
                        f"e.g. {int(c.reshape(-1)[i])}")
    S = oracle._per_element(s, w.shape, None)
    Z = oracle._per_element(z, w.shape, None)
    recon = (c - Z) * S
    w64 = w.astype(np.float64)
    inside = valid & (w64 >= (lo - Z) * S) & (w64 <= (hi - Z) * S)
    room = S / 2 * (1 + 2.0 ** -20) + _ulp(recon, s.dtype) + _ulp(w64, wdt)
    big = float(np.finfo(s.dtype).max) if s.dtype.kind == "f" else math.inf
    room = np.where(np.abs(w64) > big - S, S, room)  # the documented edge of fp16's range
    err = np.abs(w64 - recon)
    over = inside & (err > room)
    if over.any():
        i = np.flatnonzero(over)[0]
        problems.append(f"{where}: {int(over.sum())} value(s) farther than scale/2 from their reconstruction, "
                        f"e.g. {w64.reshape(-1)[i]!r} -> {recon.reshape(-1)[i]!r} (scale {S.reshape(-1)[i]!r})")
    problems += _scale_problems(np.where(valid, w64, 0.0), s, z, lo, hi, mode, dtype, where)
    return problems


def _scale_problems(w64, s, z, lo, hi, mode, dtype, where) -> list:
    ps = s.shape
    if any(d % p for d, p in zip(w64.shape, ps)) or s.ndim != w64.ndim:
        return [f"{where}: scale of shape {ps} does not divide the tensor's shape {w64.shape} into blocks"]
    a = np.minimum(_block_reduce(w64, ps, np.min), 0.0)
    b = np.maximum(_block_reduce(w64, ps, np.max), 0.0)
    if mode == "linear_symmetric":
        r = np.maximum(-a, b)
        a, b = -r, r
        want_z = np.full(ps, 0 if lo < 0 else (hi - lo) // 2)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            want_z = np.clip((lo * b - hi * a) / np.where(b > a, b - a, 1.0), lo, hi)
    exact_s = (b - a) / (hi - lo)
    stored = s.astype(np.float64)
    tiny = float(np.nextafter(np.zeros((), s.dtype), np.ones((), s.dtype)))
    ok = np.abs(stored - exact_s) <= _ulp(stored, s.dtype) * 1.0001
    ok |= (exact_s == 0) & (stored == 1.0)
    ok |= (exact_s < tiny) & (stored == tiny)
    problems = []
    if not ok.all():
        i = np.flatnonzero(~ok)[0]
        problems.append(f"{where}: {int((~ok).sum())} block scale(s) are not (max - min) / {hi - lo} of the "
                        f"block ({mode}, {dtype}), e.g. {stored.reshape(-1)[i]!r} instead of "
                        f"{exact_s.reshape(-1)[i]!r}")
    zok = np.abs(z - want_z) <= 0.5 + 1e-9
    if mode == "linear_symmetric":
        zok = z == want_z
    zok |= exact_s == 0
    if not np.all(zok):
        i = np.flatnonzero(~np.broadcast_to(zok, ps))[0]
        problems.append(f"{where}: zero point {int(np.broadcast_to(z, ps).reshape(-1)[i])} is not the "
                        f"{mode} one ({float(np.broadcast_to(want_z, ps).reshape(-1)[i]):.3f})")
    return problems


_AFFINE_OPS = ("constexpr_blockwise_shift_scale", "constexpr_affine_dequantize",
               "constexpr_sparse_blockwise_shift_scale")
_LUT_OPS = ("constexpr_lut_to_dense", "constexpr_lut_to_sparse")


def _input(case, op, name):
    v = op.inputs.get(name) if hasattr(op.inputs, "get") else None
    return None if v is None else case.values_after.get(v.name)


def affine_bound(case: WeightCase) -> list:
    """affine_quantize_weights' promise about one weight (see affine_tensor_problems)."""
    mode, dtype = case.params.get("mode", "linear_symmetric"), case.stats.get("dtype")
    dtype = dtype if dtype in _QDTYPES else str(case.params.get("dtype", "int8")).lower()
    where = f"weight {case.name!r}"
    kind = case.stats.get("kind", "dense")
    if kind == "lut":
        return _affine_lut(case, mode, dtype, where)
    op = find_form(case.after, case.after_name, _AFFINE_OPS)
    if op is None:
        return [f"{where}: reported quantized, but no affine op produces it"]
    if op.op_type == "constexpr_sparse_blockwise_shift_scale":
        mask = _input(case, op, "data_mask")
        codes = oracle.scatter(_input(case, op, "nonzero_data"), mask)
        scale, offset = _input(case, op, "scale"), _input(case, op, "offset")
        return affine_tensor_problems(case.original, codes, scale, offset, dtype, mode, where, valid=mask != 0)
    if op.op_type == "constexpr_affine_dequantize":
        codes = _input(case, op, "quantized_data")
        axis = _input(case, op, "axis")
        rank = np.ndim(codes)
        scale = _full_rank(_input(case, op, "scale"), rank, axis)
        zp = _full_rank(_input(case, op, "zero_point"), rank, axis)
        return affine_tensor_problems(case.original, codes, scale, zp, dtype, mode, where)
    return affine_tensor_problems(case.original, _input(case, op, "data"), _input(case, op, "scale"),
                                  _input(case, op, "offset"), dtype, mode, where)


def _affine_lut(case, mode, dtype, where) -> list:
    """A palettized weight whose LUT was quantized: the promise holds on the LUT."""
    lut_after = find_form(case.after, case.after_name, _LUT_OPS)
    lut_before = find_form(case.before, case.name, _LUT_OPS)
    if lut_after is None or lut_before is None:
        return [f"{where}: reported a quantized LUT, but no LUT op produces it"]
    q = find_form(case.after, lut_after.inputs["lut"].name, ("constexpr_blockwise_shift_scale",))
    original = case.values_before.get(lut_before.inputs["lut"].name)
    if q is None or original is None:
        return [f"{where}: reported a quantized LUT, but its LUT is not quantized"]
    return affine_tensor_problems(original, _input(case, q, "data"), _input(case, q, "scale"),
                                  _input(case, q, "offset"), dtype, mode, f"{where} (LUT)")


# ---- palettize ------------------------------------------------------------------------------

def _group_values(values, valid, lut_blocks) -> list:
    """Per LUT block: the valid values it serves (flat, float64)."""
    b = _blocked(np.asarray(values, np.float64), lut_blocks)
    vb = _blocked(np.asarray(valid, bool), lut_blocks)
    rank = len(lut_blocks)
    order = tuple(range(0, 2 * rank, 2)) + tuple(range(1, 2 * rank, 2))
    flat = np.transpose(b, order).reshape(int(np.prod(lut_blocks)), -1)
    vflat = np.transpose(vb, order).reshape(flat.shape)
    return [row[m] for row, m in zip(flat, vflat)]


def palettize_bound(case: WeightCase) -> list:
    """palettize_weights' promise about one weight: every value (per-channel-scaled where
    enable_per_channel_scale) reads its nearest LUT entry; kmeans / uniform / unique LUTs are
    sorted and within [min, max] of the values they serve; uniform LUTs run evenly from min
    to max; unique LUTs reproduce every value; k-means entries are the means of the values
    that read them (Lloyd's optimality condition), and the reported error is the actual one."""
    where = f"weight {case.name!r}"
    op = find_form(case.after, case.after_name, _LUT_OPS)
    if op is None:
        return [f"{where}: reported palettized, but no LUT op produces it"]
    mode = case.params.get("mode", "kmeans")
    lut = np.asarray(_input(case, op, "lut"))
    w = np.asarray(case.original)
    if op.op_type == "constexpr_lut_to_sparse":
        mask = _input(case, op, "indices_mask") != 0
        idx = oracle.scatter(_input(case, op, "indices_nonzero_data"), mask)
    else:
        mask, idx = np.ones(w.shape, bool), np.asarray(_input(case, op, "indices"))
    if lut.ndim == 1:  # iOS16 flat form: one LUT for the whole tensor
        lut, idx = lut.reshape([1] * w.ndim + [-1, 1]), idx.reshape(w.shape)
    if lut.shape[-1] != 1:
        return _vector_problems(case, lut, where)
    target = w.astype(np.float64)
    pcs_op = None
    consumers = _consumers(case.after).get(op.outputs[0].name, [])
    if len(consumers) == 1 and consumers[0].op_type == "constexpr_blockwise_shift_scale":
        pcs_op = consumers[0]
        pcs = oracle._per_element(_input(case, pcs_op, "scale"), w.shape, None)
        target = (w.astype(np.float64) / pcs).astype(w.dtype).astype(np.float64)
    blocks = lut.shape[:-2]
    problems = []
    entries = lut[..., 0].astype(np.float64)  # [blocks..., k]
    per_elem = lambda j: oracle._per_element(entries[..., j], w.shape, None)  # noqa: E731
    got = oracle.lut_lookup(idx, lut).astype(np.float64)
    dist = np.abs(target - got)
    nearest = np.full(w.shape, np.inf)
    for j in range(entries.shape[-1]):
        nearest = np.minimum(nearest, np.abs(target - per_elem(j)))
    slack = _ulp(target, w.dtype)
    far = mask & (dist > nearest + slack)
    if far.any():
        i = np.flatnonzero(far)[0]
        problems.append(f"{where}: {int(far.sum())} value(s) do not read their nearest LUT entry, e.g. "
                        f"{target.reshape(-1)[i]!r} reads {got.reshape(-1)[i]!r}, nearest is "
                        f"{nearest.reshape(-1)[i]:.6g} away")
    if mode == "custom":
        return problems
    groups = _group_values(target, mask, blocks)
    luts = entries.reshape(-1, entries.shape[-1])
    for g, (vals, row) in enumerate(zip(groups, luts)):
        if vals.size == 0:
            continue
        problems += _lut_row_problems(vals, row, mode, w.dtype, f"{where} LUT {g}")
        if len(problems) > 8:
            break
    if mode == "kmeans" and pcs_op is None:
        problems += _reported_error(case, w, where)
    return problems


def _lut_row_problems(vals, row, mode, wdt, where) -> list:
    problems = []
    lo, hi = vals.min(), vals.max()
    if np.any(np.diff(row) < 0):
        problems.append(f"{where}: entries not sorted ({mode})")
    tol = _ulp(np.array([lo, hi]), wdt).max()
    if row.min() < lo - tol or row.max() > hi + tol:
        problems.append(f"{where}: entries [{row.min():.6g}, {row.max():.6g}] leave the values' range "
                        f"[{lo:.6g}, {hi:.6g}]")
    if mode == "uniform":
        k = row.size
        want = (lo + (hi - lo) * np.arange(k) / (k - 1)).astype(wdt).astype(np.float64)
        off = np.abs(row - want) > _ulp(want, wdt) * 1.0001
        if off.any():
            j = int(np.flatnonzero(off)[0])
            problems.append(f"{where}: uniform entry {j} is {row[j]!r}, not {want[j]!r} (min + (max - min) * "
                            f"{j} / {k - 1})")
    elif mode == "unique":
        missing = np.setdiff1d(vals, row)
        if missing.size:
            problems.append(f"{where}: {missing.size} distinct value(s) missing from a unique LUT")
    elif mode == "kmeans":
        problems += _lloyd_problems(vals, row, wdt, where)
    return problems


def _lloyd_problems(vals, row, wdt, where) -> list:
    """Each entry that values read is the mean of those values (rounded to the weight's dtype)."""
    order = np.argsort(row, kind="stable")
    srt = row[order]
    mids = (srt[:-1] + srt[1:]) / 2
    pos = np.searchsorted(mids, vals, side="right")
    sums = np.bincount(pos, weights=vals, minlength=row.size)
    counts = np.bincount(pos, minlength=row.size)
    used = counts > 0
    means = np.where(used, sums / np.maximum(counts, 1), srt)
    spread = max(float(vals.max() - vals.min()), 1e-300)
    room = _ulp(means, wdt) * 2 + spread * 1e-6
    off = used & (np.abs(srt - means) > room)
    if off.any():
        j = int(np.flatnonzero(off)[0])
        return [f"{where}: k-means entry {srt[j]!r} is not the mean {means[j]!r} of the {int(counts[j])} "
                f"value(s) that read it"]
    return []


def _reported_error(case, w, where) -> list:
    """The stage's reported error is what the decoded weight has (so the optimum it reports holds)."""
    mse = case.stats.get("mse")
    if mse is None:
        return []
    err = np.asarray(case.decoded, np.float64) - w.astype(np.float64)
    actual = float(np.mean(err * err)) if err.size else 0.0
    if actual > float(mse) * (1 + 1e-4) + 1e-30:
        return [f"{where}: decoded error (mse {actual:.6g}) is worse than the reported {float(mse):.6g}"]
    return []


def _vector_problems(case, lut, where) -> list:
    """Vector LUTs: every decoded element is an entry component of its LUT block (no nearest
    check: vector k-means is Lloyd with k-means++ seeding, not an optimum)."""
    flat = np.asarray(lut, np.float64).reshape(-1)
    got = np.asarray(case.decoded, np.float64).reshape(-1)
    stray = ~np.isin(got, flat)
    return [f"{where}: {int(stray.sum())} decoded value(s) are no LUT entry"] if stray.any() else []


# ---- sparsify -------------------------------------------------------------------------------

def sparsify_bound(case: WeightCase) -> list:
    """sparsify_weights' promise about one weight: exactly the promised zeros (|w| <= threshold;
    floor(size * target_percentile) smallest magnitudes; n of every m), every other value
    bit-identical."""
    where = f"weight {case.name!r}"
    w = np.asarray(case.original)
    got = np.asarray(case.decoded)
    if got.shape != w.shape or got.dtype != w.dtype:
        return [f"{where}: decoded {got.dtype}{list(got.shape)} instead of {w.dtype}{list(w.shape)}"]
    zero = got == 0
    kept_changed = ~zero & (got.view(np.uint8).reshape(w.shape + (-1,)) != w.view(np.uint8).reshape(w.shape + (-1,))).any(-1)
    problems = []
    if kept_changed.any():
        problems.append(f"{where}: {int(kept_changed.sum())} kept value(s) changed")
    if np.any((w == 0) & ~zero):
        problems.append(f"{where}: a zero of the weight is not zero after")
    mag = np.abs(w.astype(np.float64))
    mode = str(case.stats.get("mode", case.params.get("mode")))
    p = case.params
    if p.get("config") is not None:
        return problems  # per-weight parameters from a config: the generic promise only
    if mode.startswith("n_m"):
        return problems + _nm_problems(w, zero, p.get("n_m_ratio"), where)
    if mode == "percentile_based":
        frac = p.get("target_sparsity") if p.get("target_sparsity") is not None else p.get("target_percentile")
        count = int(math.floor(w.size * float(frac)))
        want = max(count, int(np.count_nonzero(w == 0)))
        if int(zero.sum()) != want:
            problems.append(f"{where}: {int(zero.sum())} zeros, promised floor({w.size} * {frac}) = {count} "
                            f"smallest magnitudes ({want} with the weight's own zeros)")
        if zero.any() and (~zero).any() and mag[zero].max() > mag[~zero].min():
            problems.append(f"{where}: a zeroed magnitude {mag[zero].max():.6g} exceeds a kept one "
                            f"{mag[~zero].min():.6g}")
        return problems
    # |w| <= threshold compared in the weight's dtype (the threshold rounded to it), as the
    # seed's numpy comparison of a weight array with a Python float does
    t = float(p.get("threshold", 1e-3))
    limit = np.asarray(t).astype(w.dtype)
    want = (np.abs(w) <= limit) | (w == 0)
    wrong = zero != want
    if wrong.any():
        i = np.flatnonzero(wrong)[0]
        problems.append(f"{where}: {int(wrong.sum())} value(s) zeroed or kept against |w| <= {t} "
                        f"({limit!r} in {w.dtype}), e.g. {w.reshape(-1)[i]!r} -> {got.reshape(-1)[i]!r}")
    return problems


def _nm_problems(w, zero, nm, where) -> list:
    if nm is None:
        return []
    n, m = int(nm[0]), int(nm[1])
    problems = []
    # along some axis every full run of m holds at least n zeros (the input axis is the
    # consumer's; any axis where it holds is accepted)
    for axis in range(w.ndim):
        length = w.shape[axis]
        full = (length // m) * m
        if full == 0:
            continue
        z = np.moveaxis(zero, axis, -1)[..., :full].reshape(-1, m)
        if np.all(z.sum(axis=1) >= n):
            return problems
    return problems + [f"{where}: no axis has {n} zeros in every run of {m}"]


# ---- decompress -----------------------------------------------------------------------------

def decompress_bound(case: WeightCase) -> list:
    """decompress_weights' promise: each new const is bit for bit the oracle's decoding."""
    why = oracle.differs(case.original, case.decoded, ulps=0)
    return [] if why is None else [f"weight {case.name!r}: decompressed value differs from the oracle: {why}"]


# ---- the checks -----------------------------------------------------------------------------

def check_weights(before: Program, after: Program, stage, stats, contract=None) -> list:
    """The lossy bound on every weight the stats report compressed, decoded by the oracle."""
    contract = contract or contract_of(stage)
    if contract is None or contract.kind != "lossy":
        return []
    cases, problems = weight_cases(before, after, stage, stats)
    for case in cases:
        where = f"weight {case.name!r}"
        for p in contract.bound(case):
            p = p[len(where) + 2:] if p.startswith(where + ": ") else p
            problems.append(Violation(getattr(contract.bound, "__name__", "lossy"), where, p))
    return problems


def _outputs_problems(ref: dict, got: dict, rtol: float, promise: str) -> list:
    problems = []
    for (name, r), g in zip(ref.items(), got.values()):
        r, g = np.asarray(r), np.asarray(g)
        if r.dtype != g.dtype or r.shape != g.shape:
            problems.append(Violation(promise, f"output {name!r}", f"{g.dtype}{list(g.shape)} instead of "
                                                                  f"{r.dtype}{list(r.shape)}"))
            continue
        if rtol and r.dtype.kind == "f":
            r64, g64 = r.astype(np.float64), g.astype(np.float64)
            fin = np.isfinite(r64)
            scale = float(np.max(np.abs(r64[fin]))) if fin.any() else 0.0
            same = (r64 == g64) | (np.isnan(r64) & np.isnan(g64))
            with np.errstate(invalid="ignore"):
                bad = ~same & ~(np.abs(r64 - g64) <= rtol * scale)
            why = None if not bad.any() else (f"{int(bad.sum())} element(s) beyond rtol {rtol:g} of "
                                              f"max |output| {scale:.6g}")
        else:
            why = oracle.differs(r, g, ulps=0)
        if why is not None:
            problems.append(Violation(promise, f"output {name!r}", why))
    return problems


def _kernel_problems(*runs) -> list:
    seen, out = set(), []
    for run in runs:
        for d in run.disagreements:
            key = (d.op_type, d.op_name, d.output)
            if key not in seen:
                seen.add(key)
                out.append(Violation("kernel", f"op {d.op_type} {d.op_name!r}", str(d)))
    return out


def _quantized_names(fn, op_type: str) -> list:
    return [op.outputs[0].name for op in fn.block.walk() if op.op_type == op_type]


def check_outputs(before: Program, after: Program, contract: Contract, inputs, stats=None,
                  function: str = "main", stage=None) -> list:
    """The contract on the outputs of `function` over `inputs` (a list of input dicts); every
    evaluation by ir.oracle, kernel disagreements included. Inputs the reference program
    cannot run on are skipped."""
    from ir.interpret import EvaluationError

    contract = effective(contract)
    if contract is None or function not in before.functions or function not in after.functions:
        return []
    cache_b, cache_a = {}, {}
    pins_lossy = _lossy_pins(before, after, stage, stats, function) if contract.kind == "lossy" else {}
    problems: list = []
    for inputs_one in inputs:
        try:
            rb = oracle.evaluate(before, inputs_one, function, cache=cache_b,
                                 pin=pins_lossy if contract.kind == "lossy" else None)
        except EvaluationError:
            continue
        try:
            ra = oracle.evaluate(after, inputs_one, function, cache=cache_a)
        except EvaluationError as e:
            problems.append(Violation(contract.describe(), "the new program", f"fails where the old one runs: {e}"))
            break
        found = _kernel_problems(rb, ra)
        if contract.kind == "within":
            found += _within(after, contract, rb, ra, inputs_one, function, cache_a)
        else:
            found += _outputs_problems(rb.outputs, ra.outputs, 0.0, contract.describe())
        if found:
            return problems + found
    return problems


def _within(after, contract, rb, ra, inputs_one, function, cache_a) -> list:
    promise = contract.describe()
    pins, problems = {}, []
    for name in _quantized_names(after.functions[function], contract.values):
        if name not in rb.values or name not in ra.values:
            continue
        b, a = np.asarray(rb.values[name]), np.asarray(ra.values[name])
        if b.shape != a.shape:
            continue
        moved = np.abs(a.astype(np.int64) - b.astype(np.int64)) if a.dtype.kind in "iu" else None
        if moved is None or not moved.any():
            continue
        if moved.max() > contract.steps:
            problems.append(Violation(promise, f"quantized value {name!r}",
                                      f"moved by {int(moved.max())} step(s), more than {contract.steps}"))
        pins[name] = b
    if problems:
        return problems
    if pins:
        ra = oracle.evaluate(after, inputs_one, function, pin=pins, cache=cache_a)
    return _outputs_problems(rb.outputs, ra.outputs, contract.rtol, promise)


def _lossy_pins(before, after, stage, stats, function) -> dict:
    """{weight name in before: its decoded value after}, for the weights the step compressed."""
    cases, _ = weight_cases(before, after, stage, stats)
    return {c.name: np.asarray(c.decoded).astype(np.asarray(c.original).dtype, copy=False)
            for c in cases if c.function == function and np.shape(c.decoded) == np.shape(c.original)}


def check_report(before: Program, after: Program, stage, stats, require_change=False) -> list:
    """No silent no-op: the stage's report matches the program (see the module docstring)."""
    stats = stats or {}
    name = getattr(stage, "name", "stage")
    problems = []
    changed = after is not before and after.digest != before.digest
    patterns = stats.get("patterns")
    if patterns:
        for pname, c in patterns.items():
            if int(c.get("rewritten", 0)) > int(c.get("matched", 0)):
                problems.append(Violation("report", f"pattern {pname!r}",
                                          f"rewritten {c.get('rewritten')} > matched {c.get('matched')}"))
        total = sum(int(c.get("rewritten", 0)) for c in patterns.values())
        if changed and total == 0:
            problems.append(Violation("report", f"stage {name!r}", "changed the program but reports no rewrite"))
        if not changed and total > 0:
            problems.append(Violation("report", f"stage {name!r}",
                                      f"reports {total} rewrite(s) but returned the program unchanged"))
    weights = stats.get("weights")
    if weights is not None and name != "decompress_weights":
        problems += _weight_report(before, after, name, weights, changed)
    if require_change and not changed:
        detail = "required to change the program, but returned it unchanged"
        if patterns:
            detail += "; patterns: " + ", ".join(f"{k} matched {v.get('matched')} rewritten {v.get('rewritten')}"
                                                 for k, v in patterns.items())
        if weights:
            reasons = sorted({str(v.get('skipped')) for v in weights.values() if 'skipped' in v})
            detail += f"; {len(weights)} weight(s) skipped: " + "; ".join(reasons[:3])
        problems.append(Violation("require_change", f"stage {name!r}", detail))
    return problems


def _weight_report(before, after, name, weights, changed) -> list:
    problems = []
    compressed = [k for k, v in weights.items() if "skipped" not in v]
    if compressed and not changed:
        problems.append(Violation("report", f"stage {name!r}",
                                  f"reports {len(compressed)} weight(s) compressed but returned the program unchanged"))
    if changed and not compressed and not before.functions.keys() - after.functions.keys() \
            and name in ("affine_quantize_weights", "palettize_weights", "sparsify_weights"):
        problems.append(Violation("report", f"stage {name!r}", "changed the program but reports no weight compressed"))
    for key, v in weights.items():
        if "skipped" in v and not str(v["skipped"]).strip():
            problems.append(Violation("report", f"weight {key!r}", "skipped without a reason"))
    consts_b = {}
    for key, v in weights.items():
        fname, wname = _split_key(key)
        if fname not in before.functions or fname not in after.functions:
            continue
        if fname not in consts_b:
            consts_b[fname] = (_producers(before.functions[fname]), _producers(after.functions[fname]))
        pb, pa = consts_b[fname]
        if "skipped" in v:
            if wname in pb and wname in pa and pb[wname] is not pa[wname] and _value_of(pb[wname]) is not None \
                    and not _same_value(pb[wname], pa[wname]):
                problems.append(Violation("report", f"weight {key!r}", "reported skipped, but it changed"))
        elif wname in pb and wname in pa and pa[wname].op_type == "const" and pb[wname].op_type == "const" \
                and _same_value(pb[wname], pa[wname]):
            problems.append(Violation("report", f"weight {key!r}", "reported compressed, but it is still the same const"))
    return problems


def _value_of(op):
    return op.outputs[0].val if op.op_type == "const" else None


def _same_value(a, b) -> bool:
    va, vb = _value_of(a), _value_of(b)
    if va is None or vb is None:
        return a.op_type == b.op_type
    return va.dtype == vb.dtype and va.shape == vb.shape and np.array_equal(va, vb, equal_nan=va.dtype.kind == "f")


def check_step(before: Program, after: Program, stage, stats=None, inputs=(), require_change=False,
               contract=None) -> list:
    """Every check of one step by the stage's own contract: the report (no silent no-op), the
    weights (lossy bounds), and the outputs over `inputs` (none given: weights and report
    only). Returns the violations, empty when the step keeps its promise."""
    contract = effective(contract) if contract is not None else contract_of(stage)
    problems = check_report(before, after, stage, stats, require_change)
    if contract is None or after is before:
        return problems
    problems += check_weights(before, after, stage, stats, contract)
    inputs = list(inputs or ())
    if inputs:
        problems += check_outputs(before, after, contract, inputs, stats, stage=stage)
    return problems


__all__ = ["Contract", "Violation", "WeightCase", "exact", "within", "lossy", "composed", "effective",
           "contract_of", "check_step", "check_weights", "check_outputs", "check_report", "affine_bound",
           "palettize_bound", "sparsify_bound", "decompress_bound", "affine_tensor_problems", "code_range"]
