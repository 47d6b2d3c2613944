"""Bytes each weight takes in a model file as written, measured from the file.

    sizes = measure_file("out.onnx", program, ["fc1_weight", ...])
    sizes.weights["fc1_weight"]   # bytes in the file; names it could not place are absent
    sizes.file_bytes              # the whole file, sidecars included

- ONNX: from the serialized protos (ir.formats.onnx.sizes): each weight's
  initializers, Constant nodes and the small constants of its decode nodes.
- .wpz: the zip members holding each weight's tensors (stored once per digest),
  with their zip headers.
- Core ML: not measured (its weight blob is laid out by coremltools); `measure_file`
  answers None and the report keeps its estimate, saying so.

A weight's IR name is its ONNX value name, or the name the importer recorded it had
(program attrs onnx_names / onnx_io_names), or, failing those, the one ONNX value
whose IR-safe form (letters, digits, '_') it is.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import NamedTuple, Optional


class FileSizes(NamedTuple):
    weights: dict  # weight name -> bytes as written
    file_bytes: int  # the model file and its sidecars


def file_bytes(path) -> int:
    """Bytes on disk of a model: a file, or a directory (an .mlpackage) summed; an ONNX
    model with its external data files (headers read only)."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    if path.suffix.lower() == ".onnx":
        import onnx

        try:
            return path.stat().st_size + _sidecars(onnx.load(str(path), load_external_data=False), path)
        except Exception:  # noqa: BLE001 - not readable as ONNX: its own size is what there is
            pass
    return path.stat().st_size


def measure_file(path, program, names) -> Optional[FileSizes]:
    """Per weight (report names, in order) the bytes in the file at `path`, or None when
    its format is not measured."""
    measure = MEASURES.get(Path(path).suffix.lower())
    return None if measure is None else measure(Path(path), program, list(names))


# ---- ONNX -----------------------------------------------------------------------------

def _onnx(path: Path, program, names: list) -> FileSizes:
    import onnx

    from ir.formats.onnx.sizes import measure

    model = onnx.load(str(path), load_external_data=False)
    onnx_of = _onnx_names(model, program, names)
    sizes = measure(model, [onnx_of[n] for n in names if n in onnx_of])
    weights = {n: sizes.weights[onnx_of[n]] for n in names if onnx_of.get(n) in sizes.weights}
    return FileSizes(weights, os.path.getsize(path) + _sidecars(model, path))


def _sidecars(model, path: Path) -> int:
    """Bytes of the external-data files the model names (each once)."""
    files = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    return sum(os.path.getsize(path.parent / f) for f in files if (path.parent / f).is_file())


def _onnx_names(model, program, names: list) -> dict:
    """IR weight name -> ONNX value name."""
    import json

    from ir.formats.onnx.common import safe_name
    from ir.formats.onnx.records import RECORD_KEY

    values = {t.name for t in model.graph.initializer}
    values.update(o for n in model.graph.node for o in n.output)
    raw = next((p.value for p in model.metadata_props if p.key == RECORD_KEY), None)
    try:
        values.update(o for r in json.loads(raw or "[]") for o in (r.get("outputs") or ()) if o)
    except (ValueError, AttributeError, TypeError):
        pass
    io = dict(program.attrs.get("onnx_names", ()))  # IR name -> the ONNX name it had (import renamed it)
    io.update(program.attrs.get("onnx_io_names", ()))
    by_safe: dict = {}
    for v in values:
        by_safe.setdefault(safe_name(v), []).append(v)
    found = {}
    for name in names:
        ir_name = name.split("/", 1)[1] if name.startswith("main/") else name
        if ir_name in values:
            found[name] = ir_name
        elif io.get(ir_name) in values:
            found[name] = io[ir_name]
        elif len(by_safe.get(ir_name, ())) == 1:
            found[name] = by_safe[ir_name][0]
    return found


# ---- .wpz ------------------------------------------------------------------------------

def _wpz(path: Path, program, names: list) -> FileSizes:
    from ir.digest import tensor_digest
    from ir.serialize import tensor_member

    with zipfile.ZipFile(path) as zf:
        # a member as written: its data, local header and central directory entry
        member = {i.filename: i.compress_size + 30 + 46 + 2 * len(i.filename.encode()) + len(i.extra)
                  for i in zf.infolist()}
    consts = _ingredients(program)
    claimed: set = set()
    weights = {}
    for name in names:
        parts = consts.get(name)
        if parts is None:
            continue
        sizes = [(d, member.get(tensor_member(d))) for d in {tensor_digest(arr) for arr in parts}]
        if any(size is None for _, size in sizes):
            continue  # a tensor stored some other way: leave the estimate
        weights[name] = sum(size for d, size in sizes if d not in claimed)
        claimed.update(d for d, _ in sizes)
    return FileSizes(weights, file_bytes(path))


def _ingredients(program) -> dict:
    """Weight name (as report.weights_of names it) -> the const arrays it is made of."""
    multi = len(program.functions) > 1
    out = {}
    for fname, fn in program.functions.items():
        producer = {v.name: op for op in fn.block.walk() for v in op.outputs
                    if op.op_type == "const" or op.op_type.startswith("constexpr_")}

        def arrays(name, seen):
            op = producer.get(name)
            if op is None or id(op) in seen:
                return []
            seen.add(id(op))
            if op.op_type == "const":
                return [op.attrs["val"]]
            return [a for v in op.input_vars() for a in arrays(v.name, seen)]

        for name in producer:
            out[f"{fname}/{name}" if multi else name] = arrays(name, set())
    return out


MEASURES = {".onnx": _onnx, ".wpz": _wpz}
