import numpy as np
import pytest
from hypothesis import given

from ir import InvalidProgram
from ir.construct import const_op
from ir.core import Block, Function, Op, Program, TensorType, Var, frozen_array
from ir.validate import validate
from tests.ir.programs import programs, sample_program


@given(programs())
def test_every_generated_program_is_valid(p):
    assert validate(p) is p


def test_hand_made_program_is_valid():
    p = sample_program()
    assert validate(p) is p


def T(shape=(2,), dt="fp32"):
    return TensorType.of(dt, shape)


def const(name, value, dt=None):
    return const_op(name, value, dt)


X = Var("x", T())


def prog(ops, outputs, inputs=(X,)):
    return Program.make([Function("main", Block.make(inputs, ops, outputs))])


def relu(name, x, out_type=None):
    return Op.make("relu", name, {"x": x}, (Var(name, out_type or x.type),))


def check_rejected(p, *fragments):
    with pytest.raises(InvalidProgram) as e:
        validate(p)
    for f in fragments:
        assert f in str(e.value), str(e.value)
    return str(e.value)


def test_use_before_definition():
    a = relu("a", X)
    b = relu("b", a.output)
    check_rejected(prog([b, a], [b.output]), "relu 'b'", "uses %a before its definition")


def test_duplicate_definition_at_top_level():
    a = relu("a", X)
    a2 = Op.make("relu", "a2", {"x": X}, (Var("a", T()),))
    check_rejected(prog([a, a2], [a.output]), "relu 'a2'", "%a is defined twice")


def test_duplicate_definition_in_a_nested_block():
    pred = const("p", np.array(True))
    inner = relu("a", X)
    blocks = (Block.make([], [inner], [inner.output]), Block.make([], [], [X]))
    cond = Op.make("cond", "c", {"pred": pred.output}, (Var("c", T()),), blocks=blocks)
    after = Op.make("relu", "a_again", {"x": cond.output}, (Var("a", T()),))
    check_rejected(prog([pred, cond, after], [after.output]), "relu 'a_again'", "%a is defined twice")


def test_nested_values_are_out_of_scope_after_their_block():
    pred = const("p", np.array(True))
    inner = relu("a", X)
    blocks = (Block.make([], [inner], [inner.output]), Block.make([], [], [X]))
    cond = Op.make("cond", "c", {"pred": pred.output}, (Var("c", T()),), blocks=blocks)
    leak = relu("b", inner.output)
    check_rejected(prog([pred, cond, leak], [leak.output]), "relu 'b'", "%a before its definition")


def test_type_mismatch_against_inference():
    bad = relu("a", X, out_type=T((3,)))
    check_rejected(prog([bad], [bad.output]), "relu 'a'", "declared fp32[3] but the op gives fp32[2]")


def test_input_referring_to_a_stale_type():
    a = relu("a", X)
    stale = Var("a", T((2,), "fp16"))
    b = Op.make("relu", "b", {"x": stale}, (Var("b", stale.type),))
    check_rejected(prog([a, b], [b.output]), "relu 'b'", "as fp16[2], but it is defined as fp32[2]")


def test_unknown_op_type():
    bad = Op.make("frobnicate", "f", {"x": X}, (Var("f", T()),))
    check_rejected(prog([bad], [bad.output]), "frobnicate 'f'", "unknown op type 'frobnicate'")


def test_foreign_op_with_prefix_is_accepted():
    ok = Op.make("onnx.Frob", "f", {"anything": X}, (Var("f", T()),), attrs={"k": 1})
    assert validate(prog([ok], [ok.output]))


def test_wrong_input_name():
    bad = Op.make("relu", "r", {"input": X}, (Var("r", T()),))
    check_rejected(prog([bad], [bad.output]), "relu 'r'", "unknown input 'input'")


def test_missing_input():
    w = const("w", np.ones((3, 2), np.float32))
    bad = Op.make("linear", "l", {"weight": w.output}, (Var("l", T((3,))),))
    check_rejected(prog([w, bad], [bad.output]), "linear 'l'", "missing required input 'x'")


def test_variadic_input_given_as_one_value():
    axis = const("axis", np.array(0, np.int32))
    bad = Op.make("concat", "c", {"values": X, "axis": axis.output}, (Var("c", T()),))
    check_rejected(prog([axis, bad], [bad.output]), "concat 'c'", "must be a tuple of values")


def test_sub_byte_const_out_of_range():
    arr = frozen_array(np.array([1, 16], np.uint8))
    bad = Op.make("const", "q", outputs=(Var("q", T((2,), "uint4"), arr),), attrs={"val": arr, "dtype": "uint4"})
    check_rejected(prog([bad], [bad.output], inputs=()), "const 'q'", "do not fit in uint4 [0, 15]")


def test_writeable_array_in_the_ir():
    arr = np.ones(2, np.float32)  # writeable on purpose
    bad = Op.make("const", "c", outputs=(Var("c", T(), arr),), attrs={"val": arr})
    check_rejected(prog([bad], [bad.output], inputs=()), "const 'c'", "writeable array")


def test_block_output_not_defined():
    a = relu("a", X)
    check_rejected(prog([a], [Var("nowhere", T())]), "uses %nowhere before its definition")


def test_const_whose_declared_type_disagrees_with_its_value():
    arr = frozen_array(np.ones(3, np.float32))
    bad = Op.make("const", "c", outputs=(Var("c", T((2,)), arr),), attrs={"val": arr})
    check_rejected(prog([bad], [bad.output], inputs=()), "const 'c'", "declared fp32[2] but the op gives fp32[3]")


def test_inputs_that_do_not_fit_the_op():
    h = Var("h", T((2,), "fp16"))
    bad = Op.make("add", "s", {"x": X, "y": h}, (Var("s", T()),))
    check_rejected(prog([bad], [bad.output], inputs=(X, h)), "add 's'", "x is fp32 but y is fp16")


def test_duplicate_op_name():
    a = relu("a", X)
    b = Op.make("relu", "a", {"x": a.output}, (Var("b", T()),))
    check_rejected(prog([a, b], [b.output]), "relu 'a'", "op name is used twice")


def test_cond_blocks_must_agree():
    pred = const("p", np.array(True))
    inner = relu("a", X)
    h = const("h", np.ones(2, np.float16))
    blocks = (Block.make([], [inner], [inner.output]), Block.make([], [h], [h.output]))
    cond = Op.make("cond", "c", {"pred": pred.output}, (Var("c", T()),), blocks=blocks)
    check_rejected(prog([pred, cond], [cond.output]), "cond 'c'", "block 1 returns ['fp16[2]']")


def test_invalid_program_is_a_value_error():
    assert issubclass(InvalidProgram, ValueError)


# ---- validate(program, trusted=...): what a stage took over is checked for where it sits ----

def test_trusted_ops_are_still_checked_for_order_and_scope():
    a = relu("a", X)
    b = relu("b", a.output)
    good = prog([a, b], [b.output])
    assert validate(good, trusted=good) is good
    with pytest.raises(InvalidProgram, match="uses %a before its definition"):
        validate(prog([b, a], [b.output]), trusted=good)
    with pytest.raises(InvalidProgram, match="op name is used twice"):
        validate(prog([a, b, b], [b.output]), trusted=good)


def test_a_trusted_op_reading_a_redefined_value_is_checked_in_full():
    a = relu("a", X)
    b = relu("b", a.output)
    good = prog([a, b], [b.output])
    # the stage redefined %a with another type but left b reading the old Var
    d = const("d", np.array("fp16"))
    a16 = Op.make("cast", "a", {"x": X, "dtype": d.output}, (Var("a", T((2,), "fp16")),))
    with pytest.raises(InvalidProgram, match="relu 'b'.*as fp32\\[2\\], but it is defined as fp16\\[2\\]"):
        validate(prog([d, a16, b], [b.output]), trusted=good)


def test_new_ops_next_to_trusted_ones_are_checked_in_full():
    a = relu("a", X)
    good = prog([a], [a.output])
    bad = relu("b", a.output, out_type=T((3,)))
    with pytest.raises(InvalidProgram, match="declared fp32\\[3\\] but the op gives fp32\\[2\\]"):
        validate(prog([a, bad], [bad.output]), trusted=good)


@given(programs())
def test_trusting_a_program_itself_accepts_it(p):
    assert validate(p, trusted=p) is p
