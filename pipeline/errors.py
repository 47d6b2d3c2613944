"""The errors the pipeline raises: each a ValueError subclass naming what went wrong."""
from __future__ import annotations


class PipelineError(ValueError):
    """A pipeline was built or run wrongly; the message names the stage or key."""


class SpecError(PipelineError):
    """A textual pipeline spec does not parse or names something unknown."""


class RecipeError(PipelineError):
    """A TOML/JSON recipe is malformed; the message names the entry, key and line."""


class PresetError(PipelineError):
    """A preset name is unknown, or names a stage that does not exist (yet)."""


class StageFailed(PipelineError):
    """A stage raised while the pipeline ran it."""

    def __init__(self, message: str, step: int, stage, reproducer=None):
        super().__init__(message)
        self.step, self.stage, self.reproducer = step, stage, reproducer


class InvalidStepOutput(PipelineError):
    """A stage returned a program that breaks an IR rule (ir.validate between steps)."""

    def __init__(self, message: str, step: int, stage):
        super().__init__(message)
        self.step, self.stage = step, stage


class EquivalenceError(PipelineError):
    """verify="each" found a step whose output is not equivalent to its input."""

    def __init__(self, message: str, step: int, stage, report):
        super().__init__(message)
        self.step, self.stage, self.report = step, stage, report


class BrokenContractOutput(InvalidStepOutput, EquivalenceError):
    """verify="each": a stage returned a program that breaks an IR rule, so its step broke its
    contract (every contract promises a valid program). Both an InvalidStepOutput (as without
    verify) and an EquivalenceError (a failed check of verify="each", naming the step)."""

    def __init__(self, message: str, step: int, stage, report):
        PipelineError.__init__(self, message)
        self.step, self.stage, self.report = step, stage, report


class VerifyError(PipelineError):
    """verify() got options it cannot use (samples < 1, a negative tolerance) or programs it
    cannot sample (inputs larger than pipeline.verify.MAX_SAMPLE_ELEMENTS)."""


class UncacheableWarning(UserWarning):
    """A stage's parameters have no stable key, so it runs without the cache."""


class CacheCorruptionWarning(UserWarning):
    """A cache entry could not be read back intact; it is dropped and recomputed."""


class CacheWriteWarning(UserWarning):
    """A cache cannot be written (read-only, disk full); the run goes on without storing."""
