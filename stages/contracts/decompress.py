"""decompress_weights' promise: each new const is bit for bit the oracle's decoding."""
from __future__ import annotations

from ir import oracle
from stages.contracts.weights import WeightCase


def decompress_bound(case: WeightCase) -> list:
    """decompress_weights' promise: each new const is bit for bit the oracle's decoding."""
    why = oracle.differs(case.original, case.decoded, ulps=0)
    return [] if why is None else [f"weight {case.name!r}: decompressed value differs from the oracle: {why}"]
