"""One preset on one model, in a child process (a crash or a hang costs one row, not the run).

    PYTHONPATH=REPO python benchmarks/corpus/worker.py MODEL.onnx PRESET OUT.onnx  -> one JSON line

It does what `weightpress compress MODEL -o OUT --preset PRESET` does, through
the API, and reports the figures the command's table shows exactly (not
rounded to 0.1 MB): the per-weight bytes before and after from
pipeline.report.compare_files (what the table's total row sums: bytes as written), plus each
step's own statistics from the Trace (compressed / skipped counts and bytes).
`run_cli` instead runs the command itself and reads its table's total row.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

UNITS = {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3}


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:400]


def _scalars(stats) -> dict:
    if not hasattr(stats, "items"):
        return {}
    out = {k: v for k, v in stats.items() if isinstance(v, (int, float, str, bool))}
    weights = stats.get("weights")
    if hasattr(weights, "items"):  # why a weight was left alone, where the stage says so
        reasons = {}
        for name, w in weights.items():
            reason = w.get("skipped") or w.get("skip_reason") or w.get("reason") if hasattr(w, "get") else None
            if reason:
                reasons[str(name)] = str(reason)
        if reasons:
            out["skip_reasons"] = reasons
    for key in ("skipped_weights", "skip_reasons", "skips"):
        if hasattr(stats.get(key), "items"):
            out["skip_reasons"] = {str(k): str(v) for k, v in stats[key].items()}
    return out


def run_api(model_path: str, preset: str, out_path: str) -> dict:
    from pipeline import Pipeline
    from pipeline.models import load_model, save_model
    from pipeline.report import compare_files

    program = load_model(model_path)
    started = time.perf_counter()
    trace = Pipeline.preset(preset).run(program)
    seconds = time.perf_counter() - started
    save_model(trace.result, out_path)
    changes = compare_files(program, trace.result, model_path, out_path)  # what `compress` reports
    return {
        "ok": True,
        "seconds": seconds,
        "weights": len(changes),
        "reported_before": int(sum(c.before_bytes for c in changes)),
        "reported_after": int(sum(c.after_bytes for c in changes if c.after)),
        "removed": [c.name for c in changes if c.after is None],
        "steps": [dict(stage=getattr(s.stage, "name", str(s.stage)), changed=bool(s.changed), **_scalars(s.stats))
                  for s in trace.steps],
    }


def _bytes(text: str) -> int:
    number, unit = text.split()
    return int(round(float(number) * UNITS[unit]))


def run_cli(model_path: str, preset: str, out_path: str, timeout: float) -> dict:
    """`weightpress compress` itself; bytes read from the total row (rounded to 0.1 of a unit)."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "compress", model_path, "-o", out_path,
                           "--preset", preset, "--no-progress"],
                          capture_output=True, text=True, timeout=timeout, cwd=os.path.dirname(out_path))
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        return {"ok": False, "error": f"exit {proc.returncode}: {last}"[:400], "seconds": seconds}
    total = next((line for line in proc.stdout.splitlines() if line.lstrip().startswith("total (")), None)
    if total is None:
        return {"ok": False, "error": "no total row in the table", "seconds": seconds}
    weights = int(re.search(r"total \((\d+) weights\)", total).group(1))
    sizes = re.findall(r"(\d+(?:\.\d+)?\s(?:B|KB|MB|GB))\b", total)
    return {"ok": True, "seconds": seconds, "weights": weights, "rounded": True,
            "reported_before": _bytes(sizes[0]), "reported_after": _bytes(sizes[1]), "steps": []}


def main(argv=None) -> int:
    model_path, preset, out_path = (argv or sys.argv[1:])[:3]
    try:
        result = run_api(model_path, preset, out_path)
    except BaseException as e:  # noqa: BLE001 - every failure is a finding, reported in one line
        result = {"ok": False, "error": one_line(e)}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
