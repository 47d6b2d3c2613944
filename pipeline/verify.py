"""Property-based equivalence of two programs, on generated or real inputs.

    report = verify(before, after, samples=32)            # allclose(rtol, atol) per sample
    report = verify(before, after, snr_db=30)             # or: SNR of every sample >= 30 dB
    report = verify(before, after, inputs=np.load("x.npz"), evaluator="onnxruntime")
    report.passed, report.outputs["y"].max_abs_error, .snr_db, .cosine, .dtype_match, .shape_match
    report.worst_input, report.counterexample            # the failing input, shrunk by hypothesis

Inputs come from hypothesis strategies derived from the input types and the model's
domain (pipeline.strategies: token ids below their embedding table's size, 0/1 masks,
symbolic dims from `dims={"sequence": 16}` or small drawn sizes), or from `inputs=`: one
sample, a list of samples, or arrays with the samples along a leading axis, cut into the
batches the model accepts (pipeline.samples). When the reference runs on no generated
input, sizes for the free symbolic dims are probed from the graph (a PyTorch export often
bakes the example's sequence length into its reshapes) and the report names them
(`probed_dims`). Outputs are matched by position (stages may rename them) and reported
under `before`'s output names.

`evaluator`: "interpreter" (ir.interpret, exact semantics) or "onnxruntime" (both programs
exported to ONNX in memory and run in an InferenceSession: fast on big models; a program
that cannot be exported is refused with a VerifyError).

A sample fails, naming the output, when an output's shape or dtype differs (int8 vs uint8
with equal values fails), when it holds NaN / inf where the reference does not, or when
it is off by more than the tolerance (rtol / atol, or snr_db). A failure is a report with
passed=False and the reason, never an exception. Error figures (max abs error, SNR,
cosine) are accumulated over every sample, by stages.compression.numeric.metrics.

Options are checked first (VerifyError, a ValueError): samples a positive integer,
rtol / atol finite and >= 0, snr_db a number, evaluator a known name, dims positive
sizes of symbolic dims; generated inputs may hold at most MAX_SAMPLE_ELEMENTS elements
per sample (a model declaring a 4 TiB input is refused, not allocated).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Mapping, Optional

import numpy as np
from pyrsistent import PMap, pmap

from ir import Program
from ir.interpret import EvaluationError, evaluate
from pipeline.errors import VerifyError
from stages.compression.numeric import metrics

MAX_SAMPLE_ELEMENTS = 1 << 27  # per generated sample, all inputs together (1 GiB of float64)
DEFAULT_SYMBOL_SIZE = 4  # the largest size pipeline.strategies.SYMBOL_SIZES draws


@dataclass(frozen=True)
class OutputError:
    max_abs_error: float
    snr_db: float  # over every sample: 10 log10(signal power / noise power); inf when exact
    cosine: float = 1.0  # over every sample: <ref, got> / (|ref| |got|)
    dtype_match: bool = True
    shape_match: bool = True


@dataclass(frozen=True)
class VerificationReport:
    passed: bool
    samples: int
    outputs: PMap  # output name -> OutputError
    worst_input: Optional[dict] = field(default=None, repr=False)  # largest error seen
    counterexample: Optional[dict] = field(default=None, repr=False)  # shrunk failing input
    reason: str = ""
    probed_dims: PMap = field(default_factory=pmap)  # symbolic dim sizes verify had to find (probe_dims)

    @property
    def max_abs_error(self) -> float:
        return max((o.max_abs_error for o in self.outputs.values()), default=0.0)

    def summary(self) -> str:
        compared = self.samples > 0 or self.passed  # a failure before any sample has no figures
        figures = "; ".join(_describe(k, o) for k, o in sorted(self.outputs.items())) if compared else ""
        verdict = "passed" if self.passed else f"FAILED ({self.reason})"
        probed = ", ".join(f"{k}={v}" for k, v in sorted(self.probed_dims.items()))
        where = f" (symbolic dims the model runs with, found by probing: {probed})" if probed else ""
        return f"{verdict} over {self.samples} samples{where}; {figures or 'no outputs compared'}"


def _describe(name: str, o: OutputError) -> str:
    text = f"{name}: max |err| {o.max_abs_error:.3g}, SNR {o.snr_db:.1f} dB, cosine {o.cosine:.6f}"
    if not o.shape_match:
        text += ", SHAPE differs"
    if not o.dtype_match:
        text += ", DTYPE differs"
    return text


_GIVE_UP_AFTER = 8  # generated inputs the reference program fails on, none passing, before verify stops


class _Unevaluable(Exception):
    """The reference program failed on every input tried so far (and on _GIVE_UP_AFTER of them)."""


class _Mismatch(Exception):
    def __init__(self, inputs, why):
        super().__init__(why)
        self.inputs, self.why = inputs, why


class RunFailed(Exception):
    """A program failed on an input (interpreter or onnxruntime); the message says why."""


@dataclass(frozen=True)
class _Observed:
    """One output on one sample: its error sums, and whether dtype and shape matched."""
    sums: metrics.Sums
    dtype_match: bool = True
    shape_match: bool = True


_SHAPE_MISMATCH = metrics.Sums(1, 0.0, math.inf, math.inf, math.nan, 0.0)


@dataclass
class _Tally:
    """Running error figures across samples (mutable, local to one verify call)."""
    names: tuple
    samples: int = 0
    seen: dict = field(default_factory=dict)  # name -> _Observed, accumulated
    worst: tuple = (-1.0, None)

    def add(self, inputs, observed: dict) -> None:
        self.samples += 1
        for name, o in observed.items():
            old = self.seen.get(name)
            self.seen[name] = o if old is None else _Observed(
                old.sums + o.sums, old.dtype_match and o.dtype_match, old.shape_match and o.shape_match)
        top = max((o.sums.worst for o in observed.values()), default=0.0)
        top = math.inf if math.isnan(top) else top
        if top > self.worst[0] or self.worst[1] is None:
            self.worst = (top, dict(inputs))

    def report(self, passed: bool, counterexample=None, reason="") -> VerificationReport:
        outs = {}
        for n in self.names:
            o = self.seen.get(n, _Observed(metrics.Sums()))
            outs[n] = OutputError(o.sums.max_abs_error, o.sums.snr_db, o.sums.cosine, o.dtype_match, o.shape_match)
        return VerificationReport(passed, self.samples, pmap(outs), self.worst[1], counterexample, reason)


def snr(signal_power: float, noise_power: float) -> float:
    """SNR in dB from the two powers (stages.compression.numeric.metrics decides the edge cases)."""
    return metrics.snr_db_from_sums(signal_power, noise_power)


# ---- evaluators ---------------------------------------------------------------------

class _Interpreter:
    """The reference interpreter: exact semantics."""

    def __init__(self, program: Program, function: str, label: str):
        self.program, self.function = program, function

    def __call__(self, inputs: dict) -> list:
        try:
            return list(evaluate(self.program, inputs, self.function).values())
        except EvaluationError as e:
            raise RunFailed(str(e)) from None
        except Exception as e:  # noqa: BLE001 - a kernel or shape check that fails on this input:
            raise RunFailed(f"{type(e).__name__}: {e}") from None  # a failure on it, not a crash


class _OnnxRuntime:
    """The program exported to ONNX in memory, run by onnxruntime (outputs in order)."""

    def __init__(self, program: Program, function: str, label: str):
        try:
            import onnxruntime as ort
        except ImportError:
            raise VerifyError("evaluator='onnxruntime': onnxruntime is not installed") from None
        from ir.formats.onnx.exporter import to_onnx_model

        try:
            model = to_onnx_model(program, None, function).SerializeToString()
        except (ValueError, NotImplementedError, KeyError) as e:
            raise VerifyError(f"evaluator='onnxruntime': the {label} program cannot be exported to ONNX "
                              f"({' '.join(str(e).split())}); use evaluator='interpreter'") from None
        options = ort.SessionOptions()
        options.log_severity_level = 4  # failures are reported in the report, not on stderr
        try:
            self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime's own exception types are not exported
            raise VerifyError(f"evaluator='onnxruntime': onnxruntime cannot load the {label} program "
                              f"({' '.join(str(e).split())[:300]}); use evaluator='interpreter'") from None
        wanted = [i.name for i in self.session.get_inputs()]
        ours = [v.name for v in program.functions[function].inputs]
        # the export keeps input names and order; should it ever rename one, order decides
        self.feed_names = dict(zip(ours, wanted)) if set(wanted) != set(ours) else {n: n for n in wanted}

    def __call__(self, inputs: dict) -> list:
        try:
            return list(self.session.run(None, {self.feed_names[k]: v for k, v in inputs.items()
                                                if k in self.feed_names}))
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for bad feeds
            raise RunFailed(" ".join(str(e).split())[:300]) from None


EVALUATORS = {"interpreter": _Interpreter, "onnxruntime": _OnnxRuntime}


# ---- comparing one sample ---------------------------------------------------------------

def _nonfinite_problem(r: np.ndarray, g: np.ndarray) -> Optional[str]:
    """Why g's NaN / inf values are wrong (where r holds the same non-finite value is fine)."""
    if g.dtype.kind not in "fc":
        return None
    bad = ~np.isfinite(g) & ~((g == r) | (np.isnan(g) & np.isnan(r)))
    if not bad.any():
        return None
    nan = int(np.isnan(g[bad]).sum())
    kinds = " and ".join(t for t in (f"{nan} NaN" if nan else "", f"{int(bad.sum()) - nan} inf"
                                     if bad.sum() > nan else "") if t)
    return f"{kinds} values where the reference has finite ones"


def _as_array(value) -> tuple:
    """(array, structure) of an output: a tensor as it is; a map (or a sequence of maps, as
    ZipMap gives) as its values in key order, the keys being its structure; anything else
    as an object array compared by equality."""
    if isinstance(value, np.ndarray):
        return value, None
    maps = [value] if isinstance(value, Mapping) else list(value) if isinstance(value, (list, tuple)) else None
    if maps is not None and maps and all(isinstance(m, Mapping) for m in maps):
        keys = tuple(tuple(sorted(m)) for m in maps)
        try:
            values = np.array([[np.asarray(m[k]) for k in sorted(m)] for m in maps])
        except ValueError:  # maps of different sizes
            return np.asarray(value, dtype=object), keys
        return (values[0] if isinstance(value, Mapping) else values), keys
    try:
        return np.asarray(value), None
    except ValueError:  # ragged sequences
        return np.asarray(value, dtype=object), None


def _numeric(a: np.ndarray) -> bool:
    return a.dtype.kind in "biufc"


def _observe(r: np.ndarray, g: np.ndarray) -> _Observed:
    if r.shape != g.shape:
        return _Observed(_SHAPE_MISMATCH, r.dtype == g.dtype, False)
    if not (_numeric(r) and _numeric(g)):  # strings, objects: equal or not
        same = bool(np.array_equal(r, g)) if r.dtype == g.dtype else False
        return _Observed(metrics.Sums(r.size) if same else _SHAPE_MISMATCH, r.dtype == g.dtype, True)
    return _Observed(metrics.sums(r, g, equal_nan=True), r.dtype == g.dtype, True)


def _within(r, g, o: _Observed, rtol, atol, snr_db) -> bool:
    if snr_db is not None:
        return o.sums.snr_db >= snr_db
    return bool(np.allclose(g.astype(np.float64), r.astype(np.float64), rtol=rtol, atol=atol, equal_nan=True))


def _why(name: str, r, g, o: _Observed, rtol, atol, snr_db) -> Optional[str]:
    """Why output `name` fails on this sample, or None."""
    if not o.shape_match:
        return f"output {name!r}: shape {g.shape} vs {r.shape}"
    if not o.dtype_match:
        return f"output {name!r}: dtype {g.dtype} vs {r.dtype}"
    if not (_numeric(r) and _numeric(g)):
        return None if o.sums.noise == 0 else f"output {name!r}: values differ"
    nonfinite = _nonfinite_problem(r, g)
    if nonfinite is not None:
        return f"output {name!r}: {nonfinite}"
    if _within(r, g, o, rtol, atol, snr_db):
        return None
    err = f"output {name!r}: max |err| {o.sums.max_abs_error:.3g}"
    if snr_db is not None:
        return err + f", SNR {o.sums.snr_db:.1f} dB < {snr_db}"
    return err + f" beyond rtol={rtol}, atol={atol}"


def _compare(reference, candidate, names, inputs, rtol, atol, snr_db):
    """Per-output observations on one sample, and why it fails (None when it passes).
    RunFailed from the reference propagates: that input is outside the model's domain."""
    ref = reference(inputs)
    try:
        got = candidate(inputs)
    except RunFailed as e:
        failed = _Observed(_SHAPE_MISMATCH, True, True)
        return {name: failed for name in names}, f"the new program fails: {e}"
    observed, why = {}, None
    for name, r, g in zip(names, ref, got):
        (r, keys_r), (g, keys_g) = _as_array(r), _as_array(g)
        if keys_r != keys_g:
            observed[name] = _Observed(_SHAPE_MISMATCH, True, False)
            why = why or f"output {name!r}: the keys of its maps differ"
            continue
        observed[name] = _observe(r, g)
        if why is None:
            why = _why(name, r, g, observed[name], rtol, atol, snr_db)
    return observed, why


def _signature_problem(before: Program, after: Program, function: str) -> Optional[str]:
    for p, label in ((before, "before"), (after, "after")):
        if function not in p.functions:
            return f"the {label} program has no function {function!r}"
    fb, fa = before.functions[function], after.functions[function]
    sig_b = [(v.name, tuple(v.type)) for v in fb.inputs]
    sig_a = [(v.name, tuple(v.type)) for v in fa.inputs]
    if sig_b != sig_a:
        return f"inputs differ: {sig_b} vs {sig_a}"
    if len(fb.outputs) != len(fa.outputs):
        return f"{len(fb.outputs)} outputs before, {len(fa.outputs)} after"
    return None


def _explicit(run, feeds_list, tally, tol) -> VerificationReport:
    for inputs in feeds_list:
        try:
            observed, why = _compare(*run, tally.names, inputs, *tol)
        except RunFailed as e:
            return tally.report(False, dict(inputs), f"the reference program fails on the given input: {e}")
        tally.add(inputs, observed)
        if why is not None:
            return tally.report(False, dict(inputs), why)
    return tally.report(True)


def _search(run, before, samples, function, tally, tol, seed, dims):
    """The hypothesis search: a report, or None when the reference ran on no generated input
    (then `failures` says why)."""
    from hypothesis import HealthCheck, Phase, given, reject, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis.errors import Unsatisfiable

    from pipeline.strategies import inputs_for

    failures: list = []
    try:
        strategy = inputs_for(before, function, dims=dims)
    except ValueError as e:
        raise VerifyError(str(e)) from None

    @hypothesis_seed(seed)
    @settings(max_examples=samples, database=None, deadline=None, suppress_health_check=list(HealthCheck),
              phases=(Phase.explicit, Phase.generate, Phase.shrink), report_multiple_bugs=False)
    @given(strategy)
    def property_holds(inputs):
        try:
            observed, why = _compare(*run, tally.names, inputs, *tol)
        except RunFailed as e:
            failures.append(str(e))
            if tally.samples == 0 and len(failures) >= _GIVE_UP_AFTER:
                raise _Unevaluable() from None  # not one input has worked: stop searching
            reject()  # the reference program itself cannot run on this input
        tally.add(inputs, observed)
        if why is not None:
            raise _Mismatch(inputs, why)

    try:
        property_holds()
    except _Mismatch as m:  # hypothesis re-raises the shrunk (minimal) failing example
        return tally.report(False, dict(m.inputs), m.why), failures
    except (Unsatisfiable, _Unevaluable):
        return None, failures
    return tally.report(True), failures


MAX_PROBES = 64  # evaluations of the reference spent looking for sizes of symbolic dims it runs with


def probe_dims(reference, program: Program, function: str, dims: dict, free: list) -> Optional[dict]:
    """Sizes for the free symbolic dims with which the reference runs on one example input,
    or None. Tried in order: one dim at a size read off the graph (the others at 2), then
    every free dim at that size (pipeline.strategies.domain.size_candidates)."""
    from pipeline.strategies import example, input_domains, size_candidates

    fn = program.functions[function]
    domains = input_domains(program, function)
    candidates = [c for c in size_candidates(program, function) if c != 2]
    tries = [{s: c} for c in candidates for s in free] + [dict.fromkeys(free, c) for c in candidates]
    for i, fixed in enumerate(tries[:MAX_PROBES]):
        sizes = {**dict.fromkeys(free, 2), **dims, **fixed}
        if _elements(fn, sizes) > MAX_SAMPLE_ELEMENTS:
            continue
        try:
            reference(example(fn, sizes, domains, seed=i))
        except RunFailed:
            continue
        return fixed
    return None


def _generated(run, before, samples, function, tally, tol, seed, dims) -> VerificationReport:
    from pipeline.strategies import symbols_of

    report, failures = _search(run, before, samples, function, tally, tol, seed, dims)
    if report is not None:
        return report
    free = [s for s in symbols_of(before.functions[function]) if s not in dims]
    found = probe_dims(run[0], before, function, dims, free) if free else None
    if found is not None:  # e.g. a PyTorch export with the example's sequence length baked in
        report, more = _search(run, before, samples, function, _Tally(tally.names), tol, seed, {**dims, **found})
        if report is not None:
            return replace(report, probed_dims=pmap(found))
        failures += more
    last = f" ({failures[-1]})" if failures else ""
    hint = (f"; its symbolic dims {', '.join(map(repr, free))} were drawn from 1..{DEFAULT_SYMBOL_SIZE} and "
            f"probed at sizes read off the graph: give sizes with dims= (--dim name=N) or real inputs"
            if free else "; give real inputs")
    return tally.report(False, None, f"the reference program fails on every generated input{last}{hint}")


def _check_options(samples, rtol, atol, snr_db, evaluator) -> None:
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise VerifyError(f"samples={samples!r}: need a positive integer")
    for name, value in (("rtol", rtol), ("atol", atol)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                or not math.isfinite(value) or value < 0:
            raise VerifyError(f"{name}={value!r}: need a finite number >= 0")
    if snr_db is not None and (isinstance(snr_db, bool) or not isinstance(snr_db, (int, float, np.number))
                               or math.isnan(snr_db)):
        raise VerifyError(f"snr_db={snr_db!r}: need a number (dB)")
    if evaluator not in EVALUATORS:
        raise VerifyError(f"evaluator={evaluator!r}: need one of {', '.join(map(repr, EVALUATORS))}")


def _elements(fn, sizes: Mapping) -> int:
    """Elements of one sample of the function's inputs (a symbolic dim: its size in `sizes`,
    else DEFAULT_SYMBOL_SIZE, the largest size pipeline.strategies.SYMBOL_SIZES draws)."""
    def size(d):
        return d if isinstance(d, int) else int(sizes.get(d, DEFAULT_SYMBOL_SIZE))

    return sum(math.prod(size(d) for d in v.type.shape or ()) for v in fn.inputs)


def _check_sampleable(program: Program, function: str, dims: Mapping) -> None:
    """Refuse inputs too large to generate."""
    total = _elements(program.functions[function], dims)
    if total > MAX_SAMPLE_ELEMENTS:
        raise VerifyError(f"the inputs of {function!r} hold {total} elements per sample, more than verify "
                          f"generates ({MAX_SAMPLE_ELEMENTS}); pass inputs= instead")


def verify(before: Program, after: Program, samples: int = 32, inputs=None, rtol: float = 1e-5,
           atol: float = 1e-6, snr_db: Optional[float] = None, function: str = "main",
           seed: int = 0, evaluator: str = "interpreter", dims: Optional[Mapping] = None) -> VerificationReport:
    """Check `after` computes what `before` computes (see the module docstring)."""
    _check_options(samples, rtol, atol, snr_db, evaluator)
    names = tuple(v.name for v in before.functions[function].outputs) if function in before.functions else ()
    tally = _Tally(names)
    problem = _signature_problem(before, after, function)
    if problem is not None:
        return tally.report(False, None, problem)
    tol = (rtol, atol, snr_db)
    feeds = None
    if inputs is not None:  # checked (VerifyError naming the input) before any shortcut
        from pipeline.samples import batches

        feeds = batches(before.functions[function], inputs)
    if after is before:
        return VerificationReport(True, 0, pmap({n: OutputError(0.0, math.inf) for n in names}), reason="same program")
    make = EVALUATORS[evaluator]
    run = (make(before, function, "before"), make(after, function, "after"))
    if feeds is not None:
        return _explicit(run, feeds, tally, tol)
    dims = dict(dims or {})
    _check_sampleable(before, function, dims)
    return _generated(run, before, samples, function, tally, tol, seed, dims)
