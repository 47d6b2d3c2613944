"""Imports point one way: no module reaches back (even from inside a function) to a
module that imports it. Checked on the source, so a cycle hidden in a function-level
import counts as a cycle."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("ir", "stages", "pipeline")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, known: set) -> set:
    """Modules of this repository `path` imports anywhere in its body."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import mod` imports pkg.mod when that is a module
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in known}
    return found


def import_graph() -> dict:
    files = [p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")]
    known = {_module_name(p) for p in files}
    return {_module_name(p): _imports(p, known) - {_module_name(p)} for p in files}


def _reaches(graph: dict, start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m == goal:
            return True
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    return False


def _cycle_partners(graph: dict, module: str) -> list:
    # a package's __init__ importing its own submodules is how packages work, not a cycle
    return sorted(m for m in graph[module] if _reaches(graph, m, module) and not module.startswith(m + ".")
                  and not m.startswith(module + "."))


def test_ir_core_and_digest_do_not_import_each_other():
    graph = import_graph()
    assert "ir.digest" in graph["ir.core"] and "ir.core" not in graph["ir.digest"]
    assert _cycle_partners(graph, "ir.core") == [] and _cycle_partners(graph, "ir.digest") == []


def test_pipeline_core_run_trace_point_one_way():
    graph = import_graph()
    assert "pipeline.run" in graph["pipeline.core"] and "pipeline.trace" in graph["pipeline.run"]
    for module in ("pipeline.run", "pipeline.trace", "pipeline.recipe", "pipeline.presets"):
        assert _cycle_partners(graph, module) == [], module
    # pipeline.combinators <-> pipeline.core (a fixed-point stage coerces its steps to a
    # Pipeline) is the one cycle left: not one of these modules
    assert set(_cycle_partners(graph, "pipeline.core")) <= {"pipeline.combinators"}


def test_the_checker_sees_a_function_level_cycle():
    graph = {"a": {"b"}, "b": {"a"}}
    assert _cycle_partners(graph, "a") == ["b"]
