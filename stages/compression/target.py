"""set_target: raise a program's Core ML deployment target (the explicit opt-in to newer forms).

A model keeps its deployment target through every stage and into the file it
is written to: an iOS17 model compresses to the forms iOS17 has and is written
as an iOS17 model (see forms.py). ``set_target{target="iOS18"}`` (the command
line's ``--target iOS18``, or an entry ``stage = "set_target"`` in a recipe) is
how a user asks for a newer one: every function's opset becomes the target and
the compressed weights it already has take that target's forms (exactly: the
same dense values), so the stages after it emit and see only the newer forms.

It raises, never lowers, the target of a model read from Core ML (its ops were
converted for the target it has); a program from elsewhere (ONNX, the builder)
takes any target. A target equal to the current one changes nothing.
"""
from __future__ import annotations

from pyrsistent import freeze

from ir.core import ios_version
from ir.formats.coreml import targets
from ir.formats.coreml.opforms import CoreMLExportError, for_target
from ir.rewrite import map_functions
from stages.base import DEFAULT_CONTEXT, StageResult
from stages.contracts import exact
from stages.compression.checked import ParameterError, compression_stage


def check_target(params: dict) -> None:
    t = params.get("target")
    if t is not None and t not in targets.TARGETS:
        raise ParameterError(f"target={t!r} is not a Core ML deployment target; one of {', '.join(targets.ORDER)}")


@compression_stage("set_target", check_target, contract=exact("the same dense values in the newer forms"))
def set_target(program, *, target=None, context=DEFAULT_CONTEXT):
    """Every function's deployment target raised to `target` (see the module docstring)."""
    if target is None:
        raise ParameterError(f"set_target needs a target, one of {', '.join(targets.ORDER)}")
    check_target({"target": target})
    from_coreml = program.attrs.get("source_format") == "coreml"
    changed = {}

    def retarget(fn):
        if fn.opset == target:
            return fn
        old = ios_version(fn.opset)
        if from_coreml and old is not None and old > ios_version(target):
            raise ParameterError(f"set_target: function {fn.name!r} targets {fn.opset}; a Core ML model's target "
                                 f"can be raised, not lowered to {target}")
        try:
            new = for_target(fn.replace(opset=target), target)
        except CoreMLExportError as e:
            raise ParameterError(f"set_target: {e}") from None
        changed[fn.name] = freeze({"from": fn.opset, "to": target})
        return new

    out = map_functions(program, retarget)
    return StageResult(out, freeze({"functions": changed}))
