"""Core ML (mlprogram, .mlpackage) in and out, read and written directly.

- `import_coreml(path_or_mlmodel)`: one Function per MIL function, its opset
  the model's deployment target ("iOS17"); see importer.py.
- `export_coreml(program, path, target=None)`: writes an .mlpackage at the
  program's own deployment target unless `target` names another; compressed
  weights take the forms that target has (opforms.py); see exporter.py.

Neither needs coremltools: the model file is a protobuf message read with
protobuf's runtime from a schema declared here (proto.py), the weights a
flat file (blob.py). coremltools' MLModel objects are accepted as input.
"""
from __future__ import annotations

import os

from ir.core import Program
from ir.formats.coreml import package, targets
from ir.formats.coreml.blob import BlobError, BlobReader
from ir.formats.coreml.importer import MODEL_SHELL, SYMBOLS_KEY, CoreMLFormatError, program_from_model
from ir.formats.coreml.opforms import CoreMLExportError
from ir.formats.coreml.targets import ORDER as TARGETS, TargetError


def _blob_files(weights_dir: str, mapped: bool = False):
    """`mapped`: the weight files belong to a package on disk, which outlives the program
    (big weights stay in the file, ir.lazy); a coremltools model's may not."""
    readers: dict = {}

    def read(file_name: str) -> BlobReader:
        path = os.path.join(weights_dir, file_name.split("/")[-1])
        if path not in readers:
            if not os.path.isfile(path):
                raise CoreMLFormatError(f"weight file {file_name!r} is missing")
            readers[path] = BlobReader(path, mapped=mapped)
        return readers[path]

    return read


def _source(src):
    """(model file bytes, weights directory, label) of a package path or a coremltools MLModel."""
    if hasattr(src, "get_spec") and hasattr(src, "weights_dir"):  # a coremltools MLModel, not imported here
        return src.get_spec().SerializeToString(), src.weights_dir or "", "<MLModel>"
    path = os.fspath(src)
    if not os.path.exists(path):
        raise CoreMLFormatError(f"{path}: no such file or package")
    try:
        model_file, weights = package.locate(path)
        with open(model_file, "rb") as f:
            return f.read(), weights, path
    except (package.PackageError, OSError) as e:
        raise CoreMLFormatError(f"{path}: not a readable Core ML package ({e})") from None


def import_coreml(src) -> Program:
    """A Core ML mlprogram (.mlpackage path or coremltools MLModel) as a Program."""
    from ir.formats.coreml.proto import parse_model

    data, weights, label = _source(src)
    try:
        model = parse_model(data)
    except Exception as e:  # protobuf's DecodeError and friends
        raise CoreMLFormatError(f"{label}: not a Core ML model file ({type(e).__name__}: {e})") from None
    try:
        return program_from_model(model, _blob_files(weights, mapped=label != "<MLModel>"), label)
    except (BlobError, CoreMLFormatError) as e:
        msg = str(e)
        raise CoreMLFormatError(msg if msg.startswith(label) else f"{label}: {msg}") from None


def export_coreml(program: Program, path, target=None, function=None) -> str:
    """Write `program` as an .mlpackage at `path` (atomically); returns the path.

    `target`: a deployment target ("iOS16" ... "iOS26"); default the program's own.
    `function`: write only this function (default: all of them)."""
    from ir.formats.coreml.exporter import model_message

    try:
        model, blobs = model_message(program, target, None if function is None else [function])
    except TargetError as e:
        raise CoreMLExportError(str(e)) from None
    return package.write(path, model.SerializeToString(deterministic=True), blobs.write)  # maps sorted


__all__ = ["import_coreml", "export_coreml", "CoreMLFormatError", "CoreMLExportError", "TARGETS",
           "SYMBOLS_KEY", "MODEL_SHELL"]
