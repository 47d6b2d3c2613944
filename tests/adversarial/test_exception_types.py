"""Exception types (issue 12, item 6): what a hostile input makes the library raise is a
documented ValueError subclass naming the thing at fault, never a RecursionError,
MemoryError, NotImplementedError or RuntimeError from underneath."""
from __future__ import annotations

import numpy as np
import pytest

from ir.interpret import EvaluationError, evaluate
from ir.ops.registry import FOREIGN, register_foreign
from ir.text import InvalidProgramText, TextParseError, parse_program, print_program
from pipeline import Pipeline, RecipeError, verify
from tests.adversarial import generators as gen

FOREIGN_TEXT = """func main(%x: fp32[1,4]) opset none {
  %y: fp32[1,4] = hostile.Boom(x=%x)
  return (%y)
}
"""


@pytest.fixture
def hostile_evaluator():
    """A format's evaluator that raises what onnx's reference evaluator raises on models it
    cannot run (NotImplementedError for unknown domains, RuntimeError for an empty If)."""
    raised = {"kind": NotImplementedError}

    def compute(op, vals, out_types):
        raise raised["kind"]("Node type 'Boom' from domain 'hostile' is unknown")

    register_foreign("hostile", compute)
    yield raised
    FOREIGN.pop("hostile", None)


@pytest.mark.parametrize("kind", [NotImplementedError, RuntimeError, KeyError])
def test_a_foreign_evaluator_failure_is_an_evaluation_error(hostile_evaluator, kind):
    hostile_evaluator["kind"] = kind
    p = parse_program(FOREIGN_TEXT)
    with pytest.raises(EvaluationError, match="hostile.Boom 'y'"):
        evaluate(p, {"x": np.zeros((1, 4), np.float32)})


def test_verify_reports_a_reference_it_cannot_run(hostile_evaluator):
    a, b = parse_program(FOREIGN_TEXT), parse_program(FOREIGN_TEXT)
    report = verify(a, b, samples=4)
    assert not report.passed and "fails on every generated input" in report.reason
    assert "Boom" in report.reason


# ---- the text form --------------------------------------------------------------------------

def _lines(program_text: str, old: str, new: str) -> str:
    assert old in program_text
    return program_text.replace(old, new, 1)


@pytest.fixture(scope="module")
def text():
    return print_program(gen.small_program(width=4))


def test_text_nested_too_deeply(text):
    deep = "[" * 5000 + "]" * 5000
    bad = _lines(text, "return", f"%q: fp32[1,4] = relu(x=%x) [k={deep}]\n  return")
    with pytest.raises(TextParseError, match="nested too deeply"):
        parse_program(bad)


def test_text_numpy_dtype_bomb(text):
    bad = _lines(text, "return", '%q: string[1] = const !"S2000000000" {"a"}\n  return')
    with pytest.raises(TextParseError, match="S2000000000"):
        parse_program(bad)


def test_text_that_parses_to_an_invalid_program(text):
    bad = text.replace("= relu(", "= frobnicate(", 1)
    with pytest.raises(InvalidProgramText, match="frobnicate"):
        parse_program(bad)


def test_text_with_an_out_of_range_value(text):
    bad = _lines(text, "return", "%q: int8[1] = const int8[1]{300}\n  return")
    with pytest.raises(TextParseError, match="line"):
        parse_program(bad)


# ---- recipes --------------------------------------------------------------------------------------

def test_recipe_nested_too_deeply(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text(gen.nested_recipe())
    with pytest.raises(RecipeError, match="deep.json.*nested too deeply"):
        Pipeline.from_recipe(path)


def test_recipe_that_cannot_be_read_is_named(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"[[stages]]\nstage = '\xe9'\n")
    with pytest.raises(RecipeError, match="latin1.toml"):
        Pipeline.from_recipe(path)
    directory = tmp_path / "a_directory.toml"
    directory.mkdir()
    with pytest.raises(RecipeError, match="a_directory.toml"):
        Pipeline.from_recipe(directory)
