"""Property-based equivalence of two programs through the reference interpreter.

    report = verify(before, after, samples=32)            # allclose(rtol, atol) per sample
    report = verify(before, after, snr_db=30)             # or: SNR of every sample >= 30 dB
    report.passed, report.outputs["y"].max_abs_error, report.outputs["y"].snr_db,
    report.worst_input, report.counterexample            # the failing input, shrunk by hypothesis

Inputs come from hypothesis strategies derived from the input types
(pipeline.strategies), or from `inputs=` (one dict or a list of dicts).
Outputs are matched by position (stages may rename them) and reported under
`before`'s output names.

Options are checked first (VerifyError, a ValueError): samples a positive integer,
rtol / atol finite and >= 0, snr_db a number; generated inputs may hold at most
MAX_SAMPLE_ELEMENTS elements per sample (a model declaring a 4 TiB input is refused,
not allocated).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Optional

import numpy as np
from pyrsistent import PMap, pmap

from ir import Program
from ir.interpret import EvaluationError, evaluate
from pipeline.errors import VerifyError

MAX_SAMPLE_ELEMENTS = 1 << 27  # per generated sample, all inputs together (1 GiB of float64)


@dataclass(frozen=True)
class OutputError:
    max_abs_error: float
    snr_db: float  # over every sample: 10 log10(signal power / noise power); inf when exact


@dataclass(frozen=True)
class VerificationReport:
    passed: bool
    samples: int
    outputs: PMap  # output name -> OutputError
    worst_input: Optional[dict] = field(default=None, repr=False)  # largest error seen
    counterexample: Optional[dict] = field(default=None, repr=False)  # shrunk failing input
    reason: str = ""

    @property
    def max_abs_error(self) -> float:
        return max((o.max_abs_error for o in self.outputs.values()), default=0.0)

    def summary(self) -> str:
        figures = "; ".join(f"{k}: max |err| {o.max_abs_error:.3g}, SNR {o.snr_db:.1f} dB"
                            for k, o in sorted(self.outputs.items()))
        verdict = "passed" if self.passed else f"FAILED ({self.reason})"
        return f"{verdict} over {self.samples} samples; {figures or 'no outputs compared'}"


_GIVE_UP_AFTER = 8  # generated inputs the reference program fails on, none passing, before verify stops


class _Unevaluable(Exception):
    """The reference program failed on every input tried so far (and on _GIVE_UP_AFTER of them)."""


class _Mismatch(Exception):
    def __init__(self, inputs, why):
        super().__init__(why)
        self.inputs, self.why = inputs, why


@dataclass
class _Tally:
    """Running error figures across samples (mutable, local to one verify call)."""
    names: tuple
    samples: int = 0
    max_abs: dict = field(default_factory=dict)
    signal: dict = field(default_factory=dict)
    noise: dict = field(default_factory=dict)
    worst: tuple = (-1.0, None)

    def add(self, inputs, errors: dict) -> None:
        self.samples += 1
        for name, (mx, sig, noi) in errors.items():
            self.max_abs[name] = max(self.max_abs.get(name, 0.0), mx)
            self.signal[name] = self.signal.get(name, 0.0) + sig
            self.noise[name] = self.noise.get(name, 0.0) + noi
        top = max((e[0] for e in errors.values()), default=0.0)
        if top > self.worst[0] or self.worst[1] is None:
            self.worst = (top, dict(inputs))

    def report(self, passed: bool, counterexample=None, reason="") -> VerificationReport:
        outs = {n: OutputError(self.max_abs.get(n, 0.0), snr(self.signal.get(n, 0.0), self.noise.get(n, 0.0)))
                for n in self.names}
        return VerificationReport(passed, self.samples, pmap(outs), self.worst[1], counterexample, reason)


def snr(signal_power: float, noise_power: float) -> float:
    if noise_power == 0:
        return math.inf
    if signal_power == 0:
        return -math.inf
    return 10.0 * math.log10(signal_power / noise_power)


def _errors(ref: np.ndarray, got: np.ndarray) -> tuple:
    """(max abs error, signal power, noise power) of one output on one sample."""
    if ref.shape != got.shape:
        return math.inf, 1.0, math.inf
    r, g = ref.astype(np.float64), got.astype(np.float64)
    both_nan = np.isnan(r) & np.isnan(g)
    diff = np.where(both_nan, 0.0, np.abs(r - g))
    diff = np.where(np.isnan(diff), math.inf, diff)
    return (float(diff.max()) if diff.size else 0.0,
            float(np.sum(np.where(both_nan, 0.0, r) ** 2)), float(np.sum(diff ** 2)))


def _sample_ok(ref, got, errs, rtol, atol, snr_db) -> bool:
    if ref.shape != got.shape:
        return False
    if snr_db is not None:
        return snr(errs[1], errs[2]) >= snr_db
    return bool(np.allclose(got.astype(np.float64), ref.astype(np.float64), rtol=rtol, atol=atol,
                            equal_nan=True))


def _compare(before, after, inputs, function, rtol, atol, snr_db):
    """Per-output errors on one sample, and why it fails (None when it passes)."""
    ref = list(evaluate(before, inputs, function).items())
    try:
        got = list(evaluate(after, inputs, function).values())
    except EvaluationError as e:
        return {name: (math.inf, 1.0, math.inf) for name, _ in ref}, f"the new program fails: {e}"
    errors, why = {}, None
    for (name, r), g in zip(ref, got):
        r, g = np.asarray(r), np.asarray(g)
        errors[name] = _errors(r, g)
        if why is None and not _sample_ok(r, g, errors[name], rtol, atol, snr_db):
            why = (f"output {name!r}: shape {g.shape} vs {r.shape}" if r.shape != g.shape else
                   f"output {name!r}: max |err| {errors[name][0]:.3g}"
                   + (f", SNR {snr(errors[name][1], errors[name][2]):.1f} dB < {snr_db}" if snr_db is not None
                      else f" beyond rtol={rtol}, atol={atol}"))
    return errors, why


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


def _explicit(before, after, samples_in, function, tally, tol) -> VerificationReport:
    samples_in = [samples_in] if isinstance(samples_in, Mapping) else list(samples_in)
    for inputs in samples_in:
        errors, why = _compare(before, after, inputs, function, *tol)
        tally.add(inputs, errors)
        if why is not None:
            return tally.report(False, dict(inputs), why)
    return tally.report(True)


def _generated(before, after, samples, function, tally, tol, seed) -> VerificationReport:
    from hypothesis import HealthCheck, Phase, given, reject, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis.errors import Unsatisfiable

    from pipeline.strategies import inputs_for

    failures: list = []

    @hypothesis_seed(seed)
    @settings(max_examples=samples, database=None, deadline=None, suppress_health_check=list(HealthCheck),
              phases=(Phase.explicit, Phase.generate, Phase.shrink), report_multiple_bugs=False)
    @given(inputs_for(before, function))
    def property_holds(inputs):
        try:
            errors, why = _compare(before, after, inputs, function, *tol)
        except EvaluationError as e:
            failures.append(str(e))
            if tally.samples == 0 and len(failures) >= _GIVE_UP_AFTER:
                raise _Unevaluable() from None  # not one input has worked: stop searching
            reject()  # the reference program itself cannot run on this input
        tally.add(inputs, errors)
        if why is not None:
            raise _Mismatch(inputs, why)

    try:
        property_holds()
    except _Mismatch as m:  # hypothesis re-raises the shrunk (minimal) failing example
        return tally.report(False, dict(m.inputs), m.why)
    except (Unsatisfiable, _Unevaluable):
        last = f" ({failures[-1]})" if failures else ""
        return tally.report(False, None, f"the reference program fails on every generated input{last}")
    return tally.report(True)


def _check_options(samples, rtol, atol, snr_db) -> None:
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise VerifyError(f"samples={samples!r}: need a positive integer")
    for name, value in (("rtol", rtol), ("atol", atol)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                or not math.isfinite(value) or value < 0:
            raise VerifyError(f"{name}={value!r}: need a finite number >= 0")
    if snr_db is not None and (isinstance(snr_db, bool) or not isinstance(snr_db, (int, float, np.number))
                               or math.isnan(snr_db)):
        raise VerifyError(f"snr_db={snr_db!r}: need a number (dB)")


def _check_sampleable(program: Program, function: str) -> None:
    """Refuse inputs too large to generate (a symbolic dim counts as 4, the largest size
    pipeline.strategies.SYMBOL_SIZES draws)."""
    biggest = 4
    total = 0
    for v in program.functions[function].inputs:
        total += math.prod(d if isinstance(d, int) else biggest for d in v.type.shape)
    if total > MAX_SAMPLE_ELEMENTS:
        raise VerifyError(f"the inputs of {function!r} hold {total} elements per sample, more than verify "
                          f"generates ({MAX_SAMPLE_ELEMENTS}); pass inputs= instead")


def verify(before: Program, after: Program, samples: int = 32, inputs=None, rtol: float = 1e-5,
           atol: float = 1e-6, snr_db: Optional[float] = None, function: str = "main",
           seed: int = 0) -> VerificationReport:
    """Check `after` computes what `before` computes (see the module docstring)."""
    _check_options(samples, rtol, atol, snr_db)
    names = tuple(v.name for v in before.functions[function].outputs) if function in before.functions else ()
    tally = _Tally(names)
    problem = _signature_problem(before, after, function)
    if problem is not None:
        return tally.report(False, None, problem)
    if after is before:
        return VerificationReport(True, 0, pmap({n: OutputError(0.0, math.inf) for n in names}), reason="same program")
    tol = (rtol, atol, snr_db)
    if inputs is not None:
        return _explicit(before, after, inputs, function, tally, tol)
    _check_sampleable(before, function)
    return _generated(before, after, samples, function, tally, tol, seed)
