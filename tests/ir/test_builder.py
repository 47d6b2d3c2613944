"""The builder: every registered op, plain values as consts, names, build-time
type errors, nested blocks and multi-function programs."""
import numpy as np
import pytest

from ir import Program
from ir.builder import Builder, TensorSpec, build_function, program
from ir.interpret import evaluate
from ir.ops import REGISTRY, OpError
from tests.ir.op_harness import Typed, build

f32 = np.float32
X = np.arange(1, 7, dtype=f32).reshape(1, 2, 3)  # shared sample input, [1, 2, 3]

# one valid call per registered op (inputs as plain values: the builder makes consts)
SAMPLE_CALLS = {
    "const": None,  # b.const, below
    "cond": None,  # b.cond, below
    "while_loop": None,  # b.while_loop, below
    **{op: dict(x=X, y=X) for op in ("add", "sub", "mul", "real_div", "maximum", "minimum", "pow")},
    **{op: dict(x=X, y=X) for op in ("equal", "not_equal", "greater", "greater_equal", "less", "less_equal")},
    "sigmoid_hard": dict(x=X, alpha=np.float32(0.2), beta=np.float32(0.5)),
    "thresholded_relu": dict(x=X, alpha=np.float32(0.1)),
    **{op: dict(x=X) for op in ("relu", "tanh", "sigmoid", "exp", "log", "sqrt", "rsqrt", "abs", "neg",
                                "erf", "floor", "ceil", "sign", "gelu", "softmax", "layer_norm")},
    "clip": dict(x=X, alpha=0.0, beta=1.0),
    "cast": dict(x=X, dtype="fp16"),
    "transpose": dict(x=X, perm=[2, 0, 1]),
    "reshape": dict(x=X, shape=[3, -1]),
    "expand_dims": dict(x=X, axes=[0]),
    "squeeze": dict(x=X),
    "concat": dict(values=[X, X], axis=1),
    "gather": dict(x=X, indices=np.array([0, 0], np.int32), axis=1),
    "linear": dict(x=X, weight=np.ones((4, 3), f32), bias=np.zeros(4, f32)),
    "matmul": dict(x=X, y=np.ones((3, 5), f32)),
    "conv": dict(x=X, weight=np.ones((4, 2, 2), f32)),
    "conv_transpose": dict(x=X, weight=np.ones((2, 4, 2), f32)),
    "max_pool": dict(x=X, kernel_sizes=[2]),
    "avg_pool": dict(x=X, kernel_sizes=[2]),
    "batch_norm": dict(x=X, mean=np.zeros(2, f32), variance=np.ones(2, f32)),
    **{op: dict(x=X, axes=[1]) for op in ("reduce_mean", "reduce_sum", "reduce_max", "reduce_min")},
    "quantize": dict(input=X, scale=f32(0.5), output_dtype="int8"),
    "dequantize": dict(input=np.ones((2, 3), np.int8), scale=f32(0.5)),
    "constexpr_affine_dequantize": dict(quantized_data=np.ones((2, 3), np.int8), zero_point=np.int8(0),
                                        scale=f32(0.5), axis=0),
    "constexpr_blockwise_shift_scale": dict(data=np.ones((2, 4), np.int8), scale=np.ones((1, 2), f32)),
    "constexpr_lut_to_dense": dict(indices=Typed(np.ones((2, 4)), "uint1"), lut=np.ones((1, 1, 2, 1), f32)),
    "constexpr_sparse_to_dense": dict(nonzero_data=np.ones(2, f32), mask=Typed(np.array([1, 0, 1]), "uint1")),
    "constexpr_lut_to_sparse": dict(indices_mask=Typed(np.array([1, 0, 1]), "uint1"),
                                    indices_nonzero_data=Typed(np.array([0, 1]), "uint1"),
                                    lut=np.ones((1, 2, 1), f32)),
    "constexpr_sparse_blockwise_shift_scale": dict(data_mask=Typed(np.array([1, 0, 1]), "uint1"),
                                                   nonzero_data=np.ones(2, np.int8), scale=np.ones(1, f32)),
    "constexpr_cast": dict(source_val=np.ones(2, np.float16), output_dtype="fp32"),
    **{op: dict(x=X) for op in ("sin", "cos", "silu", "leaky_relu", "clamped_relu", "instance_norm")},
    "select": dict(cond=X > 2, a=X, b=np.zeros(3, f32)),
    "reduce_prod": dict(x=X, axes=[1]),
    "reduce_argmax": dict(x=X, axis=1),
    "slice_by_index": dict(x=X, begin=[0, 1, 0], end=[1, 2, 3]),
    "split": dict(x=X, num_splits=2, axis=1),
    "pad": dict(x=X, pad=[1, 2]),
    "tile": dict(x=X, reps=[1, 2, 1]),
}


def test_every_registered_op_has_a_sample_call():
    assert set(REGISTRY) <= set(SAMPLE_CALLS), sorted(set(REGISTRY) - set(SAMPLE_CALLS))


@pytest.mark.parametrize("op_type", sorted(k for k, v in SAMPLE_CALLS.items() if v is not None))
def test_every_op_builds_and_evaluates(op_type):
    if op_type not in REGISTRY:
        pytest.skip(f"{op_type} is not registered")
    prog, op = build(op_type, **SAMPLE_CALLS[op_type])
    outs = evaluate(prog, {})
    for var in op.outputs:
        arr = outs[var.name]
        assert arr.shape == var.shape and arr.dtype == var.type.dt.storage


def test_plain_values_become_consts_with_mil_defaults():
    @program(inputs={"x": TensorSpec((2, 3), "fp32")})
    def prog(b, x):
        t = b.transpose(x=x, perm=[1, 0])
        q = b.quantize(input=x, scale=0.5, output_dtype="int8")
        return t, q, b.cast(x=x, dtype="fp16")

    consts = {op.name: op.outputs[0] for op in prog.main.ops if op.op_type == "const"}
    assert consts["transpose_0_perm"].dtype == "int32" and consts["transpose_0_perm"].val.tolist() == [1, 0]
    assert consts["quantize_0_scale"].dtype == "fp32"
    assert consts["quantize_0_output_dtype"].dtype == "string"
    assert str(consts["cast_0_dtype"].val) == "fp16"
    assert [v.type for v in prog.main.outputs] == [("fp32", (3, 2)), ("int8", (2, 3)), ("fp16", (2, 3))]
    assert all(not v.val.flags.writeable for v in consts.values())


def test_names_are_kept_when_free_and_made_unique_otherwise():
    @program(inputs={"x": TensorSpec((2,), "fp32")})
    def prog(b, x):
        a = b.relu(x=x, name="act")
        c = b.relu(x=a, name="act")
        d = b.relu(x=c)
        e = b.relu(x=d, name="x")  # clashes with the input's name
        return b.add(x=e, y=b.const(np.ones(2, f32), name="act"))

    names = [v.name for op in prog.main.ops for v in op.outputs]
    assert names[:4] == ["act", "act_1", "relu_0", "x_1"]
    assert len(names) == len(set(names)) and "act_2" in names


def test_type_errors_at_build_time_name_op_and_mismatch():
    with pytest.raises(OpError, match=r"^linear 'lin': x has 64 features but weight \(32, 63\) expects 63"):
        @program(inputs={"x": TensorSpec((1, 64), "fp32")})
        def bad(b, x):
            return b.linear(x=x, weight=np.ones((32, 63), f32), name="lin")
    with pytest.raises(OpError, match=r"^relu 'relu_0': unknown input 'y'"):
        @program(inputs={"x": TensorSpec((1,), "fp32")})
        def bad2(b, x):
            return b.relu(x=x, y=x)
    with pytest.raises(OpError, match=r"missing required input 'weight'"):
        @program(inputs={"x": TensorSpec((1,), "fp32")})
        def bad3(b, x):
            return b.linear(x=x)
    with pytest.raises(AttributeError, match="no op type 'relu6'"):
        Builder().relu6


def test_cond_with_blocks_capturing_outer_values():
    @program(inputs={"x": TensorSpec((2,), "fp32"), "p": TensorSpec((), "bool")})
    def prog(b, x, p):
        y = b.mul(x=x, y=np.array([2, 2], f32))
        return b.cond(pred=p, true_fn=lambda t: t.add(x=y, y=x), false_fn=lambda f: f.neg(x=y))

    cond = prog.main.ops[-1]
    assert cond.op_type == "cond" and len(cond.blocks) == 2
    x = np.array([1, -3], f32)
    assert evaluate(prog, {"x": x, "p": np.array(True)})[prog.main.outputs[0].name].tolist() == [3, -9]
    assert evaluate(prog, {"x": x, "p": np.array(False)})[prog.main.outputs[0].name].tolist() == [-2, 6]


def test_cond_branches_must_agree():
    with pytest.raises(OpError, match="branches return"):
        @program(inputs={"x": TensorSpec((2,), "fp32"), "p": TensorSpec((), "bool")})
        def bad(b, x, p):
            return b.cond(pred=p, true_fn=lambda t: x, false_fn=lambda f: f.cast(x=x, dtype="fp16"))


def test_while_loop_runs_the_body_while_the_condition_holds():
    @program(inputs={"x": TensorSpec((2,), "fp32")})
    def prog(b, x):
        # counts 3, 2, 1 down to 0 (cast to bool: nonzero is true) and doubles acc each time
        _, acc = b.while_loop(lambda c, i, a: c.cast(x=i, dtype="bool"),
                              lambda c, i, a: (c.sub(x=i, y=f32(1)), c.mul(x=a, y=x)),
                              loop_vars=[f32(3), np.ones(2, f32)])
        return acc

    loop = prog.main.ops[-1]
    assert loop.op_type == "while_loop" and len(loop.blocks) == 2
    assert evaluate(prog, {"x": np.array([2, -1], f32)})[prog.main.outputs[0].name].tolist() == [8, -1]
    with pytest.raises(OpError, match="the body returns"):
        @program(inputs={"x": TensorSpec((2,), "fp32")})
        def bad(b, x):
            return b.while_loop(lambda c, a: c.cast(x=f32(0), dtype="bool"), lambda c, a: c.cast(x=a, dtype="fp16"),
                                loop_vars=[x])


def test_program_with_several_functions():
    f1 = build_function(lambda b, x: b.relu(x=x), {"x": TensorSpec((3,), "fp32")}, name="main")
    f2 = build_function(lambda b, x: b.neg(x=x), {"x": TensorSpec((3,), "fp32")}, name="negate")
    prog = Program.make([f1, f2])
    x = np.array([-1, 0, 2], f32)
    assert sorted(prog.functions) == ["main", "negate"]
    assert list(evaluate(prog, {"x": x}).values())[0].tolist() == [0, 0, 2]
    assert list(evaluate(prog, {"x": x}, function="negate").values())[0].tolist() == [1, 0, -2]


def test_symbolic_batch_dim():
    @program(inputs={"x": TensorSpec(("batch", 4), "fp32")})
    def prog(b, x):
        return b.reshape(x=b.linear(x=x, weight=np.ones((2, 4), f32)), shape=[-1])

    assert prog.main.outputs[0].shape == ("?",)
    out = evaluate(prog, {"x": np.ones((3, 4), f32)})
    assert list(out.values())[0].tolist() == [4.0] * 6


def test_op_attribute_access_is_strict():
    """Only the op schema's input names resolve; a typo raises instead of silently reading None."""
    import pytest as _pytest
    from ir.builder import Builder
    from ir.types import TensorType as _T

    b = Builder()
    x = b.input("x", _T.of("fp32", (2,)))
    q = b.quantize(input=x, scale=np.float32(0.5), output_dtype="int8")
    op = next(o for o in b.function("main", q).ops if o.op_type == "quantize")
    assert op.input is x and op.scale.val == np.float32(0.5)
    assert op.zero_point is None  # optional and absent
    with _pytest.raises(AttributeError, match="zero_piont"):
        op.zero_piont  # noqa: B018
    assert getattr(op, "zero_piont", "absent") == "absent"
