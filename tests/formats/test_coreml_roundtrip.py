"""Core ML -> IR -> Core ML on mlprograms built with coremltools' MIL builder.
Predictions do not run on Linux, so weights are checked numerically: the
dense values coremltools itself computes for every constexpr op, before and
after, against the interpreter's values."""
import numpy as np
import pytest

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.frontend.milproto.load import load as milproto_load  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

from ir.formats.coreml import CoreMLExportError, CoreMLFormatError, export_coreml, import_coreml  # noqa: E402
from ir.interpret import EvaluationError, evaluate, run_op  # noqa: E402

RNG = np.random.default_rng(11)


def save(prog, path, target):
    model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=target,
                       pass_pipeline=ct.PassPipeline.EMPTY, skip_model_load=True)
    model.save(str(path))
    return path


def coreml_dense_weights(path) -> dict:
    """{constexpr op name: the dense value coremltools computes}, read back from the package."""
    model = ct.models.MLModel(str(path), skip_model_load=True)
    spec = model.get_spec()
    prog = milproto_load(spec, spec.specificationVersion, model.weights_dir)
    out = {}
    for op in prog.functions["main"].operations:
        if op.op_type.startswith("constexpr_") and len(op.outputs) == 1:
            out[op.name] = np.asarray(op.materialized_val_inference())
    return out


def ir_dense_weights(prog) -> dict:
    """{constexpr op name: the interpreter's value} (consts and constexpr ops need no inputs)."""
    env, out = {}, {}
    for op in prog.main.ops:
        if op.op_type == "const" or op.op_type.startswith("constexpr_"):
            for v, val in zip(op.outputs, run_op(op, env)):
                env[v.name] = val
            if op.op_type.startswith("constexpr_") and len(op.outputs) == 1:
                out[op.name] = env[op.outputs[0].name]
    return out


def ios18_program():
    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 3, 8, 8))], opset_version=ct.target.iOS18)
    def prog(x):
        conv_w = mb.constexpr_blockwise_shift_scale(
            data=RNG.integers(-8, 8, (4, 3, 3, 3)).astype(types.np_int4_dtype),
            scale=(RNG.random((4, 1, 1, 1)) * 0.1 + 0.01).astype(np.float32),
            offset=RNG.integers(-2, 2, (4, 1, 1, 1)).astype(types.np_int4_dtype), name="conv_w")
        y = mb.conv(x=x, weight=conv_w, pad_type="same", name="conv")
        y = mb.relu(x=y, name="relu")
        y = mb.reshape(x=y, shape=[1, 256], name="flat")
        lut_w = mb.constexpr_lut_to_dense(
            indices=RNG.integers(0, 16, (32, 256)).astype(types.np_uint4_dtype),
            lut=RNG.standard_normal((4, 2, 16, 1)).astype(np.float32), name="lut_w")
        y = mb.linear(x=y, weight=lut_w, name="fc1")
        y = mb.layer_norm(x=y, axes=[-1], epsilon=1e-5, name="ln")
        mask = (RNG.random((16, 32)) < 0.4).astype(types.np_uint1_dtype)
        sparse_w = mb.constexpr_sparse_to_dense(
            nonzero_data=RNG.standard_normal(int(mask.sum())).astype(np.float32), mask=mask, name="sparse_w")
        y = mb.linear(x=y, weight=sparse_w, name="fc2")
        m2 = (RNG.random((8, 16)) < 0.5).astype(types.np_uint1_dtype)
        lmask, lvals = mb.constexpr_lut_to_sparse(
            indices_mask=m2, indices_nonzero_data=RNG.integers(0, 4, int(m2.sum())).astype(types.np_uint2_dtype),
            lut=RNG.standard_normal((1, 1, 4, 1)).astype(np.float32), name="lut_sparse")
        ls_w = mb.constexpr_sparse_to_dense(nonzero_data=lvals, mask=lmask, name="lut_sparse_w")
        y = mb.linear(x=y, weight=ls_w, name="fc3")
        m3 = (RNG.random((4, 8)) < 0.5).astype(types.np_uint1_dtype)
        qmask, qvals = mb.constexpr_sparse_blockwise_shift_scale(
            data_mask=m3, nonzero_data=RNG.integers(-128, 127, int(m3.sum())).astype(np.int8),
            scale=np.full((4, 1), 0.05, np.float32), name="q_sparse")
        q_w = mb.constexpr_sparse_to_dense(nonzero_data=qvals, mask=qmask, name="q_sparse_w")
        y = mb.linear(x=y, weight=q_w, name="fc4")
        y = mb.elu(x=y, alpha=0.5, name="elu")  # no core op: travels as mil.elu
        return mb.softmax(x=y, axis=-1, name="probs")
    return prog


def ios16_program():
    @mb.program(input_specs=[mb.TensorSpec(shape=(2, 16))], opset_version=ct.target.iOS16)
    def prog(x):
        q = mb.constexpr_affine_dequantize(
            quantized_data=RNG.integers(0, 256, (8, 16)).astype(np.uint8),
            zero_point=RNG.integers(100, 150, 8).astype(np.uint8),
            scale=(RNG.random(8) * 0.01 + 0.001).astype(np.float32), axis=0, name="affine_w")
        y = mb.linear(x=x, weight=q, name="fc1")
        idx = RNG.integers(0, 4, 6 * 8).astype(np.uint8)
        packed = np.frombuffer(_pack(idx, 2), np.uint8)
        lut_w = mb.constexpr_lut_to_dense(indices=packed, lut=RNG.standard_normal(4).astype(np.float32),
                                          shape=np.array([6, 8], np.uint32), name="lut_w")
        y = mb.linear(x=y, weight=lut_w, name="fc2")
        mask = RNG.random(4 * 6) < 0.5
        sparse_w = mb.constexpr_sparse_to_dense(
            nonzero_data=RNG.standard_normal(int(mask.sum())).astype(np.float32),
            mask=np.packbits(mask.astype(np.uint8), bitorder="little"),
            shape=np.array([4, 6], np.uint32), name="sparse_w")
        return mb.linear(x=y, weight=sparse_w, name="out")
    return prog


def _pack(values, nbits):
    from ir.packing import pack
    return pack(values, f"uint{nbits}")


def assert_same_weights(a: dict, b: dict, names):
    for n in names:
        np.testing.assert_allclose(b[n], a[n], rtol=1e-6, atol=1e-7, err_msg=n)


def test_ios18_round_trip(tmp_path):
    src = save(ios18_program(), tmp_path / "src.mlpackage", ct.target.iOS18)
    prog = import_coreml(src)
    ops = {op.name: op.op_type for _, op in prog.walk()}
    assert ops["conv"] == "conv" and ops["fc1"] == "linear" and ops["ln"] == "layer_norm"
    assert ops["lut_sparse"] == "constexpr_lut_to_sparse" and ops["elu"] == "mil.elu"
    theirs = coreml_dense_weights(src)
    mine = ir_dense_weights(prog)
    names = ["conv_w", "lut_w", "sparse_w", "lut_sparse_w", "q_sparse_w"]
    assert_same_weights(theirs, mine, names)

    out = export_coreml(prog, tmp_path / "out.mlpackage", target="iOS18")
    back = coreml_dense_weights(out)
    assert_same_weights(theirs, back, names)
    again = import_coreml(out)
    assert [op.op_type for op in again.main.ops if op.op_type != "const"] == \
           [op.op_type for op in prog.main.ops if op.op_type != "const"]
    # the stored (compressed) weights are the same too, as coremltools reports them
    before = ct.optimize.coreml.get_weights_metadata(ct.models.MLModel(str(src), skip_model_load=True), 0)
    after = ct.optimize.coreml.get_weights_metadata(ct.models.MLModel(str(out), skip_model_load=True), 0)
    assert sorted((v.val.shape, v.val.tobytes()) for v in before.values()) == \
           sorted((v.val.shape, v.val.tobytes()) for v in after.values())


def test_foreign_mil_ops_do_not_evaluate(tmp_path):
    prog = import_coreml(save(ios18_program(), tmp_path / "src.mlpackage", ct.target.iOS18))
    with pytest.raises(EvaluationError, match="mil.elu"):
        evaluate(prog, {"x": np.ones((1, 3, 8, 8), np.float32)})


def test_ios16_round_trip_and_upgrade(tmp_path):
    src = save(ios16_program(), tmp_path / "src.mlpackage", ct.target.iOS16)
    prog = import_coreml(src)
    assert prog.main.opset == "iOS16"
    lut = next(op for op in prog.main.ops if op.name == "lut_w")
    assert lut.indices.dtype == "uint2" and lut.indices.shape == (48,)  # unpacked on the way in
    theirs = coreml_dense_weights(src)
    names = ["affine_w", "lut_w", "sparse_w"]
    assert_same_weights(theirs, ir_dense_weights(prog), names)
    x = RNG.standard_normal((2, 16)).astype(np.float32)
    want = evaluate(prog, {"x": x})["out"]
    for target in ("iOS16", "iOS18"):
        out = export_coreml(prog, tmp_path / f"{target}.mlpackage", target=target)
        assert_same_weights(theirs, coreml_dense_weights(out), names)
        np.testing.assert_allclose(evaluate(import_coreml(out), {"x": x})["out"], want, rtol=1e-5, atol=1e-5)


def test_builder_program_exports(tmp_path):
    """An IR program built with ir.builder (compressed weights, core ops) goes out as Core ML."""
    from ir.builder import TensorSpec, program

    q = RNG.integers(-8, 8, (16, 32))
    scale = (RNG.random((16, 4)) * 0.1).astype(np.float32)

    @program(inputs={"x": TensorSpec((1, 32))})
    def net(b, x):
        w = b.constexpr_blockwise_shift_scale(data=b.const(q, dtype="int4"), scale=scale, name="w")
        return b.relu(x=b.linear(x=x, weight=w, name="fc"), name="y")
    out = export_coreml(net, tmp_path / "net.mlpackage")
    np.testing.assert_allclose(coreml_dense_weights(out)["w"], ir_dense_weights(net)["w"], rtol=1e-6)
    with pytest.raises(CoreMLExportError, match="iOS16"):
        export_coreml(net, tmp_path / "old.mlpackage", target="iOS16")  # int4 blocks have no iOS16 form


def test_export_is_atomic_and_replaces(tmp_path):
    from ir.builder import TensorSpec, program

    @program(inputs={"x": TensorSpec((1, 4))})
    def net(b, x):
        return b.relu(x=x, name="y")
    path = tmp_path / "m.mlpackage"
    export_coreml(net, path)
    export_coreml(net, path)  # over an existing package
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mlpackage"]


@pytest.mark.parametrize("make", [
    lambda p: p.write_bytes(b"\x00garbage" * 5),
    lambda p: p.mkdir(),
])
def test_damaged_packages_raise(tmp_path, make):
    bad = tmp_path / "bad.mlpackage"
    make(bad)
    with pytest.raises(CoreMLFormatError, match="bad.mlpackage"):
        import_coreml(bad)


def test_missing_package(tmp_path):
    with pytest.raises(CoreMLFormatError, match="no such"):
        import_coreml(tmp_path / "nope.mlpackage")


def test_symbolic_dims_keep_their_names(tmp_path):
    """The MIL proto stores no dim names: export records them, import restores them, so a
    round trip keeps the signature and verify accepts it."""
    from ir.builder import TensorSpec, program
    from pipeline.verify import verify

    @program(inputs={"x": TensorSpec(("N", 4)), "z": TensorSpec(("N", 3))})
    def net(b, x, z):
        y = b.linear(x=x, weight=RNG.standard_normal((3, 4)).astype(np.float32))
        return b.add(x=y, y=z, name="y")
    back = import_coreml(export_coreml(net, tmp_path / "n.mlpackage"))
    assert [v.shape for v in back.main.inputs] == [("N", 4), ("N", 3)]
    assert back.main.outputs[0].shape == ("N", 3)
    report = verify(net, back, samples=2)
    assert report.passed, report.reason


def test_description_and_metadata_survive(tmp_path):
    """An image input, descriptions and metadata are the source model's: they come back as they were."""
    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 3, 8, 8))], opset_version=ct.target.iOS17)
    def prog(x):
        w = RNG.standard_normal((16, 3, 3, 3)).astype(np.float32)
        return mb.relu(x=mb.conv(x=x, weight=w, name="conv"), name="y")
    model = ct.convert(prog, convert_to="mlprogram", inputs=[ct.ImageType(name="x", shape=(1, 3, 8, 8), scale=1 / 255)],
                       minimum_deployment_target=ct.target.iOS17, skip_model_load=True)
    model.author, model.license, model.short_description = "me", "MIT", "tiny"
    model.user_defined_metadata["labels"] = "cat,dog"
    model.input_description["x"] = "an image"
    model.save(str(tmp_path / "img.mlpackage"))
    out = export_coreml(import_coreml(tmp_path / "img.mlpackage"), tmp_path / "out.mlpackage")
    back = ct.models.MLModel(out, skip_model_load=True)
    assert back.get_spec().description == model.get_spec().description
    assert back.get_spec().specificationVersion == 8
    assert (back.author, back.user_defined_metadata["labels"], back.input_description["x"]) == ("me", "cat,dog", "an image")


def test_reading_and_writing_need_no_coremltools(tmp_path):
    """The Core ML path imports neither coremltools nor ml_dtypes (seconds of start-up each)."""
    import subprocess
    import sys
    from pathlib import Path

    src = save(ios16_program(), tmp_path / "src.mlpackage", ct.target.iOS16)
    code = ("import sys\n"
            "from ir.formats.coreml import import_coreml, export_coreml\n"
            "from pipeline import Pipeline\n"
            f"p = Pipeline.preset('int8').run(import_coreml({str(src)!r})).result\n"
            f"export_coreml(p, {str(tmp_path / 'out.mlpackage')!r})\n"
            "print(sorted(m for m in ('coremltools', 'ml_dtypes', 'torch') if m in sys.modules))\n")
    repo = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo,
                          env={"PYTHONPATH": repo, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert ct.models.MLModel(str(tmp_path / "out.mlpackage"), skip_model_load=True).get_spec().specificationVersion == 7


def test_digest_and_bytes_do_not_depend_on_the_process(tmp_path):
    """protobuf maps iterate in a per-process order: the importer and exporter sort them, so the
    same package gives the same program digest and writes the same bytes in every process."""
    import hashlib
    import subprocess
    import sys
    from pathlib import Path

    src = save(ios18_program(), tmp_path / "src.mlpackage", ct.target.iOS18)
    code = ("import hashlib, sys\n"
            "from ir.formats.coreml import import_coreml, export_coreml\n"
            "from ir.formats.coreml.package import locate\n"
            "p = import_coreml(sys.argv[1])\n"
            "out = export_coreml(p, sys.argv[2])\n"
            "print(p.digest, hashlib.sha256(open(locate(out)[0], 'rb').read()).hexdigest())\n")
    repo = str(Path(__file__).resolve().parents[2])
    seen = set()
    for i in range(3):
        proc = subprocess.run([sys.executable, "-c", code, str(src), str(tmp_path / f"o{i}.mlpackage")],
                              capture_output=True, text=True, cwd=repo, env={"PYTHONPATH": repo, "PATH": "/usr/bin:/bin"})
        assert proc.returncode == 0, proc.stderr
        seen.add(proc.stdout.strip())
    assert len(seen) == 1, seen
    weights = [hashlib.sha256((tmp_path / f"o{i}.mlpackage" / "Data" / "com.apple.CoreML" / "weights" /
                               "weight.bin").read_bytes()).hexdigest() for i in range(3)]
    assert len(set(weights)) == 1
