"""ONNX's own backend node test cases, run three ways.

    python benchmarks/onnx_conformance.py [--op OpType] [--sample N --seed S]
                                          [--timeout SECONDS] [--jobs N] [--json out.json]

onnx ships ~1,900 small models with inputs and expected outputs
(`onnx.backend.test.case.node.collect_testcases`, computed on import, nothing
downloaded). Each case is run

  (a) by onnxruntime on the original model: the baseline. A case onnxruntime
      refuses or gets wrong is left out of the denominators below and counted
      on its own line (the peer cannot run it either);
  (b) by our interpreter (`ir.interpret.evaluate`) on `import_onnx(model)`;
  (c) by onnxruntime on `to_onnx_model(import_onnx(model))`: the round trip;
  (d) for one-node cases whose op has a kernel, by that kernel directly (no import),
      which separates kernel bugs from importer / exporter ones.

Outputs are compared as onnx's backend runner does (same shape, same dtype,
`assert_allclose` with the case's rtol / atol; sequences element by element).
Sub-byte results (int4 / uint4 live unpacked in the IR) are compared by value.

Every case runs in a forked worker with a time limit (`--timeout`, whole case),
so one slow or hanging case cannot stop the run; the stage it was in when the
limit hit is reported. Cases with sequence / optional / map values are attempted
like the others and also counted on a line of their own.

The functions `load_cases`, `run_case` and `compare` are used by the test suite
(tests/formats/test_onnx_conformance.py) on a fixed sample.
"""
from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import os
import random
import re
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# error kinds, in the order a case meets them
IMPORT, EXPORT, ORT_EXPORT, INTERP, VALUES, TIMEOUT = (
    "import error", "export error", "ort refuses export", "interpreter error", "wrong values", "timeout")

# onnx computes the expected outputs of these modules on import with slow python
# loops (8 of the 10 s it takes to collect every case); `load_cases(skip_slow=True)`
# leaves them out where time matters (the test suite)
SLOW_MODULES = ("averagepool", "maxpool", "lppool")


def load_cases(skip_slow: bool = False) -> list:
    """onnx's node test cases (TestCase objects: .name .model .data_sets .rtol .atol)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators overflow casts on purpose
        import onnx.backend.test.case.node as node_cases

        if not skip_slow:
            return list(node_cases.collect_testcases(None))
        import importlib
        import pkgutil

        for _, name, _ in pkgutil.iter_modules(node_cases.__path__):
            if name not in SLOW_MODULES:
                importlib.import_module(f"{node_cases.__name__}.{name}")
        return list(node_cases._NodeTestCases)


def op_types(model) -> list:
    """The op types of a case's top-level graph, in order, without repeats."""
    return list(dict.fromkeys(n.op_type for n in model.graph.node))


def is_nontensor(model) -> bool:
    """True when a graph input or output is a sequence, optional or map."""
    return any(vi.type.WhichOneof("value") != "tensor_type"
               for vi in list(model.graph.input) + list(model.graph.output))


# ---- comparing ---------------------------------------------------------------------

def _one_line(msg: str, limit: int = 300) -> str:
    line = " ".join(str(msg).split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def compare(expected, actual, rtol: float, atol: float, where: str = "output") -> str | None:
    """None when `actual` matches `expected`, else a one-line reason."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict) or sorted(expected) != sorted(actual):
            return f"{where}: expected a map with keys {sorted(expected)}, got {type(actual).__name__}"
        for k in expected:
            bad = compare(expected[k], actual[k], rtol, atol, f"{where}[{k!r}]")
            if bad:
                return bad
        return None
    if isinstance(expected, (list, tuple)):
        if not isinstance(actual, (list, tuple)):
            return f"{where}: expected a sequence of {len(expected)}, got {type(actual).__name__}"
        if len(actual) != len(expected):
            return f"{where}: expected a sequence of {len(expected)}, got {len(actual)}"
        for i, (e, a) in enumerate(zip(expected, actual)):
            bad = compare(e, a, rtol, atol, f"{where}[{i}]")
            if bad:
                return bad
        return None
    if expected is None:
        return None if actual is None else f"{where}: expected an empty optional, got {type(actual).__name__}"
    if actual is None or isinstance(actual, (list, tuple, dict)):
        return f"{where}: expected a tensor, got {type(actual).__name__}"
    e, a = np.asarray(expected), np.asarray(actual)
    if e.shape != a.shape:
        return f"{where}: shape {a.shape}, expected {e.shape}"
    if e.dtype == object or e.dtype.kind in "US":
        ok = e.tolist() == np.asarray(a, dtype=object).tolist()
        return None if ok else f"{where}: strings differ"
    if e.dtype != a.dtype:
        if _is_ml_dtype(e.dtype) or _is_ml_dtype(a.dtype):  # int4 lives unpacked in the IR
            e, a = _comparable(e), _comparable(a)
        else:
            return f"{where}: dtype {a.dtype}, expected {e.dtype}"
    if _is_ml_dtype(e.dtype):
        e, a = _comparable(e), _comparable(a)
    try:
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)
    except AssertionError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if "Mismatched" in ln or "Max absolute" in ln]
        return f"{where}: values differ ({'; '.join(lines)})"
    return None


def _is_ml_dtype(dt) -> bool:
    return type(dt).__module__.startswith("ml_dtypes") or dt.kind == "V"


def _comparable(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64)
    return arr.astype(np.float64)


# ---- running one case ----------------------------------------------------------------

def _ort_session(model_bytes: bytes):
    import onnxruntime as ort

    ort.set_default_logger_severity(4)  # failures are reported by their exception, not logged
    so = ort.SessionOptions()
    so.log_severity_level = 4
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def _graph_inputs(model) -> list:
    inits = {t.name for t in model.graph.initializer}
    return [vi.name for vi in model.graph.input if vi.name not in inits]


def _run_ort(model, inputs) -> list:
    sess = _ort_session(model.SerializeToString())
    names = [i.name for i in sess.get_inputs()]
    feeds = dict(zip(_graph_inputs(model), inputs))
    import onnxruntime as ort

    quiet = ort.RunOptions()
    quiet.log_severity_level = 4
    return sess.run(None, {n: feeds[n] for n in names}, quiet)


def as_value(x):
    """A data-set value as numpy: onnx keeps inputs numpy cannot name (bfloat16, float8,
    int4) as TensorProto; sequences as lists; optionals as None or their value."""
    from onnx import TensorProto, numpy_helper

    if isinstance(x, TensorProto):
        return numpy_helper.to_array(x)
    if isinstance(x, np.generic):  # a 0-d input given as a numpy scalar
        return np.asarray(x)
    if isinstance(x, (list, tuple)):
        return [as_value(v) for v in x]
    if isinstance(x, dict):
        return {k: as_value(v) for k, v in x.items()}
    return x


def _check_sets(case, run) -> str | None:
    """Run every data set of a case through `run(inputs) -> outputs`; first mismatch or None."""
    for k, (inputs, expected) in enumerate(case.data_sets):
        inputs, expected = as_value(list(inputs)), as_value(list(expected))
        outs = run(inputs)
        if len(outs) != len(expected):
            return f"data set {k}: {len(outs)} outputs, expected {len(expected)}"
        for i, (e, a) in enumerate(zip(expected, outs)):
            bad = compare(e, a, case.rtol, case.atol, f"output {i}")
            if bad:
                return f"data set {k}: {bad}"
    return None


def _interpreter_runner(program, model):
    from ir.interpret import evaluate

    fn = program.functions["main"]
    to_ir = {onnx_name: ir_name for ir_name, onnx_name in program.attrs.get("onnx_io_names", ())}
    onnx_inputs = _graph_inputs(model)

    def run(inputs):
        feeds = {to_ir.get(n, n): x for n, x in zip(onnx_inputs, inputs)}
        res = evaluate(program, {v.name: feeds[v.name] for v in fn.inputs})
        return [res[v.name] for v in fn.outputs]
    return run


def _err(e: BaseException) -> str:
    return _one_line(f"{type(e).__name__}: {e}")


KERNEL = "kernel error"


def _kernel_runner(model):
    """For a one-node case whose op has a kernel: run that kernel directly on the data
    set (no import), as the interpreter would call it. None otherwise."""
    from ir.formats.onnx.common import attr_to_ir, opset_of
    from ir.formats.onnx.kernels import Node, kernel_for

    nodes = model.graph.node
    if len(nodes) != 1:
        return None
    nd = nodes[0]
    kernel = kernel_for(nd.op_type, nd.domain)
    if kernel is None:
        return None
    attrs = {a.name: attr_to_ir(a) for a in nd.attribute}
    node = Node(nd.op_type, opset_of(model, nd.domain if nd.domain != "ai.onnx" else ""), len(nd.output))
    names = _graph_inputs(model)

    def run(inputs):
        env = dict(zip(names, inputs))
        outs = kernel([env[i] if i else None for i in nd.input], attrs, node)[:len(nd.output)]
        return [o for o, name in zip(outs, nd.output) if name]  # the case lists the named outputs only
    return run


def run_case(case, stages=("ort", "kernel", "roundtrip", "interp"), report=lambda stage: None) -> dict:
    """One case four ways. Returns {"name", "ops", "nontensor", "ort", "kernel",
    "roundtrip", "interp"}: each way is "ok" or (error kind, one-line message); a way
    that was not run is absent ("kernel" only runs for one-node cases whose op has a
    kernel). `report(stage)` is called before each way starts."""
    from ir.formats.onnx import import_onnx
    from ir.formats.onnx.exporter import to_onnx_model

    model = case.model
    res = {"name": case.name, "ops": op_types(model), "nontensor": is_nontensor(model)}
    if "ort" in stages:
        report("ort")
        try:
            bad = _check_sets(case, lambda ins: _run_ort(model, ins))
            res["ort"] = "ok" if bad is None else (VALUES, bad)
        except Exception as e:  # onnxruntime raises its own exception types
            res["ort"] = ("ort error", _err(e))
    runner = _kernel_runner(model) if "kernel" in stages else None
    if runner is not None:
        report("kernel")
        from ir.formats.onnx.kernels import Unsupported

        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                bad = _check_sets(case, runner)
            res["kernel"] = "ok" if bad is None else (VALUES, bad)
        except Unsupported as e:
            res["kernel_unsupported"] = str(e)
        except Exception as e:
            res["kernel"] = (KERNEL, _err(e))
    report("import")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = import_onnx(model)
    except Exception as e:
        for way in stages:
            if way in ("roundtrip", "interp"):
                res[way] = (IMPORT, _err(e))
        return res
    if "roundtrip" in stages:
        report("roundtrip")
        try:
            exported = to_onnx_model(program)
        except Exception as e:
            res["roundtrip"] = (EXPORT, _err(e))
        else:
            try:
                _ort_session(exported.SerializeToString())
            except Exception as e:
                res["roundtrip"] = (ORT_EXPORT, _err(e))
            else:
                try:
                    bad = _check_sets(case, lambda ins: _run_ort(exported, ins))
                    res["roundtrip"] = "ok" if bad is None else (VALUES, bad)
                except Exception as e:
                    res["roundtrip"] = (ORT_EXPORT, _err(e))
    if "interp" in stages:
        report("interp")
        t0 = time.perf_counter()
        try:
            run = _interpreter_runner(program, model)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                bad = _check_sets(case, run)
            res["interp"] = "ok" if bad is None else (VALUES, bad)
        except Exception as e:
            res["interp"] = (INTERP, _err(e))
        res["interp_seconds"] = time.perf_counter() - t0
    return res


# ---- workers with a time limit ----------------------------------------------------------

_CASES: list = []  # set before the workers fork; they inherit it


def _worker(conn):
    while True:
        idx = conn.recv()
        if idx is None:
            return
        try:
            out = run_case(_CASES[idx], report=lambda stage: conn.send(("stage", stage)))
        except BaseException as e:  # a crash in our code must not lose the whole run
            out = {"name": _CASES[idx].name, "ops": op_types(_CASES[idx].model),
                   "nontensor": is_nontensor(_CASES[idx].model), "interp": (INTERP, _err(e))}
        conn.send(("done", out))


class _Worker:
    def __init__(self, ctx):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        self.idx = None
        self.started = 0.0
        self.stage = None

    def give(self, idx):
        self.idx, self.started, self.stage = idx, time.monotonic(), None
        self.conn.send(idx)

    def kill(self):
        self.proc.kill()
        self.proc.join()


_LATER = {"ort": ("ort", "roundtrip", "interp"), "kernel": ("kernel", "roundtrip", "interp"),
          "import": ("roundtrip", "interp"),
          "roundtrip": ("roundtrip", "interp"), "interp": ("interp",)}


def _timed_out(w, timeout) -> dict:
    case = _CASES[w.idx]
    res = {"name": case.name, "ops": op_types(case.model), "nontensor": is_nontensor(case.model)}
    for way in _LATER.get(w.stage or "ort", ()):
        res[way] = (TIMEOUT, f"over {timeout:g} s in stage {w.stage or 'start'}")
    return res


def _warm_up():
    """Import what every case needs before the workers fork, so that a fresh worker (also
    one replacing a killed one) does not spend its first case's time limit importing."""
    import onnxruntime  # noqa: F401

    from ir.formats.onnx import import_onnx  # noqa: F401
    from ir.formats.onnx.exporter import to_onnx_model  # noqa: F401
    from ir.interpret import evaluate  # noqa: F401


def run_all(indices, timeout: float, jobs: int, progress=True) -> list:
    """Run the cases at `indices` of _CASES in `jobs` forked workers, each case limited to
    `timeout` seconds (the worker is killed and replaced when the limit hits)."""
    ctx = mp.get_context("fork")
    todo = collections.deque(indices)
    workers = [_Worker(ctx) for _ in range(max(1, min(jobs, len(todo))))]
    results, done = [], 0
    t0 = time.monotonic()
    try:
        for w in workers:
            if todo:
                w.give(todo.popleft())
        while any(w.idx is not None for w in workers):
            for i, w in enumerate(workers):
                if w.idx is None:
                    continue
                left = timeout - (time.monotonic() - w.started)
                if w.conn.poll(max(0.0, min(0.05, left))):
                    try:
                        kind, payload = w.conn.recv()
                    except EOFError:  # the worker died (segfault in a native library)
                        kind, payload = "done", {**_timed_out(w, timeout)}
                        for way in ("ort", "kernel", "roundtrip", "interp"):
                            if way in payload:
                                payload[way] = ("crash", f"worker died in stage {w.stage}")
                        w.kill()
                        workers[i] = w = _Worker(ctx)
                    if kind == "stage":
                        w.stage = payload
                        continue
                    results.append(payload)
                elif time.monotonic() - w.started >= timeout:
                    results.append(_timed_out(w, timeout))
                    w.kill()
                    workers[i] = w = _Worker(ctx)
                else:
                    continue
                done += 1
                w.idx = None
                if todo:
                    w.give(todo.popleft())
                if progress and done % 100 == 0:
                    print(f"  {done}/{len(indices)} cases, {time.monotonic() - t0:.0f} s", file=sys.stderr)
    finally:
        for w in workers:
            if w.proc.is_alive():
                try:
                    w.conn.send(None)
                except (BrokenPipeError, OSError):
                    pass
                w.proc.join(timeout=1)
                if w.proc.is_alive():
                    w.kill()
    return results


# ---- the summary --------------------------------------------------------------------------

_OP_IN_MSG = re.compile(r"\bonnx\.([A-Za-z0-9_]+)\b")


def failing_op(res: dict, way: str) -> str:
    """The op type a failure is charged to: the one the message names, else the case's
    only op, else its first."""
    msg = res[way][1] if isinstance(res.get(way), tuple) else ""
    m = _OP_IN_MSG.search(msg)
    if m:
        return m.group(1)
    if len(res["ops"]) == 1:
        return res["ops"][0]
    return "<several ops: " + res["name"].removeprefix("test_").split("_")[0] + "...>"


def _pct(a, b) -> str:
    return f"{a}/{b} = {100.0 * a / b:.1f}%" if b else f"{a}/0"


def summarize(results: list, out=sys.stdout, top: int = 25) -> dict:
    base = [r for r in results if r.get("ort") == "ok"]
    refused = [r for r in results if r.get("ort") not in ("ok", None)]
    tensor = [r for r in base if not r["nontensor"]]
    nont = [r for r in base if r["nontensor"]]
    ok = {way: [r for r in base if r.get(way) == "ok"] for way in ("interp", "roundtrip")}
    p = lambda *a: print(*a, file=out)  # noqa: E731
    p(f"cases run: {len(results)}; onnxruntime passes {len(base)} of them (the denominators below)")
    why = collections.Counter(r["ort"][0] for r in refused)
    p(f"not counted: {len(refused)} that onnxruntime fails ("
      + ", ".join(f"{k}: {n}" for k, n in why.most_common()) + ")")
    figures = {}
    for way, label in (("interp", "interpreter"), ("roundtrip", "round trip (onnxruntime on our export)")):
        n_ok = len(ok[way])
        figures[way] = 100.0 * n_ok / len(base) if base else 0.0
        p(f"{label}: {_pct(n_ok, len(base))}")
    for group, label in ((tensor, "tensor-only cases"), (nont, "sequence/optional/map cases")):
        p(f"  {label}: interpreter {_pct(sum(1 for r in group if r.get('interp') == 'ok'), len(group))}, "
          f"round trip {_pct(sum(1 for r in group if r.get('roundtrip') == 'ok'), len(group))}")
    p(f"  of the {len(refused)} not counted, the interpreter matches onnx's expected outputs on "
      f"{sum(1 for r in refused if r.get('interp') == 'ok')} (onnxruntime's Python binding cannot take "
      "bfloat16 / float8 / int4 values; a few expected outputs it does not reproduce)")
    kern = [r for r in base if "kernel" in r]
    p(f"kernels run directly (one-node cases whose op has a kernel, no import): "
      f"{_pct(sum(1 for r in kern if r['kernel'] == 'ok'), len(kern))}")
    secs = sum(r.get("interp_seconds", 0.0) for r in results)
    p(f"interpreter time (all cases, import excluded): {secs:.1f} s")
    for way in ("interp", "roundtrip", "kernel"):
        fails = [r for r in base if r.get(way) != "ok" and (way != "kernel" or way in r)]
        if not fails:
            continue
        p(f"\n{way} failures by kind:")
        for k, n in collections.Counter(r[way][0] if isinstance(r.get(way), tuple) else "not run"
                                        for r in fails).most_common():
            p(f"    {k}: {n}")
        p(f"{way} failures by op type (top {top}):")
        by_op = collections.Counter(failing_op(r, way) for r in fails)
        for k, n in by_op.most_common(top):
            p(f"    {k}: {n}")
    return figures


def failures(results: list) -> list:
    """Machine-readable failures: one entry per case and way that did not pass."""
    out = []
    for r in results:
        for way in ("ort", "kernel", "interp", "roundtrip"):
            v = r.get(way)
            if isinstance(v, tuple):
                out.append({"case": r["name"], "way": way, "kind": v[0], "op": failing_op(r, way),
                            "error": v[1], "nontensor": r["nontensor"],
                            "counted": r.get("ort") == "ok" or way == "ort"})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--op", action="append", help="only cases with a node of this op type (repeatable)")
    ap.add_argument("--name", help="only cases whose name matches this regular expression")
    ap.add_argument("--sample", type=int, help="run a random sample of N cases")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case (default 60)")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    ap.add_argument("--json", help="write the failing cases (with their one-line errors) here")
    ap.add_argument("--no-kernels", action="store_true",
                    help="run every foreign op with onnx's reference evaluator (the path before the kernel "
                         "table), for comparison")
    args = ap.parse_args(argv)

    t0 = time.monotonic()
    cases = load_cases()
    print(f"collected {len(cases)} cases in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    idx = list(range(len(cases)))
    if args.op:
        idx = [i for i in idx if set(args.op) & set(op_types(cases[i].model))]
    if args.name:
        idx = [i for i in idx if re.search(args.name, cases[i].name)]
    if args.sample is not None and args.sample < len(idx):
        idx = sorted(random.Random(args.seed).sample(idx, args.sample))
    _CASES[:] = cases
    _warm_up()
    if args.no_kernels:  # before the workers fork: they inherit the handler
        from ir.formats.onnx import foreign
        from ir.ops import register_foreign

        register_foreign(foreign.PREFIX, lambda op, v, t: foreign.compute_with(op, v, t, lambda *a: None))
    t1 = time.monotonic()
    results = run_all(idx, args.timeout, args.jobs)
    results.sort(key=lambda r: r["name"])
    figures = summarize(results)
    print(f"\n{len(idx)} cases in {time.monotonic() - t1:.0f} s", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"figures_percent": figures, "cases": len(results), "failures": failures(results)}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
