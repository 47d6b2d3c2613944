"""Ctrl-C (issue 12, item 5): at any moment, `weightpress: interrupted` on one line, exit
code 130, and no output left (nothing new, nothing replaced, no .NAME.old-PID, no scratch
directory) -- also when a library swallows the KeyboardInterrupt or turns it into another
error, and in the first second of imports. In-process tests send SIGINT to the process
itself at chosen points (deterministic); two subprocess tests cover the real program."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cli import main
from stages.base import REGISTRY, Stage
from tests.adversarial import generators as gen

REPO = Path(__file__).resolve().parents[2]
INTERRUPTED = 130


def _sigint():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.5)  # the handler runs at the next bytecode: long before this ends


def _stage(name, fn):
    def run(program, *, context=None):
        fn()
        return program
    REGISTRY[name] = Stage(name, run, "1")
    return name


@pytest.fixture
def interrupting_stages():
    def swallow():
        try:
            _sigint()
        except KeyboardInterrupt:  # what a careless library does (a bare except, C code)
            pass

    def transform():
        try:
            _sigint()
        except KeyboardInterrupt:  # the "internal error: NameError"
            raise NameError("name '_mil_program' is not defined") from None

    names = [_stage("test_swallows_ctrl_c", swallow), _stage("test_ctrl_c_to_name_error", transform),
             _stage("test_plain_ctrl_c", _sigint)]
    yield names
    for n in names:
        REGISTRY.pop(n, None)


@pytest.fixture
def model(valid_wpz, tmp_path):
    path = tmp_path / "m.wpz"
    path.write_bytes(valid_wpz.read_bytes())
    return path


def _interrupted(capsys, argv):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == INTERRUPTED, err
    assert err == "weightpress: interrupted\n", err


def _left(directory: Path, *inputs) -> list:
    return sorted(p.name for p in directory.iterdir() if p.name not in inputs)


@pytest.mark.parametrize("which", [0, 1, 2])
def test_an_interrupt_stops_the_run_whatever_a_library_does_with_it(capsys, model, tmp_path,
                                                                    interrupting_stages, which):
    out = tmp_path / "out.wpz"
    _interrupted(capsys, ["compress", model, "-o", out, "--pipeline", interrupting_stages[which], "-q"])
    assert _left(tmp_path, "m.wpz") == []


def _report_interrupts(monkeypatch):
    """SIGINT while the report is rendered: after the model output is in place."""
    from pipeline import report

    real = report.render_report

    def render(*a, **k):
        _sigint()
        return real(*a, **k)
    monkeypatch.setattr(report, "render_report", render)


def test_an_interrupt_after_the_model_is_written_puts_the_old_one_back(capsys, model, tmp_path, monkeypatch):
    out = tmp_path / "out.wpz"
    out.write_bytes(b"the previous output")
    _report_interrupts(monkeypatch)
    _interrupted(capsys, ["compress", model, "-o", out, "--quantize", "int8", "--report", tmp_path / "r.md", "-q"])
    assert out.read_bytes() == b"the previous output"
    assert _left(tmp_path, "m.wpz") == ["out.wpz"]


def test_an_interrupt_while_outputs_move_is_held_until_the_pair_is_whole(capsys, model, tmp_path, monkeypatch):
    """SIGINT between the two renames of a replacement: the pair completes, then the run
    stops and everything is put back."""
    import pipeline.models as models

    out = tmp_path / "out.wpz"
    out.write_bytes(b"the previous output")
    real = models._move_into_place

    def move(src, dst, tx=None):
        os.kill(os.getpid(), signal.SIGINT)
        real(src, dst, tx)
    monkeypatch.setattr(models, "_move_into_place", move)
    _interrupted(capsys, ["compress", model, "-o", out, "--quantize", "int8", "-q"])
    assert out.read_bytes() == b"the previous output"
    assert _left(tmp_path, "m.wpz") == ["out.wpz"]


# ---- a directory output (what an .mlpackage is), with a fast stand-in writer ----------------

def write_directory(program, path):
    Path(path).mkdir()
    (Path(path) / "model.txt").write_text(program.digest)


@pytest.fixture
def directory_format(monkeypatch):
    import pipeline.models as models

    monkeypatch.setitem(models.FORMATS, ".pkgdir", models.Format("directory", __name__, "write_directory",
                                                                 "write_directory"))


def test_a_directory_output_is_replaced_in_one_step(capsys, model, tmp_path, directory_format):
    out = tmp_path / "out.pkgdir"
    out.mkdir()
    (out / "old.txt").write_text("previous")
    assert main(["compress", str(model), "-o", str(out), "--quantize", "int8", "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["model.txt"]
    assert _left(tmp_path, "m.wpz") == ["out.pkgdir"]  # no .out.pkgdir.old-PID


def test_an_interrupted_directory_output_is_put_back(capsys, model, tmp_path, directory_format, monkeypatch):
    out = tmp_path / "out.pkgdir"
    out.mkdir()
    (out / "old.txt").write_text("previous")
    _report_interrupts(monkeypatch)
    _interrupted(capsys, ["compress", model, "-o", out, "--quantize", "int8", "--report", tmp_path / "r.md", "-q"])
    assert [p.read_text() for p in out.iterdir()] == ["previous"]
    assert _left(tmp_path, "m.wpz") == ["out.pkgdir"]


def test_stale_swaps_of_dead_runs_are_removed(capsys, model, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / f".out.wpz.old-{dead}").write_text("left by a killed run")
    (tmp_path / f".weightpress-{dead}-abcd").mkdir()
    assert main(["compress", str(model), "-o", str(tmp_path / "out.wpz"), "--quantize", "int8", "-q"]) == 0
    assert _left(tmp_path, "m.wpz") == ["out.wpz"]


# ---- the real program ------------------------------------------------------------------------

def _start(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("WEIGHTPRESS_DEBUG", None)
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _numpy_loaded(pid: int) -> bool:
    try:
        return "_multiarray_umath" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_during_the_imports_is_one_line(model, tmp_path):
    """The issue: in the first second (imports) a raw KeyboardInterrupt traceback. SIGINT
    as soon as numpy is being loaded (the heavy imports), which is inside main() now."""
    proc = _start("compress", model, "-o", tmp_path / "out.wpz", "--quantize", "int8", cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not _numpy_loaded(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == INTERRUPTED, err
    assert err == "weightpress: interrupted\n"
    assert _left(tmp_path, "m.wpz") == []


def test_ctrl_c_at_moments_through_a_run(model, tmp_path):
    """SIGINT at spread moments of a real run over an existing output: each run either
    stopped (130, the old output untouched) or had finished (0, the new output whole);
    never anything else, and nothing left beside it."""
    out = tmp_path / "out.wpz"
    from ir.serialize import load

    started = time.monotonic()  # how long a whole run takes on this machine, now
    out.write_bytes(b"the previous output")
    assert _start("compress", model, "-o", out, "--quantize", "int8", "-q", cwd=tmp_path).wait(timeout=120) == 0
    whole = time.monotonic() - started
    outcomes = set()
    for delay in (0.4 * whole, 0.85 * whole):
        out.write_bytes(b"the previous output")
        proc = _start("compress", model, "-o", out, "--quantize", "int8", "-q", cwd=tmp_path)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _o, err = proc.communicate(timeout=120)
        assert "Traceback" not in err
        if proc.returncode == INTERRUPTED:
            assert err == "weightpress: interrupted\n" and out.read_bytes() == b"the previous output"
        else:
            assert proc.returncode == 0, err
            load(out)  # whole and valid
        outcomes.add(proc.returncode)
        assert _left(tmp_path, "m.wpz") == ["out.wpz"]
    assert INTERRUPTED in outcomes


def test_verify_leaves_nothing_in_the_current_directory(model, tmp_path):
    """hypothesis caches what it learns in ./.hypothesis unless told otherwise."""
    proc = _start("verify", model, model, "--samples", "3", cwd=tmp_path)
    proc.communicate(timeout=120)
    assert proc.returncode == 0
    assert _left(tmp_path, "m.wpz") == []


def test_a_directory_in_the_output_s_place_is_never_replaced(capsys, model, tmp_path):
    out = tmp_path / "out.wpz"
    (out / "precious").mkdir(parents=True)
    code = main(["compress", str(model), "-o", str(out), "--quantize", "int8", "-q"])
    err = capsys.readouterr().err
    assert code == 1 and "is a directory" in err and len(err.strip().splitlines()) == 1
    assert (out / "precious").is_dir() and _left(tmp_path, "m.wpz") == ["out.wpz"]
