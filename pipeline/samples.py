"""Real inputs for verify, cut into the batches a model accepts.

`verify(..., inputs=...)` and `weightpress verify --inputs X.npz` take:

- one sample: {input name: array shaped like the input};
- a list of such dicts;
- the DESIGN form (an .npz): {input name: array} with the samples along the leading axis.

Each array is read against the input's declared type, which resolves the ambiguity:

- rank == the input's rank + 1: each index of the leading axis is one sample (shaped like
  the input);
- rank == the input's rank: a batch along axis 0. When the input declares a fixed size B
  there, the array is split into chunks of B (its length must be a multiple of B); when that
  dimension is symbolic the model takes the whole batch at once. A rank-0 input takes one
  sample.

Every input must come out in the same number of batches; fixed dimensions must match,
a symbolic dimension must have one size across the inputs of a batch, and the values must
fit the declared dtype (float64 data for an fp32 input is converted; integers that do not
fit, or floats for an integer input, are refused). Each mistake is a VerifyError naming the
input. `batches(fn, inputs)` returns the feeds of each evaluation, in order.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from pipeline.errors import VerifyError

UNKNOWN = "?"  # a dimension nothing is known of (ir.types): not shared between axes


def _leading(name: str, arr: np.ndarray, shape: tuple) -> list:
    """The arrays the model gets for one input, one per batch (module docstring)."""
    rank = len(shape)
    if arr.ndim == rank + 1:
        return [arr[i] for i in range(arr.shape[0])]
    if arr.ndim != rank:
        raise VerifyError(f"input {name!r}: an array of rank {arr.ndim} for an input of rank {rank} "
                          f"{_show(shape)}; give rank {rank} (one batch) or {rank + 1} (samples along a "
                          f"leading axis)")
    if rank == 0:
        return [arr]
    fixed = shape[0]
    if not isinstance(fixed, int):
        return [arr]
    if fixed < 1 or arr.shape[0] % fixed:
        raise VerifyError(f"input {name!r}: {arr.shape[0]} samples along axis 0, but the model takes "
                          f"batches of exactly {fixed}; give a multiple of {fixed}")
    return [arr[i:i + fixed] for i in range(0, arr.shape[0], fixed)]


def _show(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _convert(name: str, arr: np.ndarray, dt) -> np.ndarray:
    """The values in the input's dtype, when they fit it."""
    target = np.dtype(dt.storage)
    if arr.dtype == target:
        return arr
    kind = arr.dtype.kind
    if dt.kind == "float" and kind in "fiub":
        return arr.astype(target)
    if dt.kind in ("int", "uint", "bool") and kind in "iub":
        out = arr.astype(target)
        if np.array_equal(out.astype(arr.dtype), arr):
            return out
        raise VerifyError(f"input {name!r}: {arr.dtype} values that do not fit its dtype {dt.name}")
    raise VerifyError(f"input {name!r}: {arr.dtype} values for an input of dtype {dt.name}")


def _check_shapes(fn, feeds: dict) -> None:
    sizes: dict = {}
    for v in fn.inputs:
        if v.type.shape is None:  # unknown rank: anything goes
            continue
        got, want = feeds[v.name].shape, tuple(v.type.shape)
        if len(got) != len(want):
            raise VerifyError(f"input {v.name!r}: shape {list(got)} for an input of shape {_show(want)}")
        for axis, (g, w) in enumerate(zip(got, want)):
            if isinstance(w, int) and g != w:
                raise VerifyError(f"input {v.name!r}: size {g} along axis {axis}, the model declares {w} "
                                  f"(shape {_show(want)})")
            if isinstance(w, str) and w != UNKNOWN and sizes.setdefault(w, (g, v.name))[0] != g:
                other = sizes[w][1]
                raise VerifyError(f"input {v.name!r}: dimension {w!r} is {g}, but {sizes[w][0]} in input "
                                  f"{other!r}")


def _of_dict(fn, given: Mapping) -> list:
    declared = {v.name: v for v in fn.inputs}
    missing = [n for n in declared if n not in given]
    extra = [n for n in given if n not in declared]
    if missing or extra:
        what = (f"no array for input {missing[0]!r}" if missing else f"no input named {extra[0]!r}")
        raise VerifyError(f"inputs: {what} (the model's inputs: {', '.join(declared)})")
    per_input = {}
    for name, v in declared.items():
        arr = np.asarray(given[name])
        per_input[name] = [arr] if v.type.shape is None else _leading(name, arr, tuple(v.type.shape))
    counts = {name: len(b) for name, b in per_input.items()}
    if len(set(counts.values())) > 1:
        (a, na), (b, nb) = sorted(counts.items(), key=lambda kv: kv[1])[::len(counts) - 1]
        raise VerifyError(f"inputs: {a!r} gives {na} batches but {b!r} gives {nb}; every input needs "
                          f"the same number of samples")
    out = []
    for i in range(next(iter(counts.values()), 1)):
        feeds = {name: _convert(name, per_input[name][i], declared[name].type.dt) for name in declared}
        _check_shapes(fn, feeds)
        out.append(feeds)
    return out


def batches(fn, inputs) -> list:
    """The feeds of each evaluation of a function, from a dict or a list of dicts (module docstring)."""
    items = [inputs] if isinstance(inputs, Mapping) else list(inputs)
    if not items:
        raise VerifyError("inputs: an empty list of samples")
    out = []
    for item in items:
        if not isinstance(item, Mapping):
            raise VerifyError(f"inputs: a sample must be a dict of input name -> array, not {type(item).__name__}")
        out += _of_dict(fn, item)
    return out


def load_npz(path) -> dict:
    """The arrays of an .npz (one per input, samples along the leading axis); a file that
    is not one is a VerifyError naming it."""
    import zipfile

    try:
        data = np.load(path, allow_pickle=False)
        if not hasattr(data, "files"):
            raise VerifyError(f"{path}: a single array, not an .npz of named inputs")
        with data:
            return {name: data[name] for name in data.files}
    except VerifyError:
        raise
    except FileNotFoundError:
        raise VerifyError(f"{path}: no such file") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise VerifyError(f"{path}: not a readable .npz of inputs ({' '.join(str(e).split())})") from None


__all__ = ["batches", "load_npz"]
