"""ONNX in and out: `import_onnx(path_or_model) -> Program` and
`export_onnx(program, path)`. Ops ONNX brings that the core set does not
model travel as foreign `onnx.<OpType>` ops evaluated by onnx's reference
evaluator (registered on import of this package)."""
from ir.formats.onnx.common import OnnxExportError, OnnxFormatError
from ir.formats.onnx.importer import import_onnx

__all__ = ["import_onnx", "export_onnx", "OnnxFormatError", "OnnxExportError"]


def __getattr__(name):
    if name == "export_onnx":
        from ir.formats.onnx.exporter import export_onnx

        return export_onnx
    raise AttributeError(name)
