"""Mutation testing of weightpress: how many deliberate bugs do the tests and verify catch?

    python tools/mutation/run.py                     # every mutant, 2 jobs
    python tools/mutation/run.py --only N01,K02      # some mutants
    python tools/mutation/run.py --jobs 2 --json out.json --markdown out.md
    python tools/mutation/run.py --check             # only validate the table

The mutants are data (tools/mutation/mutants.py): a file, an exact snippet that must
occur exactly once in it (the driver fails loudly otherwise), its replacement, a
category and the bug it stands for. Each mutant is applied in a temporary copy of the
tree (never the real one: one copy per job, the file restored after each mutant), and
measured two ways:

- tests: `python -m pytest -x -q -p no:cacheprovider <the test files of the mutated
  module>` (TESTS_FOR below, the module's own files first, then
  tests/stages/test_contract_properties.py, then the broad directories), cwd and
  PYTHONPATH in the copy; killed when a test fails (or the run times out).
- verify: tools/mutation/verify_harness.py in the copy (verify="each" at default
  settings over fixed generated programs and models; the cases that can reach the
  mutated module, CASES_FOR below, and of those only the ones that execute the mutated
  statement on the unmutated tree: tools/mutation/reach.py, one instrumented run that
  also gives the unmutated outcomes; a case that never runs the mutated code behaves as
  unmutated, so skipping it changes no verdict; --no-reach runs them all); compared case
  by case with the unmutated tree: killed when a case that passes on the unmutated tree
  now reports a failure; crashed when such a case now raises anything else (and none
  failed); survived otherwise.

Before the mutants, the driver checks that the copy's packages are the ones imported
(by pytest too), that the test subsets pass on the unmutated copy, and records the
harness's outcomes there (cases that fail unmutated are verify false alarms: listed,
never counted).

Scores: over non-equivalent mutants (a row with `equivalent` is shown, not counted):
tests kill rate; verify kill rate (killed / all), with crashes reported apart.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
from mutants import MUTANTS  # noqa: E402

CONTRACT_TESTS = "tests/stages/test_contract_properties.py"
QUANT_COMMON = ["tests/stages/test_preset.py", "tests/pipeline/test_presets.py"]
COMPRESSION = ["tests/stages/compression", "tests/compression_numeric", "tests/adversarial/test_degenerate_weights.py",
               "tests/pipeline/test_presets.py"]
KERNELS = ["tests/ir/test_ops_quant.py", "tests/ir/test_ops_constexpr.py", "tests/ir/test_ops_quant_fast_paths.py",
           "tests/ir/test_oracle.py", "tests/ir/test_interpret.py", "tests/stages/compression/test_figures.py",
           "tests/stages/test_dequantize_to_constexpr.py", "tests/stages/test_canonicalize_lut_pattern.py",
           "tests/formats/test_onnx_compressed_export.py"]

# the test files that exercise each mutated module (the longest matching path prefix wins), the
# most specific first: every mutant so far is killed by some test, and with -x the run stops at
# the first failure, so the order decides the time (the broad directories come last)
TESTS_FOR = {
    "stages/quantization/dequantize_quantize_pair.py": ["tests/stages/test_dequantize_quantize_pair.py"],
    "stages/quantization/int_op_canonicalization.py": ["tests/stages/test_int_op_canonicalization.py"],
    "stages/quantization/nullify_zero_point.py": ["tests/stages/test_nullify_zero_point.py"],
    "stages/quantization/distributive_scale_normalization.py":
        ["tests/stages/test_distributive_scale_normalization.py"],
    "stages/quantization/dequantize_to_constexpr.py": ["tests/stages/test_dequantize_to_constexpr.py"],
    "stages/quantization/merge_affine_dequantize.py": ["tests/stages/test_merge_affine_dequantize.py"],
    "stages/quantization/reorder_lut_per_channel_scale.py": ["tests/stages/test_reorder_lut_per_channel_scale.py"],
    "stages/quantization/canonicalize_lut_pattern.py": ["tests/stages/test_canonicalize_lut_pattern.py"],
    "stages/compression/": COMPRESSION,
    "stages/compression/numeric/affine.py": ["tests/compression_numeric/test_affine.py",
                                             "tests/stages/compression/test_seed_examples_and_bounds.py"] + COMPRESSION,
    "stages/compression/numeric/palettize.py": ["tests/compression_numeric/test_palettize.py",
                                                "tests/compression_numeric/test_kmeans.py"] + COMPRESSION,
    "stages/compression/numeric/sparse.py": ["tests/compression_numeric/test_sparse.py"] + COMPRESSION,
    "stages/compression/affine.py": ["tests/stages/compression/test_affine_stage.py",
                                     "tests/stages/compression/test_selection_axes_and_zero_points.py"] + COMPRESSION,
    "stages/compression/sparsify.py": ["tests/stages/compression/test_selection_axes_and_zero_points.py"]
                                      + COMPRESSION,
    "stages/compression/weights.py": ["tests/stages/compression/test_selection_axes_and_zero_points.py"]
                                     + COMPRESSION,
    "stages/compression/palettize.py": ["tests/stages/compression/test_palettize_sparsify_joint.py",
                                        "tests/stages/compression/test_layout_fallback.py"] + COMPRESSION,
    "ir/ops/quant.py": KERNELS,
    "ir/packing.py": ["tests/ir/test_packing.py", "tests/ir/test_serialize.py"],
    "ir/fold.py": ["tests/ir/test_fold.py", "tests/stages/compression"],
    "stages/compression/numeric/worst_case.py": ["tests/compression_numeric/test_worst_case.py",
                                                 "tests/calibration/test_sensitivity.py"],
    "stages/compression/numeric/gptq.py": ["tests/compression_numeric/test_gptq.py", "tests/calibration"],
    "stages/compression/mixed_precision.py": ["tests/calibration/test_sensitivity.py",
                                              "tests/calibration/test_end_to_end_tables.py",
                                              "tests/stages/compression/test_mixed_precision.py"],
    "stages/calibration/": ["tests/calibration/test_sensitivity.py", "tests/calibration"],
    "pipeline/calibration.py": ["tests/calibration/test_sample_batches.py", "tests/calibration/test_collect.py",
                                "tests/cli/test_calibration_cli.py"],
}
# the harness cases that can reach each mutated module (a quantization pass never runs in a
# compression pipeline and the reverse; the op kernels and the IR run everywhere)
CASES_FOR = {"stages/quantization/": ("quant/",), "stages/compression/": ("comp/", "decomp/", "io/"),
             "stages/calibration/": ("comp/",), "pipeline/calibration.py": ("comp/",),
             "ir/packing.py": ("io/",), "ir/": ("quant/", "comp/", "decomp/", "io/")}
TEST_TIMEOUT = 900
HARNESS_TIMEOUT = 900
IGNORE = shutil.ignore_patterns(".git", "__pycache__", ".hypothesis", ".pytest_cache", "*.egg-info", "wp-cache")


class TableError(ValueError):
    """The mutant table does not match the tree."""


def _longest_prefix(table: dict, path: str):
    found = [prefix for prefix in table if path.startswith(prefix)]
    return table[max(found, key=len)] if found else None


def test_files(path: str) -> list:
    own = _longest_prefix(TESTS_FOR, path)
    if own is None:
        raise TableError(f"no test files mapped for {path} (add it to TESTS_FOR)")
    if path.startswith("stages/quantization/"):
        own = own + QUANT_COMMON
    # the module's own test files, then the contract properties, then the broad rest (-x stops early)
    specific = [f for f in own if f.endswith(".py") and f not in COMPRESSION + QUANT_COMMON][:2]
    return list(dict.fromkeys(specific + [CONTRACT_TESTS] + own))


def check_table(mutants: list, root: Path = ROOT) -> None:
    """Every snippet occurs exactly once in its file; ids unique; fields present."""
    errors, seen = [], set()
    for m in mutants:
        for key in ("id", "file", "snippet", "replacement", "category", "why"):
            if key not in m:
                errors.append(f"{m.get('id', '?')}: missing {key}")
        if m["id"] in seen:
            errors.append(f"{m['id']}: duplicate id")
        seen.add(m["id"])
        path = root / m["file"]
        if not path.is_file():
            errors.append(f"{m['id']}: no file {m['file']}")
            continue
        n = path.read_text().count(m["snippet"])
        if n != 1:
            errors.append(f"{m['id']}: snippet found {n} times in {m['file']} (must be exactly once): "
                          f"{m['snippet'][:80]!r}")
        if m["snippet"] == m["replacement"]:
            errors.append(f"{m['id']}: replacement equals the snippet")
        try:
            test_files(m["file"])
            harness_prefixes(m["file"])
        except TableError as e:
            errors.append(f"{m['id']}: {e}")
    if errors:
        raise TableError("mutant table does not match the tree:\n  " + "\n  ".join(errors))


# ---- the copies ------------------------------------------------------------------------------

def _env(slot: Path) -> dict:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(slot), PYTHONDONTWRITEBYTECODE="1", MUTATION_SLOT=str(slot))
    return env


def _run(cmd: list, slot: Path, timeout: int) -> tuple:
    """(return code or 'timeout', seconds, last lines of output)."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=slot, env=_env(slot), capture_output=True, text=True, timeout=timeout)
        out = (p.stdout + p.stderr).strip().splitlines()
        return p.returncode, time.perf_counter() - t0, "\n".join(out[-15:])
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - t0, ""


_WHERE_TEST = '''import os, ir, stages, pipeline
def test_the_copy_is_imported():
    slot = os.environ["MUTATION_SLOT"]
    for m in (ir, stages, pipeline):
        assert os.path.realpath(m.__file__).startswith(os.path.realpath(slot)), m.__file__
'''


def make_slot(base: Path, i: int) -> Path:
    slot = base / f"slot{i}"
    shutil.copytree(ROOT, slot, ignore=IGNORE)
    probe = slot / "tests" / "test_zz_mutation_where.py"
    probe.write_text(_WHERE_TEST)
    code, _, out = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(probe.relative_to(slot))],
                        slot, 300)
    probe.unlink()
    if code != 0:
        raise RuntimeError(f"the copy {slot} is not what pytest imports:\n{out}")
    return slot


def run_tests(slot: Path, files: list) -> tuple:
    shutil.rmtree(slot / ".hypothesis", ignore_errors=True)  # no failing example carried between mutants
    present = [f for f in files if (slot / f).exists()]
    return _run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *present], slot, TEST_TIMEOUT)


def harness_prefixes(path: str) -> tuple:
    found = _longest_prefix(CASES_FOR, path)
    if found is None:
        raise TableError(f"no harness cases mapped for {path} (add it to CASES_FOR)")
    return found


def run_harness(slot: Path, baseline: dict | None = None, prefixes: tuple = (), cases=None) -> dict:
    out = slot / "harness.json"
    cmd = [sys.executable, "tools/mutation/verify_harness.py", "--json", str(out)]
    if prefixes:
        cmd += ["--prefixes", ",".join(prefixes)]
    if cases is not None:
        listed = slot / "harness_cases.json"
        listed.write_text(json.dumps(sorted(cases)))
        cmd += ["--cases", str(listed)]
    if baseline is not None:
        base = slot / "harness_baseline.json"
        base.write_text(json.dumps(baseline))
        cmd += ["--baseline", str(base)]
    code, secs, text = _run(cmd, slot, HARNESS_TIMEOUT)
    if code != 0 or not out.exists():
        return {"__harness__": ["crashed", f"harness exit {code}: {text[-300:]}"]}
    results = json.loads(out.read_text())
    out.unlink()
    return results


def verify_verdict(baseline: dict, mutated: dict) -> tuple:
    """(killed | crashed | survived, the cases that decide it)."""
    if "__harness__" in mutated:
        return "crashed", ["__harness__"]
    usable = [k for k, v in baseline.items() if v[0] == "ok" and k in mutated]  # the run stops at a failure
    failed = [k for k in usable if mutated[k][0] == "failed"]
    crashed = [k for k in usable if mutated[k][0] == "crashed"]
    if failed:
        return "killed", failed
    if crashed:
        return "crashed", crashed
    return "survived", []


def apply(slot: Path, m: dict) -> str:
    path = slot / m["file"]
    original = path.read_text()
    if original.count(m["snippet"]) != 1:
        raise TableError(f"{m['id']}: snippet not found exactly once in the copy")
    path.write_text(original.replace(m["snippet"], m["replacement"]))
    return original


def measure(slot: Path, m: dict, baseline: dict, do_tests: bool, do_verify: bool, reached=None) -> dict:
    """One mutant's row. reached: the harness cases that run the mutated statement (None:
    every case under the file's prefixes); a case that never runs it behaves as unmutated."""
    path = slot / m["file"]
    original = apply(slot, m)
    try:
        row = {"id": m["id"], "category": m["category"], "file": m["file"], "why": m["why"],
               "equivalent": m.get("equivalent", ""), "issue": bool(m.get("issue"))}
        if do_tests:
            code, secs, out = run_tests(slot, test_files(m["file"]))
            row["tests"] = "survived" if code == 0 else "killed"
            row["tests_detail"] = "timeout" if code == "timeout" else (out.splitlines()[-1] if out else "")
            row["tests_seconds"] = round(secs, 1)
            if code not in (0, 1, "timeout"):
                row["tests_detail"] = f"pytest exit {code}: " + out[-300:]
        if do_verify:
            t0 = time.perf_counter()
            if reached is not None and not reached:
                verdict, cases = "survived", ["no harness case runs the mutated code"]
            else:
                verdict, cases = verify_verdict(baseline, run_harness(slot, baseline, harness_prefixes(m["file"]),
                                                                      reached))
            row["verify"], row["verify_cases"] = verdict, cases[:5]
            row["reached_cases"] = None if reached is None else len(reached)
            row["verify_seconds"] = round(time.perf_counter() - t0, 1)
        return row
    finally:
        path.write_text(original)


# ---- reporting -------------------------------------------------------------------------------

def scores(rows: list) -> dict:
    counted = [r for r in rows if not r["equivalent"]]
    n = len(counted)
    out = {"mutants": len(rows), "non_equivalent": n}
    if n and "tests" in counted[0]:
        out["tests_killed"] = sum(r["tests"] == "killed" for r in counted)
        out["tests_score"] = round(100 * out["tests_killed"] / n, 1)
    if n and "verify" in counted[0]:
        for v in ("killed", "crashed", "survived"):
            out[f"verify_{v}"] = sum(r["verify"] == v for r in counted)
        out["verify_score"] = round(100 * out["verify_killed"] / n, 1)
        out["verify_score_with_crashes"] = round(100 * (out["verify_killed"] + out["verify_crashed"]) / n, 1)
    return out


def table(rows: list, summary: dict, false_alarms: list) -> str:
    lines = ["| id | category | file | tests | verify | note |", "|---|---|---|---|---|---|"]
    for r in rows:
        note = ("EQUIVALENT: " + r["equivalent"]) if r["equivalent"] else r["why"]
        if r.get("issue"):
            note = "[issue 13] " + note
        lines.append(f"| {r['id']} | {r['category']} | {r['file']} | {r.get('tests', '-')} | "
                     f"{r.get('verify', '-')} | {note} |")
    lines.append("")
    lines.append("Scores over non-equivalent mutants: " + json.dumps(summary))
    if false_alarms:
        lines.append(f"\nverify false alarms on the unmutated tree ({len(false_alarms)} cases, not counted): "
                     + ", ".join(false_alarms[:40]) + (" ..." if len(false_alarms) > 40 else ""))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="mutation testing of weightpress (see the module docstring)")
    ap.add_argument("--only", help="comma-separated mutant ids")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--check", action="store_true", help="validate the table against the tree and stop")
    ap.add_argument("--no-tests", action="store_true", help="skip the test measurement")
    ap.add_argument("--no-verify", action="store_true", help="skip the verify measurement")
    ap.add_argument("--no-baseline-tests", action="store_true", help="skip running the test subsets unmutated")
    ap.add_argument("--no-reach", action="store_true", help="run every harness case of the mutated file's prefixes "
                                                            "(default: only the cases that run the mutated code)")
    ap.add_argument("--json", help="write every row and the scores here")
    ap.add_argument("--markdown", help="write the table here")
    args = ap.parse_args(argv)

    check_table(MUTANTS)
    if args.check:
        print(f"table ok: {len(MUTANTS)} mutants, every snippet found exactly once")
        return 0
    chosen = MUTANTS
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {m["id"] for m in MUTANTS}
        if unknown:
            raise TableError(f"unknown mutant ids: {sorted(unknown)}")
        chosen = [m for m in MUTANTS if m["id"] in wanted]
    do_tests, do_verify = not args.no_tests, not args.no_verify
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wp-mutation-") as tmp:
        slots = [make_slot(Path(tmp), i) for i in range(max(1, args.jobs))]
        print(f"{len(slots)} copies of {ROOT} in {tmp}; the copies' packages are the ones imported", flush=True)
        baseline, false_alarms, hits, kinds = {}, [], {}, {}
        if do_verify and args.no_reach:
            baseline = run_harness(slots[0])
        elif do_verify:
            # one run of the harness with a probe before each mutated statement: the unmutated
            # outcomes, and which cases run which mutant's code (tools/mutation/reach.py)
            import reach
            hits, baseline, kinds = reach.measure(chosen)
            print(f"reach: {sum(bool(hits.get(m['id'])) or kinds[m['id']] != 'probe' for m in chosen)} of "
                  f"{len(chosen)} mutants run in some harness case", flush=True)
        if do_verify:
            if "__harness__" in baseline:
                raise RuntimeError(f"the harness fails on the unmutated tree: {baseline['__harness__']}")
            false_alarms = sorted(k for k, v in baseline.items() if v[0] != "ok")
            print(f"harness on the unmutated tree: {len(baseline) - len(false_alarms)} cases ok, "
                  f"{len(false_alarms)} fail or crash there (not counted)", flush=True)
        if do_tests and not args.no_baseline_tests:
            files = sorted({f for m in chosen for f in test_files(m["file"])})
            code, secs, out = run_tests(slots[0], files)
            if code != 0:
                raise RuntimeError(f"the test subsets fail on the unmutated tree ({secs:.0f}s):\n{out}")
            print(f"test subsets pass on the unmutated tree ({secs:.0f}s)", flush=True)
        free: queue.Queue = queue.Queue()
        for s in slots:
            free.put(s)

        def reached(m):
            if not hits and not kinds:
                return None  # --no-reach
            if kinds[m["id"]] != "probe":
                return None  # module level: in effect in every case of its prefixes
            own = harness_prefixes(m["file"])
            return [c for c in hits.get(m["id"], ()) if c.startswith(own)]

        def job(m):
            slot = free.get()
            try:
                return measure(slot, m, baseline, do_tests, do_verify, reached(m))
            finally:
                free.put(slot)

        rows = []
        with cf.ThreadPoolExecutor(len(slots)) as pool:
            for row in pool.map(job, chosen):
                rows.append(row)
                print(f"{row['id']:4} {row['category']:10} tests={row.get('tests', '-'):8} "
                      f"verify={row.get('verify', '-'):8} {row.get('tests_seconds', '')}s/"
                      f"{row.get('verify_seconds', '')}s", flush=True)
    summary = scores(rows)
    summary["minutes"] = round((time.perf_counter() - t_start) / 60, 1)
    text = table(rows, summary, false_alarms)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "scores": summary, "false_alarms": false_alarms,
                                               "baseline": baseline}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
