"""`weightpress verify` on a PyTorch-exported transformer (issue 13's acceptance check).

A small encoder exported by torch.onnx: token + position embeddings (int64 token ids
feed a Gather into a 100-row table), one attention layer with an additive padding mask
built from an int64 attention_mask, a feed-forward block and a classification head, with
dynamic batch and sequence. It is compressed with `weightpress compress --quantize int8`;
verify must pass on generated inputs (ids below 100, 0/1 masks) and on real inputs from an
.npz, in the interpreter and in onnxruntime, and fail, exit 1, naming the output, for a
deliberately broken model.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import numpy_helper  # noqa: E402

from pipeline.cli import EXIT_FAIL, EXIT_OK, main  # noqa: E402

nn = torch.nn
VOCAB, MAX_LEN = 100, 16


class Tiny(nn.Module):
    def __init__(self, d=32, ff=96, n_out=4):
        super().__init__()
        self.tok, self.pos = nn.Embedding(VOCAB, d), nn.Embedding(MAX_LEN, d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff1, self.ff2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.head = nn.Linear(d, n_out)
        self.scale = 1.0 / math.sqrt(d)

    def forward(self, input_ids, attention_mask):
        pos = torch.arange(input_ids.shape[1]).unsqueeze(0)
        x = self.tok(input_ids) + self.pos(pos)
        scores = self.q(x) @ self.k(x).transpose(1, 2) * self.scale
        scores = scores + (1.0 - attention_mask[:, None, :].to(x.dtype)) * -1e4
        x = self.ln1(x + self.o(torch.softmax(scores, -1) @ self.v(x)))
        x = self.ln2(x + self.ff2(nn.functional.gelu(self.ff1(x))))
        return self.head(x[:, 0])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(original.onnx, its int8 compression, a broken copy) in a temporary directory."""
    d = tmp_path_factory.mktemp("transformer")
    torch.manual_seed(0)
    ids = torch.zeros((2, 8), dtype=torch.int64)
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "logits": {0: "batch"}}
    original = d / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter, on purpose (as the corpus does)
        torch.onnx.export(Tiny().eval(), (ids, torch.ones_like(ids)), str(original),
                          input_names=["input_ids", "attention_mask"], output_names=["logits"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    small = d / "tiny-int8.onnx"
    assert main(["compress", str(original), "-o", str(small), "--quantize", "int8", "-q"]) == EXIT_OK
    broken = d / "tiny-broken.onnx"
    model = onnx.load(str(original))
    for init in model.graph.initializer:  # the head's bias off by 1: every logit moves
        if init.name == "head.bias":
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + np.float32(1.0), init.name))
            break
    else:
        raise AssertionError("no head.bias initializer")
    onnx.save(model, str(broken))
    return original, small, broken


def _npz(path, batch=6, seq=10):
    rng = np.random.default_rng(1)
    mask = np.ones((batch, seq), np.int64)
    mask[1:, seq - 3:] = 0  # a padded tail on all rows but the first
    np.savez(path, input_ids=rng.integers(0, VOCAB, (batch, seq)), attention_mask=mask)
    return path


def test_the_int8_model_passes_on_generated_inputs(models, capsys):
    original, small, _ = models
    code = main(["verify", str(original), str(small), "--snr-db", "30", "--samples", "16"])
    out = capsys.readouterr().out
    assert code == EXIT_OK, out
    assert "passed over 16 samples" in out and "logits" in out and "cosine" in out


def test_generated_inputs_stay_inside_the_embedding_table(models):
    from ir.formats.onnx import import_onnx
    from pipeline.strategies import Domain, input_domains

    domains = input_domains(import_onnx(models[0]))
    assert domains == {"input_ids": Domain("index", VOCAB), "attention_mask": Domain("mask")}


def test_the_int8_model_passes_on_real_inputs_in_both_evaluators(models, tmp_path, capsys):
    original, small, _ = models
    x = _npz(tmp_path / "x.npz")
    for evaluator in ("interpreter", "onnxruntime"):
        code = main(["verify", str(original), str(small), "--snr-db", "30", "--inputs", str(x),
                     "--evaluator", evaluator])
        out = capsys.readouterr().out
        assert code == EXIT_OK, (evaluator, out)
        assert "passed over 1 samples" in out  # dynamic batch: the 6 rows in one batch


def test_sizes_of_symbolic_dims_from_the_command_line(models, capsys):
    original, small, _ = models
    assert main(["verify", str(original), str(small), "--snr-db", "30", "--samples", "4",
                 "--dim", "sequence=16", "--dim", "batch=3"]) == EXIT_OK
    capsys.readouterr()
    # 17 positions index past the 16-row position table: every input fails on the original
    assert main(["verify", str(original), str(small), "--samples", "4", "--dim", "sequence=17"]) == EXIT_FAIL
    assert "the reference program fails" in capsys.readouterr().out


@pytest.mark.parametrize("real_inputs", [False, True])
def test_a_broken_model_fails_naming_the_output(models, tmp_path, capsys, real_inputs):
    original, _, broken = models
    extra = ["--inputs", str(_npz(tmp_path / "x.npz"))] if real_inputs else ["--samples", "8"]
    code = main(["verify", str(original), str(broken), "--snr-db", "30", *extra])
    captured = capsys.readouterr()
    assert code == EXIT_FAIL
    assert "NOT equivalent" in captured.out
    assert "weightpress: verify failed: output 'logits'" in captured.err


def test_bad_input_files_are_one_line_errors(models, tmp_path, capsys):
    original, small, _ = models
    not_npz = tmp_path / "x.npz"
    not_npz.write_text("not a zip")
    wrong_name = tmp_path / "names.npz"
    np.savez(wrong_name, input_ids=np.zeros((2, 4), np.int64), mask=np.ones((2, 4), np.int64))
    floats = tmp_path / "floats.npz"
    np.savez(floats, input_ids=np.zeros((2, 4)), attention_mask=np.ones((2, 4), np.int64))
    cases = {tmp_path / "missing.npz": "no such file", not_npz: "not a readable .npz",
             wrong_name: "no array for input 'attention_mask'",
             floats: "input 'input_ids': float64 values for an input of dtype int64"}
    for path, fragment in cases.items():
        code = main(["verify", str(original), str(small), "--inputs", str(path)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == EXIT_FAIL and len(err) == 1, err
        assert err[0].startswith("weightpress: error: ") and fragment in err[0], err[0]


def test_bad_dim_options_are_usage_errors(models, capsys):
    original, small, _ = models
    with pytest.raises(SystemExit) as e:
        main(["verify", str(original), str(small), "--dim", "sequence"])
    assert e.value.code == 2
    code = main(["verify", str(original), str(small), "--dim", "seq=4"])
    err = capsys.readouterr().err
    assert code == EXIT_FAIL and "no dimension 'seq'" in err and "batch, sequence" in err


class TorchLayer(nn.Module):
    """torch's own nn.TransformerEncoderLayer: its export bakes the example's sequence
    length (8) into reshapes while declaring the dim symbolic."""

    def __init__(self, d=64):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, d)
        self.layer = nn.TransformerEncoderLayer(d, 2, 2 * d, batch_first=True, dropout=0.0)
        self.head = nn.Linear(d, 3)

    def forward(self, input_ids, attention_mask):
        return self.head(self.layer(self.tok(input_ids), src_key_padding_mask=attention_mask == 0)[:, 0])


def test_a_torch_encoder_layer_with_a_baked_sequence_length(tmp_path, capsys):
    torch.manual_seed(0)
    ids = torch.zeros((2, 8), dtype=torch.int64)
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    original, small = tmp_path / "layer.onnx", tmp_path / "layer-int8.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(TorchLayer().eval(), (ids, torch.ones_like(ids)), str(original),
                          input_names=["input_ids", "attention_mask"], output_names=["logits"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    assert main(["compress", str(original), "-o", str(small), "--quantize", "int8", "-q", "--no-check"]) == EXIT_OK
    capsys.readouterr()
    code = main(["verify", str(original), str(small), "--snr-db", "30", "--samples", "8"])
    out = capsys.readouterr().out
    assert code == EXIT_OK, out
    assert "found by probing: sequence=8" in out and "SNR inf" not in out  # the weights did change
