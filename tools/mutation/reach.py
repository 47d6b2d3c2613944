"""Which harness cases execute each mutant's snippet (on the unmutated tree)?

    PYTHONPATH=. python tools/mutation/reach.py                 # every mutant
    PYTHONPATH=. python tools/mutation/reach.py --only Q08,P01 --show 3

A mutant that no case of verify_harness.py executes cannot be killed by verify, whatever
the contracts check: this tells a harness gap (no generated program reaches the code)
from a contract gap (the code runs, the bug goes unnoticed). Each case runs once under a
line tracer limited to the mutated files; a mutant counts as reached by a case when any
line of its snippet ran. A snippet at module level (a table or constant, indentation 0)
runs at import, so it is reported as "module level" with the cases that ran any other
line of its file.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import warnings
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from mutants import MUTANTS  # noqa: E402
from run import ROOT, harness_prefixes  # noqa: E402


def snippet_lines(m: dict, root: Path = ROOT) -> tuple:
    """(first line, last line, module level?) of the mutant's snippet in its file."""
    text = (root / m["file"]).read_text()
    start = text[:text.index(m["snippet"])].count("\n") + 1
    body = m["snippet"].rstrip("\n")
    first = body.split("\n")[0]
    module_level = not first.startswith((" ", "\t")) and text[:text.index(m["snippet"])].endswith("\n")
    return start, start + body.count("\n"), module_level


class LineTracer:
    """Lines executed in a fixed set of files (sys.settrace, local tracing only there)."""

    def __init__(self, files):
        self.files = {os.path.realpath(f) for f in files}
        self.hits = defaultdict(set)

    def _global(self, frame, event, arg):
        if os.path.realpath(frame.f_code.co_filename) in self.files:
            return self._local
        return None

    def _local(self, frame, event, arg):
        if event == "line":
            self.hits[os.path.realpath(frame.f_code.co_filename)].add(frame.f_lineno)
        return self._local

    def __enter__(self):
        self.hits = defaultdict(set)
        threading.settrace(self._global)
        sys.settrace(self._global)
        return self

    def __exit__(self, *exc):
        sys.settrace(None)
        threading.settrace(None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated mutant ids")
    ap.add_argument("--show", type=int, default=2, help="case names shown per mutant")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    import numpy as np
    np.seterr(all="ignore")
    import verify_harness

    chosen = [m for m in MUTANTS if not args.only or m["id"] in set(args.only.split(","))]
    files = {m["file"] for m in chosen}
    prefixes = tuple({p for m in chosen for p in harness_prefixes(m["file"])})
    cases = {k: fn for k, fn in verify_harness.cases().items() if k.startswith(prefixes)}
    per_case = {}
    for name, fn in cases.items():
        with LineTracer([ROOT / f for f in files]) as tr:
            verify_harness._run(fn)
        per_case[name] = {f: frozenset(tr.hits.get(os.path.realpath(ROOT / f), ())) for f in files}
    unreached = []
    for m in chosen:
        first, last, module_level = snippet_lines(m)
        own = harness_prefixes(m["file"])
        mine = [k for k in per_case if k.startswith(own)]
        if module_level:
            hit = [k for k in mine if per_case[k][m["file"]]]
            where = "module level; file ran in"
        else:
            hit = [k for k in mine if any(first <= ln <= last for ln in per_case[k][m["file"]])]
            where = "reached by"
        if not hit:
            unreached.append(m["id"])
        print(f"{m['id']:4} {where} {len(hit):4}/{len(mine)} cases  {', '.join(hit[:args.show])}", flush=True)
    print(f"unreached: {', '.join(unreached) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
