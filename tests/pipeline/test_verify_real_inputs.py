"""verify on real inputs, with either evaluator, and its failure reports (issue 13)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings

from ir.builder import TensorSpec, program
from pipeline import verify
from pipeline.errors import VerifyError
from pipeline.samples import batches, load_npz
from pipeline.strategies import Domain, input_domains, inputs_for


def unary(op, shape=(4,), dtype="fp32", **kw):
    @program(inputs={"x": TensorSpec(shape, dtype)})
    def net(b, x):
        return getattr(b, op)(x=x, name="out", **kw)

    return net


def sqrt_abs():
    @program(inputs={"x": TensorSpec((4,), "fp32")})
    def net(b, x):
        return b.sqrt(x=b.abs(x=x), name="out")

    return net


def relu_unsqueezed():
    @program(inputs={"x": TensorSpec((4,), "fp32")})
    def net(b, x):
        return b.expand_dims(x=b.relu(x=x), axes=[0], name="out")

    return net


# ---- failures are reports naming the output, never exceptions ---------------------------

@pytest.mark.parametrize("snr_db", [None, 20.0])
def test_nan_output_fails_naming_it(snr_db):
    x = {"x": np.array([-1.0, 4.0, 0.0, 9.0], np.float32)}  # sqrt(-1) = NaN, sqrt(|-1|) = 1
    report = verify(sqrt_abs(), unary("sqrt"), inputs=x, snr_db=snr_db)
    assert not report.passed
    assert report.reason == "output 'out': 1 NaN values where the reference has finite ones"
    assert math.isnan(report.outputs["out"].max_abs_error) and math.isnan(report.outputs["out"].snr_db)
    report = verify(sqrt_abs(), unary("sqrt"), samples=16, snr_db=snr_db)  # generated: no math domain error
    assert not report.passed and report.reason.startswith("output 'out': ")


@pytest.mark.parametrize("snr_db", [None, 20.0])
def test_a_changed_shape_fails_naming_the_output(snr_db):
    report = verify(unary("relu"), relu_unsqueezed(), samples=4, snr_db=snr_db)
    assert not report.passed and report.reason == "output 'out': shape (1, 4) vs (4,)"
    out = report.outputs["out"]
    assert not out.shape_match and out.max_abs_error == math.inf and out.snr_db == -math.inf


def test_int8_and_uint8_with_equal_values_fail():
    def cast(to):
        @program(inputs={"x": TensorSpec((3,), "int32")})
        def net(b, x):
            return b.cast(x=x, dtype=to, name="out")

        return net

    x = {"x": np.array([0, 5, 100], np.int32)}  # the same values in both dtypes
    report = verify(cast("int8"), cast("uint8"), inputs=x)
    assert not report.passed and report.reason == "output 'out': dtype uint8 vs int8"
    out = report.outputs["out"]
    assert not out.dtype_match and out.shape_match and out.max_abs_error == 0.0
    assert verify(cast("int8"), cast("int8"), inputs=x).passed


def test_cosine_is_reported_over_every_sample():
    x = [{"x": np.array([1.0, 2.0, 0.0, 0.0], np.float32)}, {"x": np.array([0.0, 0.0, 3.0, 4.0], np.float32)}]

    @program(inputs={"x": TensorSpec((4,), "fp32")})
    def doubled(b, x):
        return b.mul(x=b.relu(x=x), y=np.float32(2.0), name="out")

    report = verify(unary("relu"), doubled, inputs=x, rtol=2.0)  # a scaled output: cosine 1
    out = report.outputs["out"]
    assert report.passed and report.samples == 2
    assert out.cosine == pytest.approx(1.0) and out.max_abs_error == 4.0
    assert out.snr_db == pytest.approx(0.0)  # noise power (1+4+9+16) == signal power


# ---- real inputs in batches the model accepts -----------------------------------------------

def test_samples_along_a_leading_axis_in_a_fixed_batch_model():
    net = unary("relu", shape=(2, 3))
    fn = net.functions["main"]
    x = np.arange(24, dtype=np.float32).reshape(8, 3)  # rank == input rank: chunks of the batch 2
    got = batches(fn, {"x": x})
    assert [b["x"].tolist() for b in got] == [x[i:i + 2].tolist() for i in range(0, 8, 2)]
    stacked = batches(fn, {"x": x.reshape(4, 2, 3)})  # rank + 1: one sample per leading index
    assert len(stacked) == 4 and all(b["x"].shape == (2, 3) for b in stacked)
    assert verify(net, unary("relu", shape=(2, 3)), inputs={"x": x}).samples == 4


def test_a_symbolic_batch_takes_the_whole_array_and_symbolic_dims_must_agree():
    @program(inputs={"a": TensorSpec(("batch", 3), "fp32"), "b": TensorSpec(("batch", 3), "fp32")})
    def net(bld, a, b):
        return bld.add(x=a, y=b, name="out")

    fn = net.functions["main"]
    (one,) = batches(fn, {"a": np.zeros((5, 3)), "b": np.ones((5, 3))})
    assert one["a"].shape == (5, 3) and one["a"].dtype == np.float32  # float64 data converted
    with pytest.raises(VerifyError, match="input 'b': dimension 'batch' is 4, but 5 in input 'a'"):
        batches(fn, {"a": np.zeros((5, 3)), "b": np.ones((4, 3))})


@pytest.mark.parametrize("inputs, message", [
    ({"x": np.zeros((5, 3), np.float32)}, "input 'x': 5 samples along axis 0, but the model takes batches of "
                                          "exactly 2"),
    ({"x": np.zeros((2,), np.float32)}, "input 'x': an array of rank 1 for an input of rank 2"),
    ({"x": np.zeros((2, 4), np.float32)}, "input 'x': size 4 along axis 1, the model declares 3"),
    ({"y": np.zeros((2, 3), np.float32)}, "no array for input 'x'"),
    ({"x": np.zeros((2, 3), np.float32), "z": 1}, "no input named 'z'"),
    ({"x": np.zeros((2, 3), np.complex64)}, "input 'x': complex64 values for an input of dtype fp32"),
    ([], "an empty list"),
])
def test_inputs_that_do_not_fit_the_model_are_refused_naming_the_input(inputs, message):
    with pytest.raises(VerifyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        verify(unary("relu", shape=(2, 3)), unary("relu", shape=(2, 3)), inputs=inputs)


def test_integers_that_do_not_fit_the_input_dtype_are_refused():
    fn = unary("relu", shape=(3,), dtype="int8").functions["main"]
    assert batches(fn, {"x": np.array([1, -2, 3], np.int64)})[0]["x"].dtype == np.int8
    with pytest.raises(VerifyError, match="input 'x': int64 values that do not fit its dtype int8"):
        batches(fn, {"x": np.array([1, 300, 3], np.int64)})


def test_load_npz_errors_name_the_file(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(VerifyError, match="one.npy: a single array"):
        load_npz(tmp_path / "one.npy")
    np.savez(tmp_path / "ok.npz", x=np.ones(2))
    assert load_npz(tmp_path / "ok.npz")["x"].tolist() == [1.0, 1.0]


# ---- evaluators -----------------------------------------------------------------------

def test_onnxruntime_evaluator_agrees_with_the_interpreter():
    pytest.importorskip("onnxruntime")
    x = {"x": np.array([-1.0, 4.0, 0.25, 9.0], np.float32)}
    ours = verify(sqrt_abs(), unary("sqrt"), inputs=x, evaluator="interpreter")
    theirs = verify(sqrt_abs(), unary("sqrt"), inputs=x, evaluator="onnxruntime")
    assert not theirs.passed and theirs.reason == ours.reason
    assert verify(unary("relu"), unary("relu"), samples=8, evaluator="onnxruntime").passed


def test_onnxruntime_refuses_a_program_it_cannot_export():
    pytest.importorskip("onnxruntime")
    clamped = unary("clamped_relu", alpha=np.float32(0.1), beta=np.float32(6.0))
    with pytest.raises(VerifyError, match="evaluator='onnxruntime': the after program cannot be exported"):
        verify(unary("relu"), clamped, evaluator="onnxruntime")
    with pytest.raises(VerifyError, match="evaluator='gpu': need one of 'interpreter', 'onnxruntime'"):
        verify(unary("relu"), unary("relu"), evaluator="gpu")


# ---- the domain of generated inputs -----------------------------------------------------------

def embedding_model(table_rows=7, path="cast"):
    """out[b, s] = sum(table[ids[b, s]]) + attention_mask[b, s]; the ids reach the gather
    through a cast, a cast, an expand_dims and a squeeze, or directly."""
    @program(inputs={"ids": TensorSpec(("batch", "seq"), "int64"),
                     "attention_mask": TensorSpec(("batch", "seq"), "int64")})
    def net(b, ids, attention_mask):
        table = b.const(np.arange(table_rows * 2, dtype=np.float32).reshape(table_rows, 2), name="table")
        idx = {"cast": lambda: b.cast(x=ids, dtype="int32"),
               "flat": lambda: b.squeeze(x=b.expand_dims(x=b.cast(x=ids, dtype="int32"), axes=[0]), axes=[0]),
               "direct": lambda: ids}[path]()
        rows = b.gather(x=table, indices=idx, axis=0)
        return b.add(x=b.reduce_sum(x=rows, axes=[-1]), y=b.cast(x=attention_mask, dtype="fp32"), name="out")

    return net


def test_domains_follow_casts_and_reshapes_to_the_gather():
    assert input_domains(embedding_model()) == {"ids": Domain("index", 7), "attention_mask": Domain("mask")}
    for path in ("flat", "direct"):
        assert input_domains(embedding_model(path=path))["ids"] == Domain("index", 7)


def test_a_select_condition_makes_a_mask_and_unrelated_inputs_have_no_domain():
    @program(inputs={"c": TensorSpec((3,), "int32"), "x": TensorSpec((3,), "int32")})
    def net(b, c, x):
        return b.select(cond=b.cast(x=c, dtype="bool"), a=x, b=b.neg(x=x), name="out")

    assert input_domains(net) == {"c": Domain("mask")}


@settings(max_examples=30, deadline=None)
@given(inputs_for(embedding_model(), dims={"seq": 5}))
def test_generated_inputs_respect_the_domain_and_the_dims(inputs):
    ids, mask = inputs["ids"], inputs["attention_mask"]
    assert ids.shape[1] == 5 and 1 <= ids.shape[0] <= 4 and mask.shape == ids.shape
    assert ids.min() >= 0 and ids.max() < 7
    assert set(np.unique(mask)) <= {0, 1} and (mask[:, 0] == 1).all()  # ones first, never all padding
    assert (np.diff(mask, axis=1) <= 0).all()


def test_verify_on_an_embedding_model_never_indexes_past_the_table():
    report = verify(embedding_model(), embedding_model(path="direct"), samples=16)
    assert report.passed and report.samples == 16


def test_unknown_or_bad_dims_are_refused():
    with pytest.raises(VerifyError, match="no dimension 'sequence' .symbolic dimensions: batch, seq"):
        verify(embedding_model(), embedding_model(path="direct"), dims={"sequence": 4})
    with pytest.raises(VerifyError, match="dims: seq=0: need a positive integer"):
        verify(embedding_model(), embedding_model(path="direct"), dims={"seq": 0})


def test_an_int8_index_into_a_big_table_stays_inside_its_dtype():
    @program(inputs={"ids": TensorSpec((3,), "int8")})
    def net(b, ids):
        return b.gather(x=np.zeros((1000, 2), np.float32), indices=ids, axis=0, name="out")

    assert input_domains(net) == {"ids": Domain("index", 1000)}

    @given(inputs_for(net))
    @settings(max_examples=20, deadline=None)
    def inside(inputs):
        assert 0 <= inputs["ids"].min() and inputs["ids"].max() <= 127

    inside()


def _copy(prog):
    from ir.text import parse_program, print_program

    return parse_program(print_program(prog))


def test_sizes_a_model_needs_are_probed_from_the_graph():
    @program(inputs={"x": TensorSpec(("n",), "fp32")})
    def needs_five(b, x):  # a reshape to [5]: only n = 5 runs, never drawn from 1..4
        return b.reshape(x=x, shape=[5], name="out")

    report = verify(needs_five, _copy(needs_five), samples=8)
    assert report.passed and report.samples == 8 and dict(report.probed_dims) == {"n": 5}
    assert "found by probing: n=5" in report.summary()
    assert verify(needs_five, _copy(needs_five), samples=4, dims={"n": 5}).probed_dims == {}


def test_a_model_that_runs_on_no_generated_input_names_its_free_dims():
    @program(inputs={"x": TensorSpec(("n",), "fp32")})
    def needs_thousand(b, x):  # 10 x 100 elements: no size read off the graph gives 1000
        return b.reshape(x=x, shape=[10, 100], name="out")

    report = verify(needs_thousand, _copy(needs_thousand), samples=8)
    assert not report.passed and report.samples == 0
    assert "fails on every generated input" in report.reason and "dims 'n' were drawn" in report.reason
    assert "no outputs compared" in report.summary()
    assert verify(needs_thousand, _copy(needs_thousand), samples=4, dims={"n": 1000}).passed


def _sample_rate_switch():
    """silero-vad's shape: a model that takes one path for sr == 16000 and another for 8000;
    here y = x where sr is 16000 or 8000 and a failure (a Reshape of 3 values to 2) otherwise."""
    import onnx
    from onnx import TensorProto, helper

    from ir.formats.onnx import import_onnx

    nodes = [helper.make_node("Equal", ["sr", "k16"], ["is16"]), helper.make_node("Equal", ["k8", "sr"], ["is8"]),
             helper.make_node("Or", ["is16", "is8"], ["known"]),
             helper.make_node("Where", ["known", "x", "neg"], ["picked"]), helper.make_node("Neg", ["x"], ["neg"]),
             helper.make_node("Cast", ["known"], ["one"], to=TensorProto.INT64),
             helper.make_node("Add", ["one", "two"], ["size"]), helper.make_node("Reshape", ["picked", "size1"], ["y"]),
             helper.make_node("Unsqueeze", ["size", "zero"], ["size1"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("sr", TensorProto.INT64, []),
                     helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        [helper.make_tensor("k16", TensorProto.INT64, [], [16000]), helper.make_tensor("k8", TensorProto.INT64, [], [8000]),
         helper.make_tensor("two", TensorProto.INT64, [], [2]), helper.make_tensor("zero", TensorProto.INT64, [1], [0])])
    graph.node.sort(key=lambda n: ["is16", "is8", "known", "neg", "picked", "one", "size", "size1", "y"].index(n.output[0]))
    return import_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_an_integer_compared_with_constants_takes_their_values():
    from pipeline.strategies.inputs import example

    net = _sample_rate_switch()
    assert input_domains(net) == {"sr": Domain("choice", values=(8000, 16000))}
    assert str(input_domains(net)["sr"]) == "one of [8000, 16000]"
    drawn = {int(example(net.functions["main"], {}, input_domains(net), seed=s)["sr"]) for s in range(20)}
    assert drawn == {8000, 16000}

    @given(inputs_for(net))
    @settings(max_examples=20, deadline=None)
    def inside(inputs):
        assert int(inputs["sr"]) in (8000, 16000) and inputs["sr"].dtype == np.int64 and inputs["sr"].shape == ()

    inside()
    # so the drawn samples run the model, where any other sr fails
    from ir.interpret import EvaluationError, evaluate
    from pipeline.contracts import draw_inputs

    x = np.array([1.0, -2.0, 3.0], np.float32)
    for one in draw_inputs(net, 8):
        np.testing.assert_array_equal(evaluate(net, one)["y"], one["x"])
    with pytest.raises((EvaluationError, ValueError)):
        evaluate(net, {"sr": np.array(7, np.int64), "x": x})
