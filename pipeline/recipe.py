"""Recipes: pipelines written as TOML or JSON data.

TOML:                                   JSON:
    [[stages]]                              {"stages": [
    stage = "palettize_weights"                {"stage": "palettize_weights", "nbits": 4},
    nbits = 4                                  {"stage": "dead_code_elimination"}]}

    [[stages]]                          (a bare JSON list of entries works too)
    stage = "dead_code_elimination"

Every entry names a stage (or a preset, or `repeat_until_fixed_point` with
`steps = "a,b"`); the other keys are its parameters. Errors name the entry,
the key and, where it can be found, the line: unknown stage, unknown
parameter, wrong type.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Optional

from toolz import concat

from pipeline.errors import PipelineError, RecipeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - python 3.10
    import tomli as tomllib


class _Source:
    """The recipe text, to point errors at lines."""

    def __init__(self, name: str, text: Optional[str], kind: str):
        self.name, self.lines, self.kind = name, (text or "").splitlines(), kind

    def _key_re(self, key: str):
        k = re.escape(key)
        return re.compile(rf'^\s*"?{k}"?\s*=' if self.kind == "toml" else rf'"{k}"\s*:')

    def entry_line(self, index: int) -> Optional[int]:
        pat = self._key_re("stage")
        hits = [n for n, line in enumerate(self.lines, 1) if pat.search(line)]
        return hits[index] if index < len(hits) else None

    def key_line(self, index: int, key: str) -> Optional[int]:
        start = self.entry_line(index)
        if start is None:
            return None
        stop = self.entry_line(index + 1) or len(self.lines) + 1
        pat = self._key_re(key)
        # in TOML the entry's keys may come before its `stage =` line, after its [[header]]
        headers = [n for n in range(1, start + 1) if self.lines[n - 1].lstrip().startswith("[[")]
        lo = headers[-1] if self.kind == "toml" and headers else start
        hits = [n for n in range(lo, stop) if pat.search(self.lines[n - 1])]
        return hits[0] if hits else None

    def where(self, index: int, key: Optional[str] = None) -> str:
        line = self.key_line(index, key) if key else self.entry_line(index)
        return f"{self.name}: stages[{index}]" + (f" key {key!r}" if key else "") + \
            (f" (line {line})" if line else "")


_TOML_HEADER = re.compile(r'^\s*\[\[?\s*[\w".\- ]+\]\]?\s*(#.*)?$')


def _guess_kind(text: str) -> str:
    """JSON when the text opens like JSON, unless its first line is a TOML [table] header."""
    first = text.lstrip().split("\n", 1)[0]
    if _TOML_HEADER.match(first) or first[:1] not in ("[", "{"):
        return "toml"
    return "json"


def _read(source) -> tuple:
    """(data, _Source) from a path, a TOML/JSON string, a dict or a list."""
    if isinstance(source, (dict, list)):
        return source, _Source("recipe", None, "dict")
    path = Path(source)
    if isinstance(source, Path) or (len(str(source)) < 4096 and "\n" not in str(source) and path.exists()):
        text, name = _read_file(path), str(path)
        kind = "json" if path.suffix == ".json" else "toml"
    else:
        text, name = str(source), "recipe"
        kind = _guess_kind(text)
    try:
        data = json.loads(text) if kind == "json" else tomllib.loads(text)
    except json.JSONDecodeError as e:
        raise RecipeError(f"{name}: not valid JSON (line {e.lineno}): {e.msg}") from None
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{name}: not valid TOML: {e}") from None
    except RecursionError:
        raise RecipeError(f"{name}: nested too deeply") from None
    return data, _Source(name, text, kind)


MAX_RECIPE_BYTES = 16 << 20  # a recipe is a few lines; a huge file is a mistake


def _read_file(path: Path) -> str:
    """The recipe's text; a file that cannot be read is a RecipeError naming it."""
    try:
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise RecipeError(f"{path}: {path.stat().st_size} bytes is not a recipe (over {MAX_RECIPE_BYTES})")
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise RecipeError(f"{path}: cannot read the recipe ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: not a text file ({e.reason} at byte {e.start})") from None


def _entries(data, src: _Source) -> list:
    if isinstance(data, dict):
        unknown = set(data) - {"stages", "name", "description"}
        if unknown:
            raise RecipeError(f"{src.name}: unknown top-level key(s) {sorted(unknown)}; expected 'stages'")
        data = data.get("stages")
    if not isinstance(data, list) or not data:
        raise RecipeError(f"{src.name}: expected a non-empty list of stages under 'stages'")
    return data


def _resolve_entry(index: int, entry, src: _Source, resolve_step) -> tuple:
    if not isinstance(entry, dict):
        raise RecipeError(f"{src.where(index)}: expected a table/object, got {type(entry).__name__}")
    if not isinstance(entry.get("stage"), str):
        raise RecipeError(f"{src.where(index)}: every entry needs stage = \"<name>\"")
    params = {k: v for k, v in entry.items() if k != "stage"}
    fail = lambda key, reason: RecipeError(f"{src.where(index, key)}: {reason}")  # noqa: E731
    try:
        return resolve_step(entry["stage"], params, fail)
    except RecipeError:
        raise
    except PipelineError as e:
        raise RecipeError(f"{src.where(index, 'stage')}: {e}") from None
    except ValueError as e:  # a stage refusing a parameter value (ParameterError, ...)
        raise RecipeError(f"{src.where(index)}: {e}") from None


def recipe_stages(source, resolve_step) -> tuple:
    """The stages of a recipe (a file path, TOML/JSON text, or the parsed dict/list), each entry
    resolved by `resolve_step(name, params, fail)` (pipeline.core's: Pipeline.from_recipe)."""
    data, src = _read(source)
    entries = _entries(data, src)
    try:
        return tuple(concat(_resolve_entry(i, e, src, resolve_step) for i, e in enumerate(entries)))
    except RecursionError:  # parameters nested deeper than the stages' checks can follow
        raise RecipeError(f"{src.name}: a parameter is nested too deeply") from None
