"""The textual form of a pipeline: `name{key=value,...},name,...`.

Values are JSON (numbers, "strings", true/false/null, [lists], {objects});
a bare word such as `mode=linear_symmetric` is read as a string. Printing
(stages.spec, the one printer: Stage.spec) writes every value as JSON, so
`parse(print(p))` gives back the same steps.
"""
from __future__ import annotations

import json
import re
from typing import NamedTuple

from pipeline.errors import SpecError
from stages.spec import format_step, format_value  # noqa: F401  (the one printer; re-exported)

_NAME = re.compile(r"^[A-Za-z_][\w.+\-]*$")
_BARE = re.compile(r"^[A-Za-z_][\w.\-]*$")
_OPEN = {"{": "}", "[": "]"}


class StepSpec(NamedTuple):
    name: str
    params: dict


def _split_top_level(text: str, sep: str = ",") -> list:
    """Split on `sep` outside brackets and JSON strings."""
    parts, depth, start, in_str, escaped = [], [], 0, False, False
    for i, ch in enumerate(text):
        if in_str:
            escaped, in_str = (not escaped and ch == "\\"), in_str and (escaped or ch != '"')
            continue
        if ch == '"':
            in_str = True
        elif ch in _OPEN:
            depth.append(_OPEN[ch])
        elif ch in "}]":
            if not depth or depth.pop() != ch:
                raise SpecError(f"pipeline spec: unbalanced {ch!r} at position {i} in {text!r}")
        elif ch == sep and not depth:
            parts.append(text[start:i])
            start = i + 1
    if depth or in_str:
        raise SpecError(f"pipeline spec: unclosed {'string' if in_str else repr(depth[-1])} in {text!r}")
    parts.append(text[start:])
    return parts


def _value(key: str, raw: str, where: str):
    raw = raw.strip()
    try:
        return json.loads(raw)
    except RecursionError:
        raise SpecError(f"pipeline spec: {where}: parameter {key!r} is nested too deeply") from None
    except json.JSONDecodeError:
        if _BARE.match(raw):
            return raw
        raise SpecError(f"pipeline spec: {where}: parameter {key!r} has a value that is neither "
                        f"JSON nor a bare word: {raw!r}") from None


def _params(name: str, body: str) -> dict:
    params = {}
    for item in filter(str.strip, _split_top_level(body)):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise SpecError(f"pipeline spec: stage {name!r}: expected key=value, got {item.strip()!r}")
        if key in params:
            raise SpecError(f"pipeline spec: stage {name!r}: parameter {key!r} given twice")
        params[key] = _value(key, raw, f"stage {name!r}")
    return params


def parse_step(text: str) -> StepSpec:
    text = text.strip()
    name, brace, rest = text.partition("{")
    name = name.strip()
    if not _NAME.match(name):
        raise SpecError(f"pipeline spec: bad stage name {name!r} in {text!r}")
    if not brace:
        return StepSpec(name, {})
    if not rest.endswith("}"):
        raise SpecError(f"pipeline spec: stage {name!r}: parameters must end with '}}' in {text!r}")
    return StepSpec(name, _params(name, rest[:-1]))


def parse(text: str) -> list:
    """`"a,b{n=4}"` -> [StepSpec("a", {}), StepSpec("b", {"n": 4})]."""
    if not isinstance(text, str):
        raise SpecError(f"pipeline spec: expected a string, got {type(text).__name__}")
    items = _split_top_level(text)
    if any(not s.strip() for s in items) and text.strip():
        raise SpecError(f"pipeline spec: empty stage name in {text!r}")
    return [parse_step(s) for s in items if s.strip()]
