"""Which harness cases execute each mutant's code (on the unmutated tree)?

    python tools/mutation/reach.py                      # every mutant
    python tools/mutation/reach.py --only Q08,P01 --show 3

A mutant that no case of verify_harness.py executes cannot be killed by verify, whatever
the contracts check: this tells a harness gap (no generated program reaches the code)
from a contract gap (the code runs, the bug goes unnoticed).

How: in a temporary copy of the tree, a probe call is put before the innermost statement
holding each mutant's snippet (the statement of an `elif` / `else` test is its whole `if`,
a slight over-approximation); the harness cases then run once in that copy, each probe
recording the case it ran in. A snippet in a module-level statement (a table, a constant)
runs at import: it is reported as "module level" (in effect in every case that imports it).
"""
from __future__ import annotations

import argparse
import ast
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from mutants import MUTANTS  # noqa: E402
from run import IGNORE, ROOT, _env, harness_prefixes  # noqa: E402

PROBE = '__import__("builtins")._wp_reach({!r})'


def _statement(tree: ast.AST, line: int, source_lines: list):
    """The innermost statement whose lines hold `line`, and whether it is at module level."""
    best, depth_best, in_def = None, -1, False

    def visit(node, depth, inside_def):
        nonlocal best, depth_best, in_def
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt) and child.lineno <= line <= child.end_lineno:
                text = source_lines[child.lineno - 1].lstrip()
                usable = not text.startswith(("elif", "else"))  # no statement can go before an elif
                if usable and depth > depth_best:
                    best, depth_best, in_def = child, depth, inside_def
                visit(child, depth + 1, inside_def or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))
            else:
                visit(child, depth, inside_def)

    visit(tree, 0, False)
    return best, not in_def and not isinstance(best, (ast.FunctionDef, ast.AsyncFunctionDef))


def instrument(root: Path, mutants: list) -> dict:
    """Insert the probes in the copy at root; {mutant id: "probe" | "module level"}."""
    kinds, by_file = {}, {}
    for m in mutants:
        by_file.setdefault(m["file"], []).append(m)
    for rel, ms in by_file.items():
        path = root / rel
        text = path.read_text()
        lines = text.split("\n")
        tree = ast.parse(text)
        inserts = []
        for m in ms:
            line = text[:text.index(m["snippet"])].count("\n") + 1
            stmt, module_level = _statement(tree, line, lines)
            if stmt is None or module_level:
                kinds[m["id"]] = "module level"
                continue
            kinds[m["id"]] = "probe"
            inserts.append((stmt.lineno, stmt.col_offset, m["id"]))
        for lineno, col, mid in sorted(inserts, reverse=True):
            lines.insert(lineno - 1, " " * col + PROBE.format(mid))
        path.write_text("\n".join(lines))
    return kinds


_RUNNER = '''
import builtins, json, sys, warnings
sys.path.insert(0, "tools/mutation")
warnings.simplefilter("ignore")
import numpy as np
np.seterr(all="ignore")
hits, current, outcomes = {}, [None], {}
builtins._wp_reach = lambda mid: hits.setdefault(mid, set()).add(current[0])
import verify_harness
prefixes = tuple(sys.argv[2].split(","))
for name, fn in verify_harness.cases().items():
    if name.startswith(prefixes):
        current[0] = name
        outcomes[name] = verify_harness._run(fn)
json.dump({"hits": {k: sorted(v - {None}) for k, v in hits.items()}, "outcomes": outcomes},
          open(sys.argv[1], "w"))
'''


def measure(chosen: list, prefixes=None, timeout: int = 3600) -> tuple:
    """({mutant id: [cases that ran its statement]}, {case: [outcome, detail]} of every case
    run, {mutant id: "probe" | "module level"}), from one run of the harness (the cases
    under `prefixes`, by default those the chosen mutants can reach) in an instrumented copy.
    The probes only record: the outcomes are the unmutated tree's."""
    prefixes = prefixes or sorted({p for m in chosen for p in harness_prefixes(m["file"])})
    with tempfile.TemporaryDirectory(prefix="wp-reach-") as tmp:
        copy = Path(tmp) / "tree"
        shutil.copytree(ROOT, copy, ignore=IGNORE)
        kinds = instrument(copy, chosen)
        out = Path(tmp) / "hits.json"
        p = subprocess.run([sys.executable, "-c", _RUNNER, str(out), ",".join(prefixes)], cwd=copy,
                           env=_env(copy), capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"the instrumented harness failed:\n{p.stderr[-2000:]}")
        found = json.loads(out.read_text())
    return found["hits"], found["outcomes"], kinds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated mutant ids")
    ap.add_argument("--show", type=int, default=2, help="case names shown per mutant")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or m["id"] in set(args.only.split(","))]
    hits, _, kinds = measure(chosen)
    unreached = []
    for m in chosen:
        own = harness_prefixes(m["file"])
        cases = [c for c in hits.get(m["id"], []) if c.startswith(own)]
        if kinds[m["id"]] == "module level":
            print(f"{m['id']:4} module level (in effect wherever its module is used)")
            continue
        if not cases:
            unreached.append(m["id"])
        print(f"{m['id']:4} reached by {len(cases):4} cases  {', '.join(cases[:args.show])}", flush=True)
    print(f"unreached: {', '.join(unreached) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
