"""Composition and everything about running stages: Pipeline, run -> Trace,
caches, replay, diff, verify, executors (and the CLI in pipeline.cli).

The names below are imported on first use (PEP 562), so that `weightpress`
reaches its Ctrl-C handling in milliseconds instead of after a second of
imports (pipeline.cli imports this package first), and `--help` is instant.
`from pipeline import Pipeline` and `pipeline.Pipeline` work as before.
"""
import importlib
import sys
import types

# public name -> the module that defines it
_EXPORTS = {
    "MemoryCache": "pipeline.cache",
    "repeat_until_fixed_point": "pipeline.combinators",
    "Pipeline": "pipeline.core",
    "load_trace": "pipeline.core",
    "DiskCache": "pipeline.diskcache",
    "CacheCorruptionWarning": "pipeline.errors",
    "CacheWriteWarning": "pipeline.errors",
    "EquivalenceError": "pipeline.errors",
    "PipelineError": "pipeline.errors",
    "PresetError": "pipeline.errors",
    "RecipeError": "pipeline.errors",
    "SpecError": "pipeline.errors",
    "StageFailed": "pipeline.errors",
    "UncacheableWarning": "pipeline.errors",
    "VerifyError": "pipeline.errors",
    "CrashReproducer": "pipeline.instruments",
    "PrintIRAfterChange": "pipeline.instruments",
    "Timing": "pipeline.instruments",
    "Step": "pipeline.trace",
    "Trace": "pipeline.trace",
    "VerificationReport": "pipeline.verify",
    "verify": "pipeline.verify",
}

__all__ = ["Pipeline", "Trace", "Step", "load_trace", "MemoryCache", "DiskCache", "verify", "VerificationReport",
           "presets", "repeat_until_fixed_point", "PipelineError", "SpecError", "RecipeError",
           "PresetError", "StageFailed", "EquivalenceError", "UncacheableWarning", "VerifyError",
           "CacheCorruptionWarning", "CacheWriteWarning", "Timing", "PrintIRAfterChange", "CrashReproducer"]


def __getattr__(name):
    if name == "presets":
        return importlib.import_module("pipeline.presets")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Importing the submodule pipeline.verify sets the package attribute `verify` to that
    module; the public `pipeline.verify` is the function (as when this package imported it
    eagerly), so a submodule never replaces an exported name of its own."""

    def __setattr__(self, name, value):
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == value.__name__:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
