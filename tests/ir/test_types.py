"""Value types: tensors of unknown rank, symbolic dims, sequences, maps and optionals
are represented exactly, print and parse back, digest and serialize."""
import os
import tempfile

import numpy as np
import pytest
from hypothesis import given, strategies as st

from ir.core import Block, Function, Op, Program, Var
from ir.digest import program_digest
from ir.interpret import EvaluationError, conform_value
from ir.serialize import load, save
from ir.text import parse_program, print_program
from ir.types import (MapType, OptionalType, SequenceType, TensorType, TypeSyntaxError, parse_type)

DTYPES = st.sampled_from(["fp32", "fp16", "int64", "int8", "bool", "string", "uint4"])
DIMS = st.one_of(st.integers(0, 64), st.sampled_from(["?", "N", "batch", "seq_len"]))
TENSORS = st.builds(TensorType.of, DTYPES, st.one_of(st.none(), st.lists(DIMS, max_size=4).map(tuple)))


def _composite(inner):
    return st.one_of(st.builds(SequenceType, inner), st.builds(OptionalType, inner),
                     st.builds(MapType, st.sampled_from(["int64", "string"]), inner))


TYPES = st.recursive(TENSORS, _composite, max_leaves=4)


@given(TYPES)
def test_text_form_parses_back_to_the_same_type(t):
    back = parse_type(str(t))
    assert back == t and type(back) is type(t) and hash(back) == hash(t)


def test_kinds_with_equal_contents_are_different_types():
    elem = TensorType("fp32", None)
    assert SequenceType(elem) != OptionalType(elem)
    assert len({SequenceType(elem), OptionalType(elem)}) == 2


def test_unknown_rank_is_not_guessed():
    t = TensorType.of("fp32", None)
    assert t.rank is None and not t.is_static and str(t) == "fp32[*]"
    assert TensorType.of("fp32", ("?",)).rank == 1


def test_composite_types_answer_no_tensor_questions():
    t = parse_type("seq<map<int64,fp32[]>>")
    assert t.rank is None and t.shape is None and not t.is_tensor and t.dtype == "sequence"
    with pytest.raises(TypeError, match="not a tensor type"):
        t.dt


@pytest.mark.parametrize("text", ["fp32[", "seq<fp32[1]", "nope[1]", "map<int64>", "fp32[1] x"])
def test_bad_type_text_is_a_value_error(text):
    with pytest.raises(TypeSyntaxError):
        parse_type(text)


def _passthrough_program(t):
    """main(%x: t) -> %x, with an identity foreign op in between."""
    x = Var("x", t)
    y = Var("y", t)
    op = Op.make("test.identity", "id0", {"in0": x}, (y,))
    return Program.make([Function("main", Block.make((x,), (op,), (y,)), "onnx")])


@given(TYPES)
def test_programs_with_any_type_print_parse_and_serialize(t):
    prog = _passthrough_program(t)
    again = parse_program(print_program(prog))
    assert again.main.inputs[0].type == t and again.digest == prog.digest
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "p.wpz")
        save(prog, path)
        assert load(path).main.outputs[0].type == t


def test_digest_tells_types_apart():
    a = _passthrough_program(SequenceType(TensorType("fp32", None)))
    b = _passthrough_program(OptionalType(TensorType("fp32", None)))
    c = _passthrough_program(TensorType("fp32", None))
    assert len({program_digest(p) for p in (a, b, c)}) == 3


def test_runtime_values_conform_to_their_types():
    seq = SequenceType(TensorType("fp32", (2,)))
    out = conform_value(seq, [np.ones(2, np.float64), np.array([1, 2])], "v")
    assert [a.dtype for a in out] == [np.float32, np.float32]
    assert conform_value(OptionalType(seq), None, "v") is None
    m = conform_value(MapType("int64", TensorType("fp32", ())), {1: 0.5}, "v")
    assert m == {1: np.float32(0.5)}
    # a sequence's elements may differ in shape (inference gives it one element type)
    assert [a.shape for a in conform_value(seq, [np.ones(2), np.ones(3)], "v")] == [(2,), (3,)]
    with pytest.raises(EvaluationError, match=r"v has shape \(3,\)"):
        conform_value(TensorType("fp32", (2,)), np.ones(3), "v")
    with pytest.raises(EvaluationError, match="expected a sequence"):
        conform_value(seq, np.ones(2), "v")
    with pytest.raises(EvaluationError, match="expected a tensor"):
        conform_value(TensorType("fp32", None), [np.ones(2)], "v")
    # unknown rank accepts any rank
    assert conform_value(TensorType("fp32", None), np.ones((2, 3, 4)), "v").shape == (2, 3, 4)
