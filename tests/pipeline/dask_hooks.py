"""Hooks the Dask tests arm inside worker processes (with Client.run) to kill a worker for
real, once: the first caller to create the marker file dies with os._exit, as a process
killed by the system would (no cleanup, no exception). This module imports nothing heavy,
so arming costs a worker nothing."""
from __future__ import annotations

import os

_ARMED: dict = {}  # (module, name) -> the original, while a hook is armed in this process


def _claim(marker: str) -> bool:
    """True for the one caller, across processes, that creates the marker."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def _arm(module, name: str, make_hook, marker: str) -> None:
    original = _ARMED.setdefault((module, name), getattr(module, name))
    setattr(module, name, make_hook(original, marker))


def disarm() -> None:
    for (module, name), original in _ARMED.items():
        setattr(module, name, original)
    _ARMED.clear()


def _die_in_job(original, marker):
    def run_job(task):
        if _claim(marker):
            os._exit(17)  # the worker process dies in the middle of a job
        return original(task)

    return run_job


def _die_writing(original, marker):
    import numpy as np

    from ir.atomic import write_file
    from pipeline.diskcache import TMP_PREFIX

    def atomic_write_tensor(path, arr, ir_dtype):
        data = np.ascontiguousarray(arr).view(np.uint8).reshape(-1)
        if data.size > 4096 and _claim(marker):
            def half_then_die(f):
                f.write(data[: data.size // 2].tobytes())
                f.flush()
                os._exit(17)  # dies with half a tensor in its temporary file

            write_file(path, half_then_die, prefix=TMP_PREFIX, private=True)
        return original(path, arr, ir_dtype)

    return atomic_write_tensor


def kill_in_job(marker: str) -> None:
    from stages.compression import weights

    _arm(weights, "_run_job", _die_in_job, marker)  # what the task pickle names, looked up on unpickling


def kill_while_writing(marker: str) -> None:
    from pipeline import diskcache

    _arm(diskcache, "_atomic_write_tensor", _die_writing, marker)  # how a store writes each tensor
