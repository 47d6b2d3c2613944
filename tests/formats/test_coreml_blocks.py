"""Core ML nested blocks (cond, while_loop): imported as the ops' blocks, exported back, and the
weights inside them found and compressed, as coremltools' own passes do."""
from __future__ import annotations

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")
cto = pytest.importorskip("coremltools.optimize.coreml")
from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.frontend.milproto.load import load as milproto_load  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

from ir.construct import const_op, new_op  # noqa: E402
from ir.core import Block, Function, Program, TensorType, Var  # noqa: E402
from ir.formats.coreml import export_coreml, import_coreml  # noqa: E402
from ir.interpret import evaluate  # noqa: E402
from ir.validate import validate  # noqa: E402
from pipeline import Pipeline  # noqa: E402

RNG = np.random.default_rng(5)
W_TRUE, W_FALSE, W_BODY = (RNG.standard_normal(s).astype(np.float32) for s in ((48, 64), (48, 64), (64, 64)))


def control_flow_model(path, target):
    """Weights above the 2048-element threshold only inside a cond's branches and a loop body."""
    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 64)), mb.TensorSpec(shape=(1,), dtype=types.int32)],
                opset_version=target)
    def prog(x, n):
        pred = mb.greater(x=mb.reduce_sum(x=x), y=0.0)
        y = mb.cond(pred=pred, _true_fn=lambda: mb.linear(x=x, weight=W_TRUE, name="fc_true"),
                    _false_fn=lambda: mb.linear(x=x, weight=W_FALSE, name="fc_false"), name="branch")

        def body(i, a):
            return mb.add(x=i, y=1), mb.relu(x=mb.linear(x=a, weight=W_BODY, name="fc_body"))
        _, z = mb.while_loop(_cond=lambda i, a: mb.less(x=i, y=n), _body=body,
                             loop_vars=(np.array([0], np.int32), x), name="loop")
        return y, z
    model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=target,
                       pass_pipeline=ct.PassPipeline.EMPTY, skip_model_load=True)
    model.save(str(path))
    return ct.models.MLModel(str(path), skip_model_load=True)


def mil_ops(model):
    spec = model.get_spec()
    prog = milproto_load(spec, spec.specificationVersion, model.weights_dir)
    return spec.specificationVersion, prog.functions["main"]


def weights_by_consumer(model) -> dict:
    """{consumer op name: (op type of the weight's producer, dense weight)} through every block."""
    _, fn = mil_ops(model)
    out = {}

    def visit(block):
        for op in block.operations:
            for b in op.blocks:
                visit(b)
            w = op.inputs.get("weight")
            if w is not None and op.op_type == "linear":
                producer = w.op
                val = producer.materialized_val_inference() if producer.op_type.startswith("constexpr") else w.val
                out[op.name] = (producer.op_type, np.asarray(val))
    visit(fn)
    return out


def structure(block) -> list:
    """Op types with their blocks' structure, constants left out."""
    return [(op.op_type, [structure(b) for b in op.blocks]) for op in block.operations
            if not op.op_type.startswith("const")]


@pytest.mark.parametrize("target", ["iOS17", "iOS18"])
def test_blocks_round_trip(tmp_path, target):
    src = control_flow_model(tmp_path / "src.mlpackage", getattr(ct.target, target))
    prog = validate(import_coreml(tmp_path / "src.mlpackage"))
    ops = {op.op_type: op for _, op in prog.walk()}
    assert len(ops["cond"].blocks) == 2 and len(ops["while_loop"].blocks) == 2
    assert [v.name for v in ops["while_loop"].blocks[0].inputs] != [v.name for v in ops["while_loop"].blocks[1].inputs]
    inner = [op.name for b in ops["cond"].blocks for op in b.ops]
    assert "fc_true" in inner and "fc_false" in inner
    out = export_coreml(prog, tmp_path / "out.mlpackage")
    back = ct.models.MLModel(out, skip_model_load=True)
    (v_src, f_src), (v_out, f_out) = mil_ops(src), mil_ops(back)
    assert v_out == v_src
    assert structure(f_out) == structure(f_src)
    theirs, mine = weights_by_consumer(src), weights_by_consumer(back)
    assert theirs.keys() == mine.keys() == {"fc_true", "fc_false", "fc_body"}
    for k in theirs:
        np.testing.assert_array_equal(mine[k][1], theirs[k][1])
    assert import_coreml(out).digest == prog.digest  # lossless, blocks included


@pytest.mark.parametrize("target, form", [("iOS17", "constexpr_affine_dequantize"),
                                          ("iOS18", "constexpr_blockwise_shift_scale")])
def test_weights_inside_blocks_are_compressed(tmp_path, target, form):
    src = control_flow_model(tmp_path / "src.mlpackage", getattr(ct.target, target))
    trace = Pipeline.preset("int8").run(import_coreml(tmp_path / "src.mlpackage"))
    assert trace.steps[0].stats["compressed"] == 3
    out = export_coreml(trace.result, tmp_path / "int8.mlpackage")
    back = ct.models.MLModel(out, skip_model_load=True)
    assert mil_ops(back)[0] == mil_ops(src)[0]
    mine = weights_by_consumer(back)
    theirs = weights_by_consumer(cto.linear_quantize_weights(src, cto.OptimizationConfig(
        cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel"))))
    assert {k: v[0] for k, v in mine.items()} == {k: v[0] for k, v in theirs.items()} == \
        {"fc_true": form, "fc_false": form, "fc_body": form}
    for k in mine:  # fp32 weights: coremltools and we make the same codes and scales
        np.testing.assert_array_equal(mine[k][1], theirs[k][1])


def counting_loop(opset="iOS17") -> Program:
    """acc doubles while the counter (3, 2, 1) is nonzero: y = x + 8, by a while_loop of core ops."""
    f32 = TensorType.of("fp32", ())
    x = Var("x", TensorType.of("fp32", (2,)))
    consts = [const_op("n", np.float32(3)), const_op("acc0", np.ones(2, np.float32)),
              const_op("to_bool", np.array("bool", dtype=object), "string"),
              const_op("one", np.float32(1)), const_op("two", np.float32(2))]
    n, acc0, to_bool, one, two = (c.outputs[0] for c in consts)
    ci, cacc = Var("ci", f32), Var("cacc", x.type)
    go = new_op("cast", "go", {"x": ci, "dtype": to_bool})
    bi, bacc = Var("bi", f32), Var("bacc", x.type)
    dec, dbl = new_op("sub", "dec", {"x": bi, "y": one}), new_op("mul", "dbl", {"x": bacc, "y": two})
    loop = new_op("while_loop", "loop", {"loop_vars": (n, acc0)},
                  blocks=(Block.make((ci, cacc), [go], go.outputs), Block.make((bi, bacc), [dec, dbl],
                                                                               (dec.outputs[0], dbl.outputs[0]))))
    y = new_op("add", "y", {"x": loop.outputs[1], "y": x})
    return Program.make([Function("main", Block.make((x,), consts + [loop, y], y.outputs), opset)])


def test_while_loop_kernel_and_export(tmp_path):
    prog = validate(counting_loop())
    x = np.array([0.5, -1.0], np.float32)
    np.testing.assert_array_equal(evaluate(prog, {"x": x})["y"], x + 8)
    out = export_coreml(prog, tmp_path / "loop.mlpackage")
    version, fn = mil_ops(ct.models.MLModel(out, skip_model_load=True))  # coremltools types every op
    assert version == 8 and [op.op_type for op in fn.operations if op.op_type != "const"] == ["while_loop", "add"]
    back = validate(import_coreml(out))
    np.testing.assert_array_equal(evaluate(back, {"x": x})["y"], x + 8)


def test_while_loop_needs_a_bool_condition():
    from ir.interpret import EvaluationError

    prog = counting_loop()
    loop = next(op for op in prog.main.ops if op.op_type == "while_loop")
    cond = loop.blocks[0]
    bad = loop.replace(blocks=(Block.make(cond.inputs, [], (cond.inputs[0],)), loop.blocks[1]))
    broken = Program.make([prog.main.replace(block=prog.main.block.replace(
        ops=[bad if op is loop else op for op in prog.main.ops]))])
    with pytest.raises((EvaluationError, ValueError), match="one bool"):
        evaluate(broken, {"x": np.zeros(2, np.float32)})
