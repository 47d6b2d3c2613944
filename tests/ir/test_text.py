import numpy as np
import pytest
from hypothesis import given, strategies as st

from ir.builder import TensorSpec, program
from ir.core import Block, Function, Op, Program, TensorType, Var, frozen_array
from ir.equality import assert_programs_equal
from ir.interpret import evaluate
from ir.serialize import tensors_of
from ir.text import TextParseError, parse_program, print_program
from tests.ir.programs import inputs_for, programs, sample_program


@program(inputs={"x": TensorSpec((1, 2), "fp32")})
def small(b, x):
    w = b.const(np.array([[0.5, -1.0], [2.0, 0.25], [1e-8, 3.0]], np.float32), name="w")
    return b.relu(x=b.linear(x=x, weight=w, name="y"), name="r")


def test_print_is_one_op_per_line_in_order():
    assert print_program(small) == (
        "func main(%x: fp32[1,2]) opset iOS18 {\n"
        "  %w: fp32[3,2] = const {0.5, -1.0, 2.0, 0.25, 9.99999993922529e-09, 3.0}\n"
        "  %y: fp32[1,3] = linear(x=%x, weight=%w)\n"
        "  %r: fp32[1,3] = relu(x=%y)\n"
        "  return (%r)\n"
        "}\n")


def test_round_trip_inline_is_exact():
    text = print_program(small)
    back = parse_program(text)
    assert back.digest == small.digest
    assert_programs_equal(back, small)
    assert print_program(back) == text


def test_large_const_is_printed_by_digest_and_needs_its_tensor():
    p = sample_program()
    text = print_program(p)
    w = p.main.ops[0].attrs["val"]
    from ir.digest import tensor_digest
    assert f"%w: fp32[20,4] = const sha256:{tensor_digest(w)}" in text
    with pytest.raises(TextParseError, match=rf"line 3: tensor sha256:{tensor_digest(w)} \(fp32\[20, 4\]\)"):
        parse_program(text)
    back = parse_program(text, tensors={tensor_digest(w): np.array(w)})  # a writeable copy is fine
    assert back.digest == p.digest
    assert not back.main.ops[0].attrs["val"].flags.writeable


def test_supplied_tensor_must_match():
    p = sample_program()
    text = print_program(p)
    d = next(iter(k for k, v in tensors_of(p).items() if v.size == 80))
    with pytest.raises(TextParseError, match="supplied array is float32"):
        parse_program(text, tensors={d: np.zeros((20, 5), np.float32)})
    with pytest.raises(TextParseError, match="different digest"):
        parse_program(text, tensors={d: np.zeros((20, 4), np.float32)})


def test_everything_inline_with_a_high_limit():
    p = sample_program()
    text = print_program(p, inline_limit=1000)
    assert "sha256" not in text
    back = parse_program(text)
    assert back.digest == p.digest
    assert_programs_equal(back, p)


def test_nested_blocks_are_indented_and_functions_carry_their_opset():
    text = print_program(sample_program())
    assert "  %cond_0: fp32[1,20] = cond(pred=%p) {\n    block() {\n      %relu_0: fp32[1,20]" in text
    assert "func other(%u: fp32[3]) opset iOS16 {" in text
    assert text.startswith('attrs [source="hand", version=3]\n')
    assert '= onnx.Softmax(x=%lin) [axis=-1, mode="fast"]' in text


def test_sub_byte_and_special_floats_round_trip():
    @program(inputs={"x": TensorSpec((4,), "fp16")})
    def p(b, x):
        h = b.const(np.array([0.1, np.nan, -0.0, -np.inf], np.float16), name="h")
        i4 = b.const(np.array([-8, 7, 0, -1], np.int8), name="i4", dtype="int4")
        u6 = b.const(np.array([63, 0, 1, 2], np.uint8), name="u6", dtype="uint6")
        b.const(np.array(np.uint32(0x7FC00001)).view(np.float32), name="payload")
        return b.add(x=x, y=h), i4, u6

    text = print_program(p)
    assert "%h: fp16[4] = const {0.0999755859375, nan, -0.0, -inf}" in text
    assert "%i4: int4[4] = const {-8, 7, 0, -1}" in text
    assert "const {nan(0x7fc00001)}" in text
    back = parse_program(text)
    assert back.digest == p.digest
    assert back.main.ops[1].attrs["dtype"] == "int4"


def test_odd_names_are_quoted():
    x = Var("in/put:0", TensorType.of("fp32", (2, "batch")))
    c = frozen_array(np.float32(2))
    cv = Var("two", TensorType.of("fp32", ()), c)
    y = Var("out put", TensorType.of("fp32", (2, "batch")))
    ops = [Op.make("const", "two", outputs=(cv,), attrs={"val": c}),
           Op.make("mul", "the mul op", {"x": x, "y": cv}, (y,))]
    p = Program.make([Function("fn-1", Block.make([x], ops, [y]))], attrs={"k": (1, b"\x00", [None, 2.5])})
    text = print_program(p)
    assert '%"in/put:0": fp32[2,batch]' in text
    assert 'name="the mul op"' in text
    back = parse_program(text)
    assert back.digest == p.digest
    assert_programs_equal(back, p)


def test_variadic_inputs_round_trip():
    @program(inputs={"a": TensorSpec((1, 2)), "b": TensorSpec((1, 3))})
    def p(b, a, c):
        return b.concat(values=[a, c], axis=1)

    text = print_program(p)
    assert "concat(values=(%a, %b), axis=%concat_0_axis)" in text
    assert parse_program(text).digest == p.digest


@pytest.mark.parametrize("text,line,msg", [
    ("func main() opset iOS18 {\n  return (%x)\n}\n", 2, "unknown value %x"),
    ("func main(%x: fp32[2]) opset iOS18 {\n  %y: fp32[2] = relu(x=%x\n}\n", 2, "expected ','"),
    ("func main(%x: fq32[2]) opset iOS18 {\n", 1, "unknown dtype 'fq32'"),
    ("func main(%x: fp32[2]) opset iOS18 {\n  %y: fp32[2] = relu(x=%x)\n", 3, "not closed"),
    ("\n\nbogus\n", 3, "expected 'func'"),
    ("func main() opset iOS18 {\n  %c: fp32[3] = const {1.0, 2.0}\n  return (%c)\n}\n", 2, "needs 3 values"),
    ("func main(%x: fp32[2]) opset iOS18 {\n  %x: fp32[2] = relu(x=%x)\n  return (%x)\n}\n", 2, "defined twice"),
    ("func main() opset iOS18 {\n  %c: int8[1] = const {1.5}\n  return (%c)\n}\n", 2, "expected an integer"),
    ("func main() opset iOS18 {\n  %c: fp32[1] = const {1} @\n", 2, "unexpected character '@'"),
])
def test_parse_errors_name_the_line(text, line, msg):
    with pytest.raises(TextParseError, match=rf"^line {line}: .*{msg}") as e:
        parse_program(text)
    assert isinstance(e.value, ValueError)


@given(programs(), st.sampled_from([0, 4, 16, 10_000]))
def test_random_programs_round_trip_through_text(p, limit):
    text = print_program(p, inline_limit=limit)
    back = parse_program(text, tensors=tensors_of(p))
    assert back.digest == p.digest
    assert_programs_equal(back, p)
    assert print_program(back, inline_limit=limit) == text
    feed = inputs_for(p)
    expected, got = evaluate(p, feed), evaluate(back, feed)
    for k in expected:
        np.testing.assert_array_equal(got[k], expected[k])
