import numpy as np
import pytest

from ir.builder import TensorSpec, program
from ir.equality import assert_programs_equal, structural_diff
from tests.ir.programs import sample_program


def build(w_value=1.0, weight_name="w", perm=(1, 0), relu=True):
    @program(inputs={"x": TensorSpec((2, 3), "fp32")})
    def net(b, x):
        w = b.const(np.full((4, 3), w_value, np.float32), name=weight_name)
        y = b.transpose(x=b.linear(x=x, weight=w), perm=list(perm))
        return b.relu(x=y) if relu else b.sigmoid(x=y)
    return net


def test_programs_built_twice_are_equal():
    assert structural_diff(build(), build()) is None
    assert structural_diff(sample_program(), sample_program()) is None
    assert_programs_equal(build(), build())


def test_changed_constant_value_is_reported_with_its_path():
    d = structural_diff(build(1.0), build(2.0))
    assert d == "functions['main'].ops[0].attrs['val'][0, 0]: 1.0 != 2.0"


def test_changed_name_is_reported_at_the_op():
    d = structural_diff(build(weight_name="w"), build(weight_name="v"))
    assert d == "functions['main'].ops[0].name: 'w' != 'v'"


def test_changed_input_name_is_reported():
    a = build()
    ops = list(a.main.ops)
    lin = ops[1]
    other = ops[0].outputs[0]
    renamed = type(other)("w2", other.type, other.val)
    ops[0] = ops[0].replace(name="w2", outputs=(renamed,))
    ops[1] = lin.replace(inputs=lin.inputs.set("weight", renamed))
    b = a.with_function(a.main.replace(block=a.main.block.replace(ops=ops)))
    assert structural_diff(a, b) == "functions['main'].ops[0].name: 'w' != 'w2'"
    # same name on the producer, different reference on the consumer
    ops2 = list(a.main.ops)
    ops2[1] = lin.replace(inputs=lin.inputs.set("weight", renamed))
    c = a.with_function(a.main.replace(block=a.main.block.replace(ops=ops2)))
    assert structural_diff(a, c) == "functions['main'].ops[1].inputs['weight']: 'w' != 'w2'"


def test_changed_op_type_and_constant_perm():
    assert structural_diff(build(), build(relu=False)) == \
        "functions['main'].ops[4].op_type: 'relu' != 'sigmoid'"
    d = structural_diff(build(), build(perm=(0, 1)))
    assert d.startswith("functions['main'].ops[2].attrs['val']")


def test_arrays_compare_by_dtype():
    @program(inputs={"x": TensorSpec((2,), "fp32")})
    def a(b, x):
        return b.add(x=x, y=b.const(np.zeros(2, np.float32), name="c"))

    @program(inputs={"x": TensorSpec((2,), "fp32")})
    def c(b, x):
        return b.add(x=x, y=b.const(np.zeros(2, np.float16).astype(np.float32), name="c"))

    assert structural_diff(a, c) is None
    ops = list(a.main.ops)
    fp64 = np.zeros(2, np.float64)
    fp64.flags.writeable = False
    ops[0] = ops[0].replace(attrs=ops[0].attrs.set("val", fp64))
    d = structural_diff(a, a.with_function(a.main.replace(block=a.main.block.replace(ops=ops))))
    assert d == "functions['main'].ops[0].attrs['val'].dtype: float32 != float64"


def test_nested_block_paths_and_extra_functions():
    a = sample_program()
    cond = [op for op in a.main.ops if op.op_type == "cond"][0]
    i = list(a.main.ops).index(cond)
    inner = cond.blocks[1]
    new_inner = inner.replace(ops=list(inner.ops)[:-1] + [inner.ops[-1].replace(op_type="tanh")])
    ops = list(a.main.ops)
    ops[i] = cond.replace(blocks=(cond.blocks[0], new_inner))
    b = a.with_function(a.main.replace(block=a.main.block.replace(ops=ops)))
    assert structural_diff(a, b) == f"functions['main'].ops[{i}].blocks[1].ops[2].op_type: 'sigmoid' != 'tanh'"
    assert structural_diff(a, build()).startswith("attrs")


def test_assert_programs_equal_raises_with_the_path():
    with pytest.raises(AssertionError, match=r"functions\['main'\]\.ops\[0\]\.name"):
        assert_programs_equal(build(weight_name="a"), build(weight_name="b"))
