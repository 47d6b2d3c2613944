"""Checking a written ONNX model in onnxruntime before it is put in place.

`weightpress compress ... -o out.onnx` writes the model into a scratch
directory (pipeline.models.staged_outputs), then, when onnxruntime can be
imported, loads it (InferenceSession, CPU) and runs it once on generated
inputs. A model onnxruntime refuses or cannot run raises OutputCheckError
naming the output file and onnxruntime's reason; the scratch directory is then
removed, so no output is left behind. `--no-check` skips this.

Generated inputs: float inputs get small values from a fixed-seed generator,
integer inputs 0 (so that Gather / embedding indices are in range whatever the
table size), bool inputs False, string inputs ""; symbolic or unknown
dimensions are 1. What has no such value (sequence, map and optional inputs,
dtypes numpy cannot hold such as bfloat16, an input of unknown rank) cannot be
generated: the model is then loaded but not run, and `check_onnx` returns a
note saying so. Dims of 1 do not fit every model (an export traced at one
sequence length may hold it in a Reshape): when the run fails and the input
model (an ONNX file) fails on the same inputs too, that is a note, not an
error. Only that the model loads and runs is checked, not its outputs
(`weightpress verify` compares outputs).
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Optional

import numpy as np


class OutputCheckError(ValueError):
    """onnxruntime refuses a written model, or fails running it; the message names the file."""


# onnxruntime's type strings of the tensors it can be fed from numpy
_NUMPY = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
          "tensor(int8)": np.int8, "tensor(int16)": np.int16, "tensor(int32)": np.int32,
          "tensor(int64)": np.int64, "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16,
          "tensor(uint32)": np.uint32, "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_,
          "tensor(string)": np.object_}


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def _dims(shape) -> tuple:
    """onnxruntime's dims (ints, symbolic names, None) with every unknown one set to 1."""
    return tuple(d if isinstance(d, int) and d >= 0 else 1 for d in shape)


def _value(dtype, dims, rng) -> np.ndarray:
    kind = np.dtype(dtype).kind
    if kind == "f":
        return rng.uniform(-1.0, 1.0, dims).astype(dtype)
    if kind == "O":
        return np.full(dims, "", dtype=object)
    return np.zeros(dims, dtype)  # ints: index 0 is in range of any non-empty table; bool: False


def _known_scalar(name: str, program) -> bool:
    """onnxruntime shows both a scalar and an input of unknown rank as shape []: a scalar
    only when the program that was written says so (without one, trust onnxruntime)."""
    if program is None:
        return True
    fn = program.functions.get("main") if hasattr(program, "functions") else None
    var = next((v for v in fn.block.inputs if v.name == name), None) if fn is not None else None
    return var is not None and isinstance(var.shape, tuple) and len(var.shape) == 0


def generated_inputs(args, program=None, seed: int = 0):
    """({name: array}, None), or (None, why) when some input cannot be generated.

    `args`: onnxruntime NodeArgs (anything with name, type and shape)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for arg in args:
        dtype = _NUMPY.get(arg.type)
        if dtype is None:
            return None, f"input {arg.name!r} is {arg.type}"
        shape = arg.shape
        if shape is None or (len(shape) == 0 and not _known_scalar(arg.name, program)):
            return None, f"input {arg.name!r} has an unknown rank"
        feeds[arg.name] = _value(dtype, _dims(shape), rng)
    return feeds, None


def _reason(e: BaseException, written: Path, shown: Path) -> str:
    """onnxruntime's message in one line, naming the output rather than the scratch copy,
    without its source locations (/onnxruntime_src/...h:91 onnxruntime::Class::f(args))."""
    text = " ".join(str(e).split()) or type(e).__name__
    text = text.replace(str(written), str(shown))
    text = re.sub(r"/onnxruntime_src/\S+:\d+ ", "", text)
    text = re.sub(r"onnxruntime::[\w:]+\([^)]*\)( const)? ", "", text)
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : ", "", text)


def _session(path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # fatal only: its errors come back as exceptions, said once by us
    # no graph optimizations: the check asks whether the file loads and runs, and constant
    # folding would decompress every weight at load (4-bit blocks back to fp32: the time and
    # the peak memory of the whole compress on a big model)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _runs(path, feeds) -> bool:
    """Whether the model at `path` loads and runs on `feeds` (by input name)."""
    try:
        session = _session(path)
        if {a.name for a in session.get_inputs()} != set(feeds):
            return True  # not the same inputs: no evidence against the output
        session.run(None, feeds)
        return True
    except Exception:  # noqa: BLE001
        return False


def check_onnx(written, shown=None, program=None, reference=None) -> Optional[str]:
    """Load `written` in onnxruntime and run it once; None when it ran, a note when it was
    loaded but not run (inputs that cannot be generated; or a run that fails for the
    `reference` model, the ONNX input, on the same inputs too: generated dims of 1 do
    not fit every model). Raises OutputCheckError naming `shown` (the path the user
    asked for; default: `written`)."""
    written = Path(written)
    shown = Path(shown) if shown is not None else written
    try:
        session = _session(written)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise OutputCheckError(f"{shown}: onnxruntime refuses the written model: "
                               f"{_reason(e, written, shown)} (--no-check writes it anyway)") from None
    feeds, why = generated_inputs(session.get_inputs(), program)
    if feeds is None:
        return f"{shown}: loaded in onnxruntime but not run: {why}"
    try:
        session.run(None, feeds)
    except Exception as e:  # noqa: BLE001
        reason = _reason(e, written, shown)
        if reference is not None and not _runs(reference, feeds):
            return (f"{shown}: loaded in onnxruntime; its run on generated inputs fails as the input "
                    f"model's does ({reason})")
        raise OutputCheckError(f"{shown}: onnxruntime cannot run the written model: {reason} "
                               "(--no-check writes it anyway)") from None
    return None
