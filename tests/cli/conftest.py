"""Helpers for the command-line tests: run `python -m pipeline.cli` in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args, cwd=None, env=None, timeout=120) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    full_env.pop("WEIGHTPRESS_DEBUG", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=cwd or REPO,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def snapshot(path: Path) -> tuple:
    """What must not change about an input file: its bytes and its mtime."""
    st = path.stat()
    return path.read_bytes(), st.st_mtime_ns


def leftovers(directory: Path) -> list:
    """Scratch entries an interrupted atomic write would leave behind."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".weightpress-"))


def assert_one_line_error(proc, *fragments, code=None):
    assert proc.returncode != 0, proc
    if code is not None:
        assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("weightpress: error: "), lines[0]
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def stage_available(name: str) -> bool:
    import stages

    return name in stages.names()


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory) -> Path:
    """The embedded demo MLP written as a native .wpz file."""
    from pipeline import demo
    from pipeline.models import save_model

    path = tmp_path_factory.mktemp("models") / "digits.wpz"
    save_model(demo.build_program(), path)
    return path


@pytest.fixture()
def model(demo_model, tmp_path) -> Path:
    """A private copy of the demo model in a fresh directory."""
    path = tmp_path / "model.wpz"
    path.write_bytes(demo_model.read_bytes())
    return path
