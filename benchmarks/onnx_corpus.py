"""weightpress over a corpus of real ONNX models (see benchmarks/corpus/models.py for the list).

    python benchmarks/onnx_corpus.py                      # every model, every preset
    python benchmarks/onnx_corpus.py --only vad --only magika --preset int8
    python benchmarks/onnx_corpus.py --json results.json  # everything measured, per model and step
    python benchmarks/onnx_corpus.py --repo /path/to/other/checkout   # test that checkout's library
    python benchmarks/onnx_corpus.py --cli                # presets through `weightpress compress` itself

For each model (inputs: model-appropriate and seeded, see corpus/models.py):
  roundtrip  import_onnx -> export_onnx, then: onnxruntime outputs of the original vs the export
             (max |diff| / max |original|; "lossless" at <= 1e-5, or at <= 10x the model's rounding
             floor: how far onnxruntime's own graph optimizations move the original's outputs), and
             the two ModelProtos compared:
             every initializer / Constant value (by content, so renaming is allowed), metadata_props,
             opset imports, graph input / output types (a symbolic dim named once in the signature
             counts as unnamed).
  interpret  ir.interpret.evaluate on the imported program vs onnxruntime on the original
             (max |diff| / max |output|; the target is 1e-4).
  <preset>   the preset run on the model in a child process (through the API, or the CLI with
             --cli); the output must load and run in onnxruntime. Reported bytes: the command's
             table total (weights before -> after); on disk: the original file -> the output file,
             external data included; "disk/rep": on-disk saving / reported saving (target >= 0.9);
             cosine: worst over cases and float outputs vs the original model (int8 target >= 0.99);
             "fp left": float weights (> 2048 elements) still bit-identical in the output;
             "cf left": the same, for the weights inside If/Loop/Scan bodies.
Any error is caught per model and per step, and shown in one line.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
LOSSLESS = 1e-5  # onnxruntime on two equivalent graphs: float rounding only ...
ROUNDING_MARGIN = 10  # ... or up to 10x what onnxruntime's own graph rewrites change on the original
INTERPRET_TARGET = 1e-4
INT8_COSINE = 0.99
DISK_VS_REPORTED = 0.9


def _setup_path(repo: str) -> None:
    """The library under test from `repo`; the corpus helpers from beside this script."""
    for p in (REPO, repo):
        while p in sys.path:
            sys.path.remove(p)
    sys.path[:0] = [repo, REPO]


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:400]


def fmt_bytes(n) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{n:.2f} GB"


def fmt_num(x, spec=".3g") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, spec)


# ---- the steps ---------------------------------------------------------------------

def _io_maps(program) -> tuple:
    """(ONNX input name -> program input name, program output name -> ONNX output name)."""
    pairs = dict(program.attrs.get("onnx_io_names", ()))  # program name -> ONNX name
    fn = program.functions["main"]
    to_ir = {pairs.get(v.name, v.name): v.name for v in fn.inputs}
    to_onnx = {v.name: pairs.get(v.name, v.name) for v in fn.outputs}
    return to_ir, to_onnx


def step_roundtrip(path, workdir, cases, ref_runs) -> tuple:
    from benchmarks.corpus import checks
    from ir.formats.onnx import import_onnx
    from ir.formats.onnx.exporter import export_onnx

    row = {"step": "roundtrip"}
    t = time.perf_counter()
    try:
        program = import_onnx(path)
    except Exception as e:  # noqa: BLE001
        return None, dict(row, status="ERROR", error="import: " + one_line(e))
    row["import_seconds"] = time.perf_counter() - t
    out = os.path.join(workdir, "roundtrip.onnx")
    try:
        export_onnx(program, out)
    except Exception as e:  # noqa: BLE001
        return program, dict(row, status="ERROR", error="export: " + one_line(e))
    original, exported = checks.load(path), checks.load(out)
    diff = checks.proto_diff(original, exported)
    cf = checks.control_flow_weights(original)
    kept_cf = checks.weights_left(original, exported, cf)[0]
    row.update(tensors=diff.tensors_total, tensors_lost=len(diff.tensors_missing),
               weights_lost=[f"{t.name} {list(t.value.shape)} ({t.graph})" for t in diff.weights_missing],
               lost_examples=[f"{t.name} {list(t.value.shape)} {t.where} ({t.graph})" for t in diff.tensors_missing[:5]],
               renamed=len(diff.renamed), renamed_examples=diff.renamed[:5], metadata=diff.metadata,
               opsets=diff.opsets, io=diff.io,
               cf_weights=len(cf), cf_weights_kept=len(kept_cf),
               disk_original=checks.on_disk_bytes(path), disk_roundtrip=checks.on_disk_bytes(out),
               proto_summary=diff.summary())
    try:
        runs = checks.run_onnxruntime(out, cases)
    except Exception as e:  # noqa: BLE001
        return program, dict(row, status="FAIL", error="onnxruntime refuses the export: " + one_line(e))
    err, where = checks.compare(ref_runs, runs)
    # the model's own float-rounding floor: onnxruntime with and without its graph rewrites
    floor = checks.compare(ref_runs, checks.run_onnxruntime(path, cases, optimize=False))[0]
    limit = max(LOSSLESS, ROUNDING_MARGIN * floor)
    row.update(max_rel_error=err, worst_output=where, rounding_floor=floor, lossless_limit=limit)
    problems = ([] if err <= limit else [f"outputs differ (rel {err:.3g} at {where}; rounding floor "
                                         f"{floor:.2g})"]) + \
               ([] if diff.clean else [diff.summary()])
    return program, dict(row, status="ok" if not problems else "FAIL", error="; ".join(problems),
                         note=diff.renamed_summary())


def step_interpret(program, cases, ref_runs) -> dict:
    from benchmarks.corpus import checks
    from ir.interpret import evaluate

    row = {"step": "interpret"}
    to_ir, to_onnx = _io_maps(program)
    t = time.perf_counter()
    runs = []
    try:
        for case in cases:
            got = evaluate(program, {to_ir[k]: v for k, v in case.items() if k in to_ir})
            runs.append({to_onnx.get(k, k): checks.as_array(v) for k, v in got.items()})
    except Exception as e:  # noqa: BLE001
        return dict(row, status="ERROR", error=one_line(e), seconds=time.perf_counter() - t)
    err, where = checks.compare(ref_runs, runs)
    row.update(seconds=time.perf_counter() - t, max_rel_error=err, worst_output=where)
    ok = err <= INTERPRET_TARGET
    return dict(row, status="ok" if ok else "FAIL",
                error="" if ok else f"rel error {err:.3g} at {where} (target {INTERPRET_TARGET:g})")


def _run_worker(repo, path, preset, out, timeout, cli) -> dict:
    if cli:
        from benchmarks.corpus.worker import run_cli

        env_path = os.environ.get("PYTHONPATH", "")
        os.environ["PYTHONPATH"] = repo + (os.pathsep + env_path if env_path else "")
        try:
            return run_cli(path, preset, out, timeout)
        finally:
            os.environ["PYTHONPATH"] = env_path
    env = dict(os.environ, PYTHONPATH=repo)  # the worker imports only the library under test
    proc = subprocess.run([sys.executable, os.path.join(HERE, "corpus", "worker.py"), path, preset, out],
                          capture_output=True, text=True, timeout=timeout, cwd=os.path.dirname(out), env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}, no output"])[-1]
        return {"ok": False, "error": f"worker died: {tail}"[:400]}
    return json.loads(lines[-1])


def step_preset(repo, preset, path, workdir, cases, ref_runs, timeout, cli) -> dict:
    from benchmarks.corpus import checks

    row = {"step": preset}
    out = os.path.join(workdir, f"{preset.replace('+', '_')}.onnx")
    try:
        res = _run_worker(repo, path, preset, out, timeout, cli)
    except subprocess.TimeoutExpired:
        return dict(row, status="ERROR", error=f"timed out after {timeout:.0f} s")
    row.update({k: res[k] for k in ("seconds", "weights", "reported_before", "reported_after", "steps",
                                    "removed", "rounded") if k in res})
    if not res.get("ok"):
        return dict(row, status="ERROR", error=res.get("error", "?"))
    if not os.path.exists(out):
        return dict(row, status="ERROR", error="exit 0 but no output file")
    original, compressed = checks.load(path), checks.load(out)
    row["disk_original"], row["disk_after"] = checks.on_disk_bytes(path), checks.on_disk_bytes(out)
    left, total = checks.weights_left(original, compressed)
    cf = checks.control_flow_weights(original)
    cf_left, cf_total = checks.weights_left(original, compressed, cf)
    row.update(fp_weights=total, fp_left=len(left), fp_left_names=[t.name for t in left][:10],
               cf_weights=cf_total, cf_left=len(cf_left), cf_left_names=[t.name for t in cf_left][:10])
    before_ops, after_ops = checks.opset_imports(original), checks.opset_imports(compressed)
    row["opsets"] = [f"opset {d} {v} -> {after_ops.get(d, 'none')}" for d, v in before_ops.items()
                     if after_ops.get(d) != v]
    # README: the model's own opset, or 13 where compressed weights need it
    allowed = {d: {v, max(v, checks.COMPRESSED_MIN_OPSET)} if d == "ai.onnx" else {v} for d, v in before_ops.items()}
    opset_problems = [f"opset {d} {before_ops[d]} -> {after_ops.get(d, 'none')}" for d, ok in allowed.items()
                      if after_ops.get(d) not in ok]
    rep_saving = row["reported_before"] - row["reported_after"]
    disk_saving = row["disk_original"] - row["disk_after"]
    row["disk_vs_reported"] = disk_saving / rep_saving if rep_saving > 0 else None
    try:
        runs = checks.run_onnxruntime(out, cases)
    except Exception as e:  # noqa: BLE001
        return dict(row, status="FAIL", error="onnxruntime: " + one_line(e))
    row["cosine"], row["worst_output"] = checks.compare(ref_runs, runs, metric=checks.cosine, worst=min)
    row["label_agreement"] = checks.label_agreement(ref_runs, runs)
    problems = []
    if preset == "int8" and not row["cosine"] >= INT8_COSINE:
        problems.append(f"int8 cosine {row['cosine']:.4f} < {INT8_COSINE}")
    if row["disk_vs_reported"] is not None and row["disk_vs_reported"] < DISK_VS_REPORTED:
        problems.append(f"on-disk saving {fmt_bytes(disk_saving)} is {row['disk_vs_reported']:.0%} "
                        f"of the reported {fmt_bytes(rep_saving)}")
    if rep_saving > 0 and row["weights"] == 0:
        problems.append("no weights reported")
    if total and row["reported_before"] == row["reported_after"] and preset != "canonicalize_quantization":
        problems.append(f"nothing compressed ({row['weights']} weights reported)")
    if opset_problems:  # the model's opset is the user's deployment target (13 at least, by README)
        problems.append("; ".join(opset_problems))
    if cf_left and preset != "canonicalize_quantization":
        problems.append(f"{len(cf_left)}/{cf_total} control-flow weights left as they were")
    return dict(row, status="ok" if not problems else "FAIL", error="; ".join(problems),
                note="; ".join(row["opsets"]))


def cross_preset(rows) -> list:
    """Checks that compare presets: int4-block32's file is smaller than int8's."""
    by = {r["step"]: r for r in rows}
    a, b = by.get("int4-block32", {}), by.get("int8", {})
    if a.get("disk_after") and b.get("disk_after"):
        ok = a["disk_after"] < b["disk_after"]
        return [{"step": "int4<int8", "status": "ok" if ok else "FAIL",
                 "error": "" if ok else f"int4-block32 file {fmt_bytes(a['disk_after'])} >= int8 file "
                                        f"{fmt_bytes(b['disk_after'])}",
                 "disk_int4": a["disk_after"], "disk_int8": b["disk_after"]}]
    return []


def run_model(repo, model, presets, cache_dir, timeout, cli, interpret=True, keep=None) -> dict:
    from benchmarks.corpus import checks
    from benchmarks.corpus.models import ModelUnavailable, locate

    result = {"model": model.name, "kind": model.kind, "source": model.source, "rows": []}
    rows = result["rows"]
    try:
        path = locate(model, cache_dir)
    except ModelUnavailable as e:
        rows.append({"step": "locate", "status": "n/a", "error": str(e)})
        return result
    except Exception as e:  # noqa: BLE001 - a builder that broke
        rows.append({"step": "locate", "status": "ERROR", "error": one_line(e)})
        return result
    result["path"], result["bytes"] = path, checks.on_disk_bytes(path)
    workdir = keep and os.path.join(keep, model.name) or tempfile.mkdtemp(prefix=f"corpus-{model.name}-")
    os.makedirs(workdir, exist_ok=True)
    try:
        cases = model.inputs(seed=0)
        try:
            ref_runs = checks.run_onnxruntime(path, cases)
        except Exception as e:  # noqa: BLE001
            rows.append({"step": "original", "status": "ERROR",
                         "error": "onnxruntime on the original: " + one_line(e)})
            return result
        try:
            program, row = step_roundtrip(path, workdir, cases, ref_runs)
        except Exception as e:  # noqa: BLE001 - a check of ours that broke: still one line
            program, row = None, {"step": "roundtrip", "status": "ERROR", "error": "corpus script: " + one_line(e)}
        rows.append(row)
        if program is not None and interpret:
            try:
                rows.append(step_interpret(program, cases, ref_runs))
            except Exception as e:  # noqa: BLE001
                rows.append({"step": "interpret", "status": "ERROR", "error": "corpus script: " + one_line(e)})
        for preset in presets:
            t = time.perf_counter()
            try:
                r = step_preset(repo, preset, path, workdir, cases, ref_runs, timeout, cli)
            except Exception as e:  # noqa: BLE001
                r = {"step": preset, "status": "ERROR", "error": "corpus script: " + one_line(e),
                     "trace": traceback.format_exc(limit=3)}
            r["wall_seconds"] = time.perf_counter() - t
            rows.append(r)
        rows.extend(cross_preset(rows))
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return result


# ---- the table ---------------------------------------------------------------------

def _ratio(before, after) -> str:
    if before is None or after is None:
        return "-"
    return f"{fmt_bytes(before)}->{fmt_bytes(after)} {before / after:.2f}x" if after else f"{fmt_bytes(before)}->0"


SMALL_SKIP = "below the size threshold"  # the stages' reason for tensors nobody expects compressed


def _skips(row) -> str:
    """The weights a preset left alone for a reason other than their size, and the first reason."""
    steps = row.get("steps", ())
    reasons = [r for s in steps for r in (s.get("skip_reasons") or {}).values() if SMALL_SKIP not in r]
    if any(s.get("skip_reasons") for s in steps):
        return f"{len(reasons)} skipped, e.g. {reasons[0]}" if reasons else ""
    skipped = sum(s.get("skipped", 0) for s in steps if isinstance(s.get("skipped"), int))
    return f"{skipped} skipped (no reason given)" if skipped else ""


def _reported(r) -> str:
    return _ratio(r.get("reported_before"), r.get("reported_after")) if "reported_before" in r else ""


def _disk(r) -> str:
    return _ratio(r["disk_original"], r.get("disk_after") or r.get("disk_roundtrip")) if r.get("disk_original") else ""


def _cosine(r) -> str:
    if "cosine" in r:
        return fmt_num(r["cosine"], ".4f")
    return f"rel {fmt_num(r['max_rel_error'])}" if "max_rel_error" in r else ""


def _cf(r) -> str:
    if not r.get("cf_weights"):
        return ""
    if "cf_left" in r:
        return f"{r['cf_left']}/{r['cf_weights']}"
    return f"kept {r['cf_weights_kept']}/{r['cf_weights']}" if "cf_weights_kept" in r else ""


# column -> its cell for one step's row
COLUMNS = {
    "status": lambda r: r["status"],
    "reported": _reported,
    "on disk": _disk,
    "disk/rep": lambda r: fmt_num(r.get("disk_vs_reported"), ".2f") if "disk_vs_reported" in r else "",
    "cosine": _cosine,
    "fp left": lambda r: f"{r['fp_left']}/{r['fp_weights']}" if "fp_left" in r else "",
    "cf left": _cf,
}
HEADERS = ("model", "step") + tuple(COLUMNS) + ("error / note",)
NOTE_WIDTH = 140


def _import_error(result) -> str:
    """The message of a failed import, to recognise the presets that fail on the same thing."""
    first = result["rows"][0].get("error", "") if result["rows"] else ""
    return first[len("import: "):].split(": ", 1)[-1] if first.startswith("import: ") else ""


def _note(result, r, import_error) -> str:
    note = "; ".join(filter(None, (r.get("error", ""), r.get("note", ""), _skips(r))))
    if result.get("path"):
        note = note.replace(result["path"], os.path.basename(result["path"]))
    if import_error and r["step"] not in ("roundtrip", "interpret") and import_error in note:
        return "(as the import: see roundtrip)"
    return note


def table_rows(result) -> list:
    import_error = _import_error(result)
    rows = []
    for r in result["rows"]:
        note = _note(result, r, import_error)
        rows.append((result["model"], r["step"]) + tuple(cell(r) for cell in COLUMNS.values())
                    + (note if len(note) <= NOTE_WIDTH else note[:NOTE_WIDTH - 3] + "...",))
    return rows


def format_table(rows) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(HEADERS, *rows)]
    widths[-1] = min(widths[-1], NOTE_WIDTH)
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(HEADERS), line("-" * w for w in widths)] + [line(r) for r in rows])


def markdown(results, commit: str) -> str:
    """The table as Markdown, errors in full (the console table cuts them at 140 characters)."""
    lines = [f"Library under test: `{commit}`", "", "| " + " | ".join(HEADERS) + " |",
             "|" + "---|" * len(HEADERS)]
    for result in results:
        import_error = _import_error(result)
        for r, row in zip(result["rows"], table_rows(result)):
            cells = list(row[:-1]) + [_note(result, r, import_error).replace("|", "\\|")]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _commit(repo: str) -> str:
    return subprocess.run(["git", "-C", repo, "log", "-1", "--format=%h %s"], capture_output=True,
                          text=True).stdout.strip()[:100]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", action="append", metavar="NAME", help="run only this model (repeatable)")
    ap.add_argument("--preset", action="append", metavar="P", help="run only this preset (repeatable)")
    ap.add_argument("--json", metavar="FILE", help="write every figure to FILE")
    ap.add_argument("--markdown", metavar="FILE", help="write the table to FILE as Markdown, errors in full")
    ap.add_argument("--cache", metavar="DIR",
                    help="where built models are kept (default ~/.cache/weightpress-corpus)")
    ap.add_argument("--repo", default=REPO, help="the checkout whose library is tested (default: this one)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per preset run (default 900)")
    ap.add_argument("--cli", action="store_true", help="run presets through `weightpress compress` (bytes rounded)")
    ap.add_argument("--no-interpret", action="store_true", help="skip the interpreter check")
    ap.add_argument("--keep", metavar="DIR", help="keep the exported / compressed files under DIR")
    ap.add_argument("--list", action="store_true", help="list the corpus and exit")
    args = ap.parse_args(argv)
    repo = os.path.abspath(args.repo)
    _setup_path(repo)
    from benchmarks.corpus import models

    if args.list:
        for m in models.MODELS:
            print(f"{m.name:20s} {m.kind:55s} {m.source}")
        return 0
    try:
        chosen = [models.get(n) for n in args.only] if args.only else list(models.MODELS)
    except KeyError as e:
        print(f"onnx_corpus: {e.args[0]}", file=sys.stderr)
        return 2
    from pipeline import presets as preset_table

    presets = args.preset or list(preset_table.names())
    results, rows = [], []
    for model in chosen:
        t = time.perf_counter()
        print(f"[{model.name}] ...", file=sys.stderr, flush=True)
        result = run_model(repo, model, presets, args.cache, args.timeout, args.cli,
                           interpret=not args.no_interpret, keep=args.keep)
        result["seconds"] = time.perf_counter() - t
        results.append(result)
        rows.extend(table_rows(result))
        print(format_table(table_rows(result)), file=sys.stderr, flush=True)
        if args.json:  # written after every model, so a long run can be read early
            _write_json(args.json, repo, results)
        if args.markdown:
            _write(args.markdown, markdown(results, _commit(repo)))
    print(format_table(rows))
    return 0


def _write(path, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _write_json(path, repo, results) -> None:
    _write(path, json.dumps({"repo": repo, "commit": _commit(repo), "models": results}, indent=1, default=str))


if __name__ == "__main__":
    raise SystemExit(main())
