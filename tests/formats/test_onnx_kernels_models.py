"""Our kernels on real exports: small PyTorch models exported by torch.onnx at several
opsets (a BERT-style encoder with the GatherElements pattern the reference evaluator
gets wrong, a CNN with the conv / pool / resize variants, stacked LSTM / GRU / RNN,
and a mix of the ops exporters emit), run node by node through the kernel table
(every node, core-mapped ones included; no import) and compared with onnxruntime."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from ir.formats.onnx.common import attr_to_ir, opset_of  # noqa: E402
from ir.formats.onnx.kernels import Node, kernel_for  # noqa: E402

nn = torch.nn


def run_with_kernels(model, feeds: dict) -> list:
    env = dict(feeds)
    env.update({t.name: numpy_helper.to_array(t) for t in model.graph.initializer})
    with np.errstate(all="ignore"):
        for n in model.graph.node:
            kernel = kernel_for(n.op_type, n.domain)
            assert kernel is not None, f"no kernel for {n.op_type}"
            attrs = {a.name: attr_to_ir(a) for a in n.attribute}
            node = Node(n.op_type, opset_of(model, n.domain), len(n.output))
            outs = kernel([env[i] if i else None for i in n.input], attrs, node)
            env.update((name, v) for name, v in zip(n.output, outs) if name)
    return [env[o.name] for o in model.graph.output]


def export(module, args, opset, **kw):
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, buf, opset_version=opset, dynamo=False, **kw)
    return onnx.load_from_string(buf.getvalue())


class Encoder(nn.Module):
    """BERT-style: token + position embeddings (position ids through gather, the
    GatherElements PyTorch emits), two transformer layers with a padding mask."""

    def __init__(self):
        super().__init__()
        self.tok, self.pos = nn.Embedding(50, 16), nn.Embedding(32, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, activation="gelu")
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def forward(self, ids, mask):
        pos = torch.arange(ids.shape[1]).unsqueeze(0).expand_as(ids)
        pos = torch.gather(pos, 1, torch.arange(ids.shape[1]).unsqueeze(0).expand_as(ids))
        return self.enc(self.tok(ids) + self.pos(pos), src_key_padding_mask=mask == 0)


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.bn = nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, groups=8, padding=2, dilation=2)
        self.pool, self.avg = nn.MaxPool2d(3, 2, ceil_mode=True), nn.AvgPool2d(2, count_include_pad=False, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.ct = nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        y = self.avg(self.pool(self.c2(nn.functional.hardswish(self.bn(self.c1(x))))))
        y = self.ct(nn.functional.interpolate(self.up(y), size=(7, 9), mode="nearest"))
        return torch.log_softmax(self.fc(nn.functional.adaptive_avg_pool2d(y, 1).flatten(1)), -1)


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(6, 5, num_layers=2, bidirectional=True, batch_first=True)
        self.gru, self.rnn = nn.GRU(10, 4, batch_first=True), nn.RNN(4, 3, nonlinearity="relu")

    def forward(self, x):
        y, (h, c) = self.lstm(x)
        y, h2 = self.gru(y)
        y, h3 = self.rnn(y.transpose(0, 1))
        return y, h, c, h2, h3


class Mix(nn.Module):
    def forward(self, x):
        f = nn.functional
        return (torch.topk(x, 3, dim=-1).values, torch.cumsum(x, 1), x.argmax(-1, keepdim=True).float(),
                f.pad(x, (1, 2), mode="reflect"), torch.einsum("bi,bj->bij", x, x).sum(-1),
                f.gelu(x, approximate="tanh") + f.mish(x) + f.elu(x) + f.softplus(x),
                f.layer_norm(x, (x.shape[-1],)), f.group_norm(x.unsqueeze(-1), 2).squeeze(-1),
                x.flip(1)[:, ::2], torch.tril(x), torch.gather(x, 1, torch.argsort(x, dim=1)),
                x.masked_fill(x < -1, 0.5).clamp(-0.3, 0.7), f.normalize(x, dim=1))


def _ids():
    rng = np.random.default_rng(0)
    ids = torch.from_numpy(rng.integers(0, 50, (2, 12)))
    mask = torch.ones(2, 12, dtype=torch.int64)
    mask[1, 7:] = 0
    return ids, mask


MODELS = [
    ("encoder_14", Encoder, _ids, 14, {"input_names": ["ids", "mask"],
                                       "dynamic_axes": {"ids": {0: "b", 1: "s"}, "mask": {0: "b", 1: "s"}}}),
    ("cnn_11", CNN, lambda: (torch.randn(2, 3, 17, 15),), 11, {}),
    ("cnn_17", CNN, lambda: (torch.randn(2, 3, 17, 15),), 17, {}),
    ("recurrent_13", Recurrent, lambda: (torch.randn(3, 7, 6),), 13, {}),
    ("mix_17", Mix, lambda: (torch.randn(4, 8),), 17, {}),
]


@pytest.mark.parametrize("case", MODELS, ids=[m[0] for m in MODELS])
def test_kernels_run_real_exports_like_onnxruntime(case):
    _, cls, make_args, opset, kw = case
    torch.manual_seed(0)
    args = make_args()
    model = export(cls(), args, opset, **kw)
    feeds = {i.name: a.numpy() for i, a in zip(model.graph.input, args)}
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = sess.run(None, feeds)
    got = run_with_kernels(model, feeds)
    for e, g in zip(expected, got):
        g = np.asarray(g)
        assert g.shape == e.shape and g.dtype == e.dtype
        scale = max(float(np.max(np.abs(e))), 1.0) if e.size else 1.0
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-5 * scale)
