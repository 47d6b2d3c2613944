"""Error types raised by the numeric compression kernels."""


class CompressionError(ValueError):
    """The input cannot be compressed as asked (bad values, shape, dtype or option)."""


class NotCompressible(CompressionError):
    """The input is valid but the scheme does not apply to it (coremltools skips such weights).

    Example: a block size that does not divide the axis. A caller that wants coremltools'
    behaviour catches this subclass and leaves the weight uncompressed.
    """


def message(reason: str, name: str | None = None) -> str:
    """Prefix ``reason`` with the weight name when the caller gave one."""
    return f"{name}: {reason}" if name else reason
