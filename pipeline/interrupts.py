"""Ctrl-C for the command line: noted always, raised only where it is safe.

    install()            SIGINT sets a flag and raises KeyboardInterrupt (the CLI's main calls
                         it; returns a function that restores the previous handler)
    with deferred():     inside, SIGINT only sets the flag: a rename pair, a scratch
                         directory's creation and registration, the final commit
    interrupted()        whether SIGINT arrived at any time since install()

Why a flag as well as the exception: a library may swallow KeyboardInterrupt (a bare
`except:`, C code that clears the error) or turn it into another error, and the run would
then go on to write its outputs; the flag is checked before anything is committed, so an
interrupted run never writes, whatever became of its exception. Without install() (library
use) deferred() changes nothing and SIGINT behaves as Python's default.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

_state = {"installed": False, "interrupted": False, "depth": 0}
_lock = threading.Lock()


def _on_sigint(signum, frame):
    _state["interrupted"] = True
    if _state["depth"] == 0:
        raise KeyboardInterrupt


def install():
    """Route SIGINT through the flag; returns the restore function (a no-op off the main thread,
    where signal handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGINT, _on_sigint)
    _state.update(installed=True, interrupted=False, depth=0)

    def restore():
        signal.signal(signal.SIGINT, previous)
        _state.update(installed=False, depth=0)

    return restore


def interrupted() -> bool:
    return _state["interrupted"]


@contextmanager
def deferred(raise_after: bool = False):
    """SIGINT inside the block only sets the flag; with `raise_after`, an interrupt that
    arrived during the block is raised when it ends."""
    with _lock:
        _state["depth"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["depth"] -= 1
            outermost = _state["depth"] == 0
    if raise_after and outermost and _state["installed"] and _state["interrupted"]:
        raise KeyboardInterrupt


def hold() -> None:
    """From now until the handler is restored, SIGINT is only noted (the command is past the
    point where stopping it could leave less than all of its outputs)."""
    with _lock:
        _state["depth"] += 1
