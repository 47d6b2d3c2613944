"""Pure Program -> Program stages, each registered by name."""
from stages.base import (REGISTRY, Option, Stage, StageContext, StageError, StageResult, stage)


def _load_all():
    # importing the stage packages registers their stages
    import stages.calibration  # noqa: F401
    import stages.cleanup  # noqa: F401
    import stages.compression  # noqa: F401
    import stages.quantization  # noqa: F401


def names() -> list:
    _load_all()
    return sorted(REGISTRY)


def get(name: str) -> Stage:
    _load_all()
    try:
        return REGISTRY[name]
    except KeyError:
        raise StageError(f"unknown stage {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


__all__ = ["Option", "Stage", "StageContext", "StageError", "StageResult", "stage", "names", "get"]
