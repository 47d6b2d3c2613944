"""Calibration data: the samples `calibrate` runs through the model, loaded, checked and
content-addressed.

    data = calibration_data("calib.npz")          # or a directory of .npz, {name: array}, [dicts]
    Pipeline([calibrate(data=data), gptq_quantize_weights(dtype="int4")]).run(prog)
    Pipeline([...]).run(prog, calibration="calib.npz")      # the same: calibrate runs first
    weightpress compress M -o OUT --calibration calib.npz --palettize 4
    recipe / spec:  calibrate{data="calib.npz"}   (a path is loaded when the spec is read)

The arrays follow verify's input rules (pipeline/samples.py, the one loader): one array per
model input, named like it, samples along the leading axis, cut into the batches the model
accepts (a model exported with a fixed batch of B gets them B at a time; one with a symbolic
batch axis, one sample at a time: BATCH_WORD below says why and when; trailing padding that an
attention mask marks is cut: ATTENTION_MASK_NAMES below). A directory
contributes every ``*.npz`` in it, in name order, each file a set of samples. Wrong names,
shapes or dtypes are a CalibrationDataError naming the input, raised when the data is first
checked against the program (``Pipeline.run`` does that before any stage runs).

The data's identity is the sha256 of its names, dtypes, shapes and bytes, in order
(``digest``); it is all the cache key of ``calibrate`` holds of it, so the same samples
from another path hit the cache and changed samples never do.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from ir.digest import tensor_digest
from pipeline.errors import PipelineError, VerifyError
from pipeline.samples import UNKNOWN, batches, load_npz


class CalibrationDataError(PipelineError):
    """Calibration data that cannot be read or does not fit the model; the message names the input."""


def _items_of(source) -> tuple:
    """(list of {name: array} sample sets, a description for messages)."""
    if isinstance(source, CalibrationData):
        return list(source.sample_sets), source.source
    if isinstance(source, Mapping):
        return [dict(source)], "calibration arrays"
    if isinstance(source, (list, tuple)):
        if not all(isinstance(x, Mapping) for x in source):
            raise CalibrationDataError("calibration data: a list must hold dicts of input name -> array")
        return [dict(x) for x in source], "calibration arrays"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix == ".npz")
            if not files:
                raise CalibrationDataError(f"calibration data {path}: a directory with no .npz file")
            return [_load(p) for p in files], str(path)
        return [_load(path)], str(path)
    raise CalibrationDataError(f"calibration data: expected a .npz path, a directory, or arrays, "
                               f"got {type(source).__name__}")


def _load(path: Path) -> dict:
    try:
        return load_npz(path)
    except VerifyError as e:
        raise CalibrationDataError(f"calibration data {e}") from None


def _digest(items) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(b"{")
        for name in sorted(item):
            arr = np.asarray(item[name])
            h.update(name.encode() + b"=" + tensor_digest(arr).encode() + b";")
        h.update(b"}")
    return h.hexdigest()


# A set of samples given along a batch axis (every input [batch, ...] with the same symbolic leading
# dimension, named like a batch: "batch", "batch_size") is cut into one batch per sample: a whole
# set run at once made calibrate's measured sensitivity and the worst-sample objective of
# mixed_precision see one "sample" (and probe all of them: 157 s instead of 78 on all-MiniLM-L6-v2
# with 128 sentences), and an activation of every sample at once is what runs out of memory on a
# large set. The statistics are sums: unchanged. Only a named batch: a leading axis that is a set
# (points, frames), time (a sequence-first model) or unnamed ("?", tf2onnx's unk__N) is one sample
# for all we know, and cutting it would change what the model computes.
BATCH_WORD = "batch"


def _shared_batch_axis(fn) -> bool:
    """Whether every input of `fn` has the same symbolic leading axis, named like a batch."""
    leading = set()
    for v in fn.inputs:
        shape = v.type.shape
        if shape is None or not shape or not isinstance(shape[0], str):
            return False
        leading.add(shape[0])
    return len(leading) == 1 and BATCH_WORD in next(iter(leading)).lower()


def _single_samples(feeds: list) -> list:
    """Each feed whose arrays share a leading length n > 1, as n feeds of one sample (views)."""
    out = []
    for feed in feeds:
        lengths = {np.shape(a)[0] if np.ndim(a) else None for a in feed.values()}
        n = next(iter(lengths)) if len(lengths) == 1 else None
        if n is None or n <= 1:
            out.append(feed)
        else:
            out += [{k: a[i:i + 1] for k, a in feed.items()} for i in range(n)]
    return out


# A tokenizer's attention mask ([batch, S] of 0 / 1, 1 = a real token, S symbolic and read by
# another input too, such as input_ids) marks padding. A batch's trailing positions where it is 0
# for every sample are cut from every input along S: a BERT-style model masks them out of
# attention, so what the real tokens compute is unchanged, the statistics no longer count [PAD]
# lookups and their activations, and the model runs on the real length (all-MiniLM-L6-v2, 128
# sentences padded to 64 tokens, --target-bpw 4.5: 56.6 s -> 50.4 s, and the unpadded samples'
# result, 0.9775 held out, where padded gave 0.9760). Only these names: other masks mean other
# things (a masked-LM position mask, torch's key_padding_mask where 1 is padding). Leading padding
# is left as it is (positions would shift).
ATTENTION_MASK_NAMES = ("attention_mask", "input_mask")


def _padding_axis(fn) -> Optional[tuple]:
    """(the attention mask's name, its sequence axis) when exactly one input is an attention mask
    [batch, S] with S symbolic, named, and an axis of another input too; else None."""
    found = [v for v in fn.inputs if v.name.lower() in ATTENTION_MASK_NAMES and v.type.shape is not None
             and len(v.type.shape) == 2 and isinstance(v.type.shape[1], str) and v.type.shape[1] != UNKNOWN
             and v.type.shape[1] != v.type.shape[0]]
    if len(found) != 1:
        return None
    mask, symbol = found[0].name, found[0].type.shape[1]
    shared = any(symbol in tuple(v.type.shape or ()) for v in fn.inputs if v.name != mask)
    return (mask, symbol) if shared else None


def _trimmed(fn, feed: dict, mask: str, symbol: str) -> dict:
    """`feed` without the trailing positions its mask is 0 at for every sample (the comment above)."""
    m = np.asarray(feed[mask])
    if m.ndim != 2 or m.size == 0 or not np.all((m == 0) | (m == 1)):
        return feed
    real = np.flatnonzero(np.any(m != 0, axis=0))
    keep = int(real[-1]) + 1 if real.size else m.shape[1]
    if keep == m.shape[1]:
        return feed
    out = {}
    for v in fn.inputs:
        a, shape = feed[v.name], v.type.shape or ()
        cut = tuple(slice(0, keep) if axis < len(shape) and shape[axis] == symbol else slice(None)
                    for axis in range(np.ndim(a)))
        out[v.name] = a[cut]
    return out


def _fitted(fn, feeds: list) -> list:
    """The batches calibrate runs: one per sample along a symbolic batch axis, trailing padding cut."""
    if _shared_batch_axis(fn):
        feeds = _single_samples(feeds)
    padding = _padding_axis(fn)
    return feeds if padding is None else [_trimmed(fn, f, *padding) for f in feeds]


class CalibrationData:
    """Loaded calibration samples: ``feeds(function)`` cuts them into batches the function
    accepts (checked: CalibrationDataError naming the input); ``digest`` identifies them."""

    def __init__(self, items, source: str):
        for item in items:
            for name, arr in item.items():
                arr = np.asarray(arr)
                if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                    raise CalibrationDataError(f"calibration data {source}: input {name!r} has NaN or Inf values")
        self.sample_sets, self.source = tuple(items), source
        self.digest = _digest(self.sample_sets)
        self._feeds = {}

    def feeds(self, fn) -> list:
        key = tuple((v.name, str(v.type)) for v in fn.inputs)
        if key not in self._feeds:
            try:
                feeds = batches(fn, list(self.sample_sets))
            except VerifyError as e:
                raise CalibrationDataError(f"calibration data {self.source}: {e}") from None
            self._feeds[key] = _fitted(fn, feeds)
        return self._feeds[key]

    def samples(self, fn) -> int:
        """How many batches the function gets."""
        return len(self.feeds(fn))

    def to_dict(self) -> dict:
        # the cache key: the content only (the same samples from another path are the same data)
        return {"calibration_data": self.digest}

    def __repr__(self) -> str:
        return f"<CalibrationData {self.source} {self.digest[:12]}>"


def calibration_data(source) -> CalibrationData:
    """CalibrationData from a .npz path, a directory of .npz files, {name: array}, a list of
    such dicts, or CalibrationData (returned as it is)."""
    if isinstance(source, CalibrationData):
        return source
    items, where = _items_of(source)
    return CalibrationData(items, where)


# samples the measured sensitivity runs on when a mixed_precision stage follows: enough to rank
# weights (per-weight figures move by a few % between disjoint sets of 32 sentences), few enough
# to cost one short model run per weight. 16 and 32 probe samples gave the same held-out worst cosine on all-MiniLM-L6-v2 at 4.5 bits per
# weight (0.9763 / 0.9770; 64: 0.9757); each sample is one run of the model per weight
SENSITIVITY_SAMPLES = 16


def calibrate_stage(source, following=(), **options):
    """The `calibrate` stage bound to the data of `source` (calibration_data); when a
    mixed_precision stage is among `following` (the stages it runs before), it also measures
    each weight's sensitivity (calibrate's sensitivity=, SENSITIVITY_SAMPLES samples) unless
    `options` say otherwise."""
    from stages.calibration import calibrate

    if any(getattr(s, "name", None) == "mixed_precision" for s in following):
        options.setdefault("sensitivity", SENSITIVITY_SAMPLES)
    return calibrate(data=calibration_data(source), **options)


def bind_paths(name: str, params: dict) -> dict:
    """Spec / recipe parameters with a calibration path loaded: `calibrate{data="x.npz"}`."""
    if name == "calibrate" and isinstance(params.get("data"), str):
        return {**params, "data": calibration_data(params["data"])}
    return params


def check_against(program, stages_) -> None:
    """Check every calibrate stage's data against the program's main inputs before anything runs."""
    for st in stages_:
        data = st.params.get("data") if getattr(st, "name", None) == "calibrate" else None
        if isinstance(data, CalibrationData):
            data.feeds(program.main)


__all__ = ["CalibrationData", "CalibrationDataError", "calibration_data", "calibrate_stage"]
