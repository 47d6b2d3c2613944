"""Shared fixtures of the adversarial corpus."""
from __future__ import annotations

import contextlib
import os
import sys

import pytest

from tests.adversarial import generators as gen


@pytest.fixture(scope="session")
def valid_wpz(tmp_path_factory):
    """A small valid .wpz (one 64x64 weight, a bias)."""
    from ir.serialize import save

    path = tmp_path_factory.mktemp("valid") / "small.wpz"
    save(gen.small_program(), path)
    return path


def _vm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize")


@contextlib.contextmanager
def address_space_cap(extra_bytes: int):
    """Let the process map at most `extra_bytes` more while the block runs (RLIMIT_AS), so a
    loader that allocates what a hostile file declares fails with MemoryError here instead
    of taking the machine's memory. Linux only."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_vm_bytes() + extra_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux's")
as_root = os.name == "posix" and os.geteuid() == 0
