"""Bad input at the shell: one line on stderr, a non-zero exit code, no traceback,
the input untouched and no output (not even a partial one) left behind."""
from __future__ import annotations

import importlib.util

import pytest

from tests.cli.conftest import assert_one_line_error, leftovers, run_cli, snapshot, stage_available

needs_recipes = pytest.mark.skipif(importlib.util.find_spec("pipeline.recipe") is None,
                                   reason="pipeline.recipe not written yet")
needs_quantize = pytest.mark.skipif(not stage_available("affine_quantize_weights"),
                                    reason="affine_quantize_weights not written yet")


def _compress_fails(model, tmp_path, *options, fragments=(), code=None):
    before = snapshot(model)
    out = tmp_path / "out.wpz"
    proc = run_cli("compress", model, "-o", out, *options)
    assert_one_line_error(proc, *fragments, code=code)
    assert snapshot(model) == before
    assert not out.exists()
    assert leftovers(tmp_path) == []
    return proc


def test_missing_model_file(tmp_path):
    missing = tmp_path / "nope.wpz"
    for args in (("inspect", missing), ("diff", missing, missing), ("verify", missing, missing),
                 ("compress", missing, "-o", tmp_path / "o.wpz", "--quantize", "int8")):
        proc = run_cli(*args)
        assert_one_line_error(proc, "nope.wpz", "no such file", code=1)
    assert list(tmp_path.iterdir()) == []


@needs_quantize
def test_damaged_native_file(model, tmp_path):
    damaged = tmp_path / "damaged.wpz"
    damaged.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # truncated
    garbage = tmp_path / "garbage.wpz"
    garbage.write_bytes(b"not a model at all\n" * 10)
    for bad in (damaged, garbage):
        before = snapshot(bad)
        assert_one_line_error(run_cli("inspect", bad), bad.name, "cannot read", code=1)
        _compress_fails(bad, tmp_path, "--quantize", "int8", fragments=(bad.name, "cannot read"), code=1)
        assert snapshot(bad) == before


@pytest.mark.skipif(importlib.util.find_spec("ir.formats.onnx") is None, reason="ONNX importer not written yet")
def test_damaged_onnx_file(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07garbage-not-protobuf" * 3)
    before = snapshot(bad)
    assert_one_line_error(run_cli("inspect", bad), "broken.onnx", code=1)
    assert snapshot(bad) == before


def test_unknown_model_extension(model, tmp_path):
    odd = tmp_path / "model.bin"
    odd.write_bytes(model.read_bytes())
    assert_one_line_error(run_cli("inspect", odd), "unknown model format", code=1)
    proc = run_cli("compress", model, "-o", tmp_path / "out.txt", "--quantize", "int8")
    assert_one_line_error(proc, "out.txt", "unknown model format")
    assert not (tmp_path / "out.txt").exists()


def test_unknown_preset(model, tmp_path):
    _compress_fails(model, tmp_path, "--preset", "int3-magic", fragments=("int3-magic", "preset"), code=1)


@needs_recipes
def test_recipe_that_is_not_toml(model, tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text("this is = = not toml [\n")
    _compress_fails(model, tmp_path, "--recipe", recipe, fragments=("recipe",), code=1)


@needs_recipes
def test_recipe_with_unknown_stage_parameter(model, tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text("[[stages]]\nstage = \"dead_code_elimination\"\nflavour = \"mint\"\n")
    proc = _compress_fails(model, tmp_path, "--recipe", recipe, code=1)
    assert "flavour" in proc.stderr


def test_missing_recipe_file(model, tmp_path):
    _compress_fails(model, tmp_path, "--recipe", tmp_path / "none.toml", fragments=("none.toml",), code=2)


def test_unknown_option(model, tmp_path):
    proc = _compress_fails(model, tmp_path, "--quantize", "int8", "--turbo", fragments=("--turbo",), code=2)
    assert "usage:" not in proc.stderr
    assert_one_line_error(run_cli("frobnicate"), "frobnicate", code=2)


def test_bad_option_value(model, tmp_path):
    _compress_fails(model, tmp_path, "--palettize", "5", fragments=("--palettize",), code=2)
    _compress_fails(model, tmp_path, "--sparsify", "150", fragments=("--sparsify",), code=2)


def test_conflicting_or_missing_compression_choice(model, tmp_path):
    _compress_fails(model, tmp_path, fragments=("exactly one",), code=2)
    _compress_fails(model, tmp_path, "--preset", "int8", "--quantize", "int8", fragments=("exactly one",), code=2)


def test_output_onto_input_is_refused(model, tmp_path):
    before = snapshot(model)
    proc = run_cli("compress", model, "-o", model, "--quantize", "int8")
    assert_one_line_error(proc, "overwrite the input", code=2)
    assert snapshot(model) == before


def test_output_directory_missing(model, tmp_path):
    proc = run_cli("compress", model, "-o", tmp_path / "no" / "such" / "out.wpz", "--quantize", "int8")
    assert_one_line_error(proc, "does not exist", code=2)


def test_failed_compress_keeps_an_existing_output_intact(model, tmp_path):
    out = tmp_path / "out.wpz"
    out.write_bytes(b"previous result")
    proc = run_cli("compress", model, "-o", out, "--preset", "no-such-preset")
    assert_one_line_error(proc, "no-such-preset")
    assert out.read_bytes() == b"previous result"
    assert leftovers(tmp_path) == []


def test_debug_mode_shows_the_traceback(tmp_path):
    proc = run_cli("inspect", tmp_path / "nope.wpz", env={"WEIGHTPRESS_DEBUG": "1"})
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "ModelFileError" in proc.stderr


@pytest.mark.skipif(importlib.util.find_spec("coremltools") is None, reason="coremltools not installed")
def test_damaged_coreml_package_is_one_quiet_line(tmp_path):
    bad = tmp_path / "broken.mlpackage"
    bad.mkdir()
    (bad / "Manifest.json").write_text("{ not json")
    proc = run_cli("inspect", bad)
    # coremltools' own banners and warnings are kept off the terminal too
    assert_one_line_error(proc, "broken.mlpackage", "Core ML", code=1)
    assert proc.stdout == ""


def test_a_closed_pipe_is_silent(model):
    """`weightpress inspect m | head -1`: the reader stops early; no error line, no traceback."""
    import subprocess
    import sys

    from tests.cli.conftest import REPO

    env = {**__import__("os").environ, "PYTHONPATH": str(REPO)}
    inspect = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "inspect", str(model)], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    inspect.stdout.close()  # nobody reads
    err = inspect.stderr.read().decode()
    inspect.wait(timeout=60)
    assert err == "", err
