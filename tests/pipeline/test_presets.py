"""Every named preset resolves against the real stages and does what its name says
on a small program (checked by op types and by the weights the interpreter sees)."""
import numpy as np
import pytest

from ir.builder import TensorSpec, program
from ir.interpret import evaluate
from pipeline import Pipeline, presets

W_SHAPE = (64, 64)  # 4096 elements: above the stages' default 2048-element selector


def _net():
    rng = np.random.default_rng(3)
    w = rng.standard_normal(W_SHAPE).astype(np.float32)

    @program(inputs={"x": TensorSpec((1, 64), "fp32")})
    def net(b, x):
        return b.relu(x=b.linear(x=x, weight=b.const(w, name="w")))

    return net, w


def _dense_weight(prog) -> np.ndarray:
    """The weight the linear op consumes, decompressed by the interpreter."""
    from ir.core import Program

    lin = next(op for _f, op in prog.walk() if op.op_type == "linear")
    fn = prog.main
    probe = Program.make([fn.replace(block=fn.block.replace(outputs=(lin.weight,)))])
    return evaluate(probe, {"x": np.zeros((1, 64), np.float32)})[lin.weight.name]


def _op_types(prog) -> set:
    return {op.op_type for _f, op in prog.walk()}


def _levels(w) -> int:
    return len(np.unique(w))


CHECKS = {
    # preset -> check(dense weight after, original weight, op types after)
    "int8": lambda w, w0, types: ("constexpr_blockwise_shift_scale" in types
                                  or "constexpr_affine_dequantize" in types)
    and all(_levels(row) <= 256 for row in w) and np.allclose(w, w0, atol=np.abs(w0).max() / 100),
    "int4-block32": lambda w, w0, types: ("constexpr_blockwise_shift_scale" in types)
    and all(_levels(w[r, c:c + 32]) <= 16 for r in range(w.shape[0]) for c in range(0, w.shape[1], 32))
    and _levels(w) > 16,
    "palettize-4bit": lambda w, w0, types: "constexpr_lut_to_dense" in types and _levels(w) <= 16,
    "palettize-4bit-grouped": lambda w, w0, types: "constexpr_lut_to_dense" in types
    and all(_levels(w[g:g + 16]) <= 16 for g in range(0, w.shape[0], 16)) and _levels(w) > 16,
    "sparse-50": lambda w, w0, types: "constexpr_sparse_to_dense" in types
    and int((w == 0).sum()) == w.size // 2
    and np.array_equal(w[w != 0], w0[w != 0])
    and np.abs(w0[w == 0]).max() <= np.abs(w0[w != 0]).min(),
    "sparse+palettize": lambda w, w0, types: "constexpr_lut_to_sparse" in types
    and int((w == 0).sum()) >= w.size // 2 and _levels(w[w != 0]) <= 16,
}


def test_every_compression_preset_has_a_check():
    assert set(CHECKS) == set(presets.names()) - {"canonicalize_quantization"}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_compression_preset_runs_on_a_small_program(name):
    net, w0 = _net()
    before = net.digest
    trace = Pipeline.preset(name).run(net)
    out = trace.result
    assert net.digest == before  # the input program is untouched
    assert out is not net and all(step.changed for step in trace.steps)
    w = _dense_weight(out)
    assert w.shape == W_SHAPE
    assert CHECKS[name](w, w0, _op_types(out)), name


def test_canonicalization_preset_runs_each_seed_pass_once_in_order():
    from stages.quantization import SEED_PASS_ORDER

    @program(inputs={"x": TensorSpec((1, 4), "fp32")})
    def net(b, x):
        q = b.quantize(input=x, scale=np.float32(0.5), zero_point=np.int8(0), output_dtype="int8")
        return b.dequantize(input=q, scale=np.float32(0.5), zero_point=np.int8(0))

    trace = Pipeline.preset("canonicalize_quantization").run(net)
    assert [s.stage.name for s in trace.steps] == list(SEED_PASS_ORDER)
    # the zero point is dropped and the pair is kept (a float input is quantized at run time)
    assert any(s.changed for s in trace.steps)
    x = np.array([[0.2, -1.3, 7.0, 100.0]], np.float32)
    np.testing.assert_array_equal(evaluate(trace.result, {"x": x})[trace.result.main.outputs[0].name],
                                  evaluate(net, {"x": x})[net.main.outputs[0].name])
