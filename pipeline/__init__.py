"""Composition and everything about running stages: Pipeline, run -> Trace,
caches, replay, diff, verify, executors (and the CLI in pipeline.cli)."""
from pipeline import presets
from pipeline.cache import MemoryCache
from pipeline.combinators import repeat_until_fixed_point
from pipeline.core import Pipeline
from pipeline.diskcache import DiskCache
from pipeline.errors import (CacheCorruptionWarning, CacheWriteWarning, EquivalenceError, PipelineError, PresetError,
                             RecipeError, SpecError, StageFailed, UncacheableWarning)
from pipeline.instruments import CrashReproducer, PrintIRAfterChange, Timing
from pipeline.trace import Step, Trace
from pipeline.verify import VerificationReport, verify

__all__ = ["Pipeline", "Trace", "Step", "MemoryCache", "DiskCache", "verify", "VerificationReport",
           "presets", "repeat_until_fixed_point", "PipelineError", "SpecError", "RecipeError",
           "PresetError", "StageFailed", "EquivalenceError", "UncacheableWarning",
           "CacheCorruptionWarning", "CacheWriteWarning", "Timing", "PrintIRAfterChange", "CrashReproducer"]
