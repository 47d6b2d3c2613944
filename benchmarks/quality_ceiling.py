"""How far can any allocation of our forms go at a bits-per-weight budget? An upper bound for the
--target-bpw rows of bench_quality, measured on the held-out sentences themselves.

    python benchmarks/quality_ceiling.py [--model all_minilm_l6_v2] [--bpw 4.5 4.75 5.0] [--sensitivity 16]

For every weight mixed_precision selects, every candidate form it would build (the same
compressors, the same calibration) is put into the fp32 model alone, and the model is run on the
64 evaluation sentences of bench_quality: 1 - cosine of each sentence's embedding against fp32,
per candidate, per sentence. Then, with those exact per-sentence errors (not the proxy, not the
calibration samples), the choice of one candidate per weight that minimises the worst sentence's
summed error under the budget is found by numeric/worst_case.py's multiplicative weights over
the sentences (its dual bounds give a lower bound). The
summed error is first-order: the script also builds the best choice and reports its real worst
cosine. An allocation that knows the test sentences cannot be beaten by one that does not: if
this ceiling is below a target, no allocator over these candidate forms reaches it, and the
forms must get better.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks import bench_quality as bq  # noqa: E402
from benchmarks.corpus import models  # noqa: E402
from ir.fold import evaluate_ops  # noqa: E402
from ir.formats.onnx import import_onnx  # noqa: E402
from stages.calibration.sensitivity import _Session  # noqa: E402
from stages.calibration.stats import calibration_stats  # noqa: E402
from stages.compression.numeric.worst_case import allocate_worst_case_of  # noqa: E402
from stages.compression.weights import Names, Replacement  # noqa: E402

mp = importlib.import_module("stages.compression.mixed_precision")


def candidate_forms(program):
    """{weight: {candidate: Replacement}} for mixed_precision's default candidates (a calibrated
    form superseding the data-free one of the same bits, as the stage does)."""
    out = {}
    for key, view, taken in mp._selected(program, None):
        stats = calibration_stats(program, key)
        forms = {}
        for name in mp.DEFAULT_CANDIDATES:
            method, params, _ = mp.CANDIDATES[name]
            if method == "keep" or any(b in forms for b in mp.SUPERSEDED_BY.get(name, ())):
                continue
            rep = mp._compress(method, view, mp._params_for(view, method, params), Names(view.name, set(taken)),
                               stats)
            if isinstance(rep, Replacement) and rep.stats["compressed_bytes"] < mp.const_nbytes([view.producer]):
                forms[name] = rep
        out[key] = (view, forms)
    return out


def sentence_errors(program, forms, ev):
    """{(weight, candidate): 1 - cosine per evaluation sentence} with that form alone in the model."""
    session = _Session(program, program.main, list(forms))

    def pooled(over):
        return np.concatenate([[g for g in session(f, over) if g.ndim == 2][0] for f in ev]).astype(np.float64)

    base = pooled({})
    errors = {}
    for key, (view, reps) in forms.items():
        for name, rep in reps.items():
            decoded = np.asarray(evaluate_ops(rep.ops, rep.ops[-1].outputs[0]))
            errors[(key, name)] = 1 - bq.cosines(pooled({key: decoded}), base)
    return errors


def ceiling(forms, errors, bpw: float):
    """(estimated worst error, lower bound, {weight: candidate}) minimising the worst sentence."""
    keys = list(forms)
    names = [["keep"] + list(forms[k][1]) for k in keys]
    sizes = [np.array([mp.const_nbytes([forms[k][0].producer])] +
                      [int(forms[k][1][c].stats["compressed_bytes"]) for c in ns[1:]], np.int64)
             for k, ns in zip(keys, names)]
    n = len(next(iter(errors.values())))
    errs = [np.array([np.zeros(n)] + [errors[(k, c)] for c in ns[1:]]) for k, ns in zip(keys, names)]
    budget = int(bpw * sum(forms[k][0].size for k in keys) / 8)
    best = allocate_worst_case_of(sizes, errs, budget)
    return best.worst, best.bound, {k: ns[j] for k, ns, j in zip(keys, names, best.choice)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="all_minilm_l6_v2", help="a pretrained encoder of the corpus")
    ap.add_argument("--bpw", type=float, nargs="+", default=[4.5, 4.75, 5.0])
    ap.add_argument("--sensitivity", type=int, default=16)
    args = ap.parse_args(argv)
    path = models.locate(models.get(args.model))
    cal, ev, _ = bq.samples(args.model, 128, 64, 8, 1)
    reference = bq.embeddings(path, ev)
    program, _ = bq._calibrate(import_onnx(path), cal, args.sensitivity)
    t0 = time.perf_counter()
    forms = candidate_forms(program)
    errors = sentence_errors(program, forms, ev)
    print(f"{sum(len(f[1]) for f in forms.values())} candidate forms of {len(forms)} weights, each run alone on "
          f"{len(reference)} held-out sentences ({time.perf_counter() - t0:.0f} s)")
    print(f"{'bpw':>5s} {'estimated worst cos':>20s} {'ceiling':>8s} {'built: min cos':>15s} {'mean cos':>9s} "
          f"{'size':>6s}")
    from pipeline.models import save_model
    import tempfile
    from pyrsistent import freeze
    from stages.base import DEFAULT_CONTEXT
    from stages.compression.weights import Skip, transform_weights

    def apply(view, params, names):
        name = params["choices"].get(view.name)
        return Skip("kept") if name in (None, "keep") else forms[view.name][1][name]

    for bpw in args.bpw:
        worst, bound, choice = ceiling(forms, errors, bpw)
        built = transform_weights(program, apply, {"choices": freeze(choice)}, DEFAULT_CONTEXT, None, None,
                                  kinds=("dense",), desc="ceiling").program
        with tempfile.TemporaryDirectory() as d:
            save_model(built, os.path.join(d, "m.onnx"))
            c = bq.cosines(bq.embeddings(os.path.join(d, "m.onnx"), ev), reference)
            ratio = bq.disk_bytes(d) / os.path.getsize(path)
        print(f"{bpw:5.2f} {1 - worst:20.4f} {1 - bound:8.4f} {c.min():15.4f} {c.mean():9.4f} {ratio:6.3f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
