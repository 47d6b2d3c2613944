"""Models the corpus exports itself, deterministically, into a cache directory.

Nothing here downloads anything. The small test encoder (bert_tiny) is
randomly initialised with a fixed seed (torch.manual_seed(0)); the pretrained
sentence encoder (all_minilm_l6_v2, 90 MB: too large for the unit tests) takes
the same module and loads the weights a wheel ships (build_minilm). Their
structure is that of Hugging Face's BertModel (word + position + token-type
embeddings, post-LayerNorm blocks, erf GELU, additive attention mask from an
int64 mask, a tanh pooler), exported by torch's TorchScript exporter
(dynamo=False: the dynamo exporter needs onnxscript, which is not installed).
The sklearn pipeline is trained on the digits data set that scikit-learn ships
inside its wheel (sklearn.datasets.load_digits reads a bundled file).

Each builder writes `<cache>/<name>.onnx` once; the file name carries a
version so a change to a builder never reuses a stale file.
"""
from __future__ import annotations

import os
import re
import tempfile

import numpy as np

BERT = dict(vocab=1000, hidden=128, layers=2, heads=4, intermediate=512, max_positions=64,
            type_vocab=2, opset=17)
BUILD_VERSION = 2


def _atomic_save(model_proto, path: str) -> str:
    import onnx

    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=os.path.dirname(path))
    os.close(fd)
    try:
        onnx.save_model(model_proto, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _cached(cache_dir: str, name: str, build) -> str:
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"{name}-v{BUILD_VERSION}.onnx")
    if not os.path.exists(path):
        _atomic_save(build(), path)
    return path


# ---- a BERT-style encoder (torch) ----------------------------------------------

def _bert_module(cfg):
    import torch
    from torch import nn

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            h = cfg["hidden"]
            self.heads, self.head_dim = cfg["heads"], h // cfg["heads"]
            self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
            self.out = nn.Linear(h, h)
            self.norm = nn.LayerNorm(h, eps=1e-12)

        def split(self, x):
            b, s, _ = x.shape
            return x.view(b, s, self.heads, self.head_dim).permute(0, 2, 1, 3)

        def forward(self, x, additive_mask):
            q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
            scores = torch.matmul(q, k.transpose(-1, -2)) / (self.head_dim ** 0.5) + additive_mask
            ctx = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 2, 1, 3)
            ctx = ctx.reshape(x.shape[0], x.shape[1], -1)
            return self.norm(x + self.out(ctx))

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            h, i = cfg["hidden"], cfg["intermediate"]
            self.attention = SelfAttention()
            self.up, self.down = nn.Linear(h, i), nn.Linear(i, h)
            self.norm = nn.LayerNorm(h, eps=1e-12)

        def forward(self, x, additive_mask):
            x = self.attention(x, additive_mask)
            return self.norm(x + self.down(nn.functional.gelu(self.up(x))))

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            h = cfg["hidden"]
            self.word = nn.Embedding(cfg["vocab"], h)
            self.position = nn.Embedding(cfg["max_positions"], h)
            self.token_type = nn.Embedding(cfg["type_vocab"], h)
            self.norm = nn.LayerNorm(h, eps=1e-12)
            self.layers = nn.ModuleList(Layer() for _ in range(cfg["layers"]))
            self.pooler = nn.Linear(h, h)
            self.register_buffer("position_ids", torch.arange(cfg["max_positions"]).unsqueeze(0))

        def forward(self, input_ids, attention_mask, token_type_ids):
            seq = input_ids.shape[1]
            positions = self.position_ids[:, :seq]
            x = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)
            x = self.norm(x)
            additive = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
            for layer in self.layers:
                x = layer(x, additive)
            return x, torch.tanh(self.pooler(x[:, 0]))

    torch.manual_seed(0)
    return Encoder().eval()


def _export_encoder(module, pooled: str, opset: int):
    """A BERT-style torch module (input_ids, attention_mask, token_type_ids -> the last hidden
    state and a pooled output named `pooled`) as an ONNX model: TorchScript exporter, constants
    folded, dynamic batch and sequence."""
    import io
    import warnings

    import onnx
    import torch

    ids = torch.zeros((2, 8), dtype=torch.int64)
    buf = io.BytesIO()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes.update(last_hidden_state={0: "batch", 1: "sequence"}, **{pooled: {0: "batch"}})
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, on purpose
        torch.onnx.export(module, (ids, torch.ones_like(ids), torch.zeros_like(ids)), buf,
                          input_names=names, output_names=["last_hidden_state", pooled],
                          dynamic_axes=axes, opset_version=opset, dynamo=False, do_constant_folding=True)
    return onnx.load_from_string(buf.getvalue())


def build_bert(cache_dir: str) -> str:
    """A 2-layer BERT-style encoder (random weights, seed 0), opset 17, dynamic batch and sequence."""

    def build():
        return _export_encoder(_bert_module(BERT), "pooler_output", BERT["opset"])

    return _cached(cache_dir, "bert_tiny", build)


# ---- a pretrained sentence encoder: all-MiniLM-L6-v2's weights from a wheel --------------

MINILM = dict(vocab=30522, hidden=384, layers=6, heads=12, intermediate=1536, max_positions=512,
              type_vocab=2, opset=17)

# Hugging Face BertModel's parameter names -> _bert_module's
_HF_NAMES = ((r"^embeddings\.word_embeddings\.", "word."), (r"^embeddings\.position_embeddings\.", "position."),
             (r"^embeddings\.token_type_embeddings\.", "token_type."), (r"^embeddings\.LayerNorm\.", "norm."),
             (r"^encoder\.layer\.(\d+)\.attention\.self\.", r"layers.\1.attention."),
             (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"layers.\1.attention.out."),
             (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"layers.\1.attention.norm."),
             (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"layers.\1.up."),
             (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"layers.\1.down."),
             (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"layers.\1.norm."),
             (r"^pooler\.dense\.", "pooler."))

_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def read_safetensors(path: str) -> dict:
    """name -> numpy array from a .safetensors file (an 8-byte little-endian header length,
    a JSON header of dtype / shape / byte offsets, then the raw data), without the package."""
    import json
    import struct

    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        out[name] = np.frombuffer(data[start:end], _SAFETENSORS_DTYPES[meta["dtype"]]).reshape(meta["shape"])
    return out


def _renamed(name: str):
    for pattern, repl in _HF_NAMES:
        if re.match(pattern, name):
            return re.sub(pattern, repl, name)
    return None


def build_minilm(cache_dir: str, weights_path: str, name: str = "all_minilm_l6_v2") -> str:
    """all-MiniLM-L6-v2 (sentence-transformers, 22.7M parameters) as ONNX: the BertModel of
    `_bert_module` with the pretrained weights of `weights_path` (model.safetensors), opset 17,
    dynamic batch and sequence; outputs last_hidden_state and sentence_embedding (the mean of
    the token states under the attention mask: the model's own pooling, 1_Pooling/config.json;
    its final L2 normalisation is left out, cosines do not see it). The BERT pooler, which the
    sentence model never reads, is not exported."""

    return _cached(cache_dir, name,
                   lambda: _export_encoder(minilm_module(weights_path), "sentence_embedding", MINILM["opset"]))


def minilm_module(weights_path: str, states: bool = True):
    """all-MiniLM-L6-v2 as a torch module in eval mode: forward(input_ids, attention_mask,
    token_type_ids) -> (last hidden states, sentence embedding) with `states`, else the sentence
    embedding alone (what bench_quality_coreml converts)."""
    import torch
    from torch import nn

    encoder = _bert_module(MINILM)
    state = {}
    for key, value in read_safetensors(weights_path).items():
        target = _renamed(key)
        if target is not None:
            state[target] = torch.from_numpy(value.copy())
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if [m for m in missing if m != "position_ids"] or unexpected:
        raise ValueError(f"{weights_path}: weights do not fit the encoder (missing {missing}, "
                         f"unexpected {unexpected})")

    class Sentence(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden, _ = self.encoder(input_ids, attention_mask, token_type_ids)
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return (hidden, pooled) if states else pooled

    return Sentence().eval()


def bert_inputs(rng, batch: int = 2, seq: int = 16) -> dict:
    ids = rng.integers(0, BERT["vocab"], size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), np.int64)
    mask[1:, seq - seq // 4:] = 0  # padded tail on every row but the first
    types = np.zeros((batch, seq), np.int64)
    types[:, seq // 2:] = 1  # a second segment
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


# ---- an sklearn pipeline through skl2onnx (ZipMap) -------------------------------

def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.data.astype(np.float32), data.target


def build_sklearn_mlp(cache_dir: str) -> str:
    """StandardScaler -> MLPClassifier(128, 64) on digits, with skl2onnx's ZipMap output."""

    def build():
        import warnings

        from skl2onnx import to_onnx
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        x, y = digits()
        # 40 epochs: 93% held-out accuracy, and a build of a few seconds (it runs in the tests)
        pipe = make_pipeline(StandardScaler(),
                             MLPClassifier(hidden_layer_sizes=(128, 64), max_iter=40, random_state=0))
        from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

        # one BLAS thread: on these tiny matrices, threads contending on a busy machine make
        # training 20x slower (25 s instead of 1.3 s measured here)
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore")  # ConvergenceWarning: 40 epochs is deliberate
            pipe.fit(x[:1200], y[:1200])
        return to_onnx(pipe, x[:1], target_opset={"": 17, "ai.onnx.ml": 3})

    return _cached(cache_dir, "sklearn_mlp_zipmap", build)


def sklearn_inputs(rng, batch: int = 16) -> dict:
    x, _ = digits()
    held_out = x[1200:]
    rows = rng.choice(len(held_out), size=batch, replace=False)
    return {"X": held_out[rows]}


# ---- a slice of a shipped model -------------------------------------------------------

def build_slice(cache_dir: str, name: str, source: str, outputs: list, rank: int = 4) -> str:
    """The part of `source` from its inputs to `outputs` (float tensors of `rank`), keeping its
    opset imports, producer and metadata_props (onnx's Extractor keeps the nodes only)."""

    def build():
        import onnx
        from onnx.utils import Extractor

        model = onnx.load(source)
        known = {vi.name for vi in model.graph.value_info}
        for name in outputs:  # shape inference may not reach them (paddle2onnx's dynamic dims)
            if name not in known:
                vi = onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [None] * rank)
                model.graph.value_info.append(vi)
        part = Extractor(model).extract_model([i.name for i in model.graph.input], outputs)
        del part.opset_import[:]
        part.opset_import.extend(model.opset_import)
        part.ir_version, part.producer_name = model.ir_version, model.producer_name
        part.metadata_props.extend(model.metadata_props)
        return part

    return _cached(cache_dir, name, build)
