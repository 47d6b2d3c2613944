"""`weightpress demo`: compress the embedded digits MLP with several presets,
measure held-out accuracy before and after, write the compressed models."""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import NamedTuple, Optional

from pipeline import demo

DEMO_PRESETS = ("int8", "int4-block32", "palettize-4bit", "palettize-4bit-grouped",
                "sparse-50", "sparse+palettize")
BASENAME = "digits_mlp"


class Row(NamedTuple):
    preset: str
    bytes_before: int
    bytes_after: int
    accuracy: float
    baseline_accuracy: float
    seconds: Optional[float]  # compression time (None for the baseline)

    @property
    def ratio(self) -> float:
        return self.bytes_before / self.bytes_after if self.bytes_after else float("inf")

    @property
    def accuracy_change(self) -> float:
        return self.accuracy - self.baseline_accuracy


def weight_bytes(program) -> int:
    from pipeline.report import weights_of

    return sum(w.stored_bytes for w in weights_of(program))


def _onnx_exporter_available() -> bool:
    return importlib.util.find_spec("ir.formats.onnx") is not None


def _writers(out_dir: Path, stem: str):
    yield out_dir / f"{stem}.wpz"
    if _onnx_exporter_available():
        yield out_dir / f"{stem}.onnx"


def _save(program, out_dir: Path, stem: str, written: list, notes: list) -> None:
    from pipeline.models import save_model

    for path in _writers(out_dir, stem):
        try:
            written.append(save_model(program, path))
        except (ValueError, NotImplementedError) as e:  # a form this exporter does not write yet
            notes.append(f"{path.name}: not written ({str(e).splitlines()[0] if str(e) else type(e).__name__})")


def run_demo(out_dir: Path, presets=DEMO_PRESETS, progress=None):
    """(rows, written paths, notes): the baseline row first, then one per preset."""
    from pipeline import Pipeline

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images, labels = demo.held_out()
    base = demo.build_program()
    base_bytes = weight_bytes(base)
    base_acc = demo.accuracy(base, images, labels)
    rows = [Row("fp32 (original)", base_bytes, base_bytes, base_acc, base_acc, None)]
    written, notes = [], []
    _save(base, out_dir, f"{BASENAME}_fp32", written, notes)
    todo = presets if progress is None else progress(presets, desc="demo presets", total=len(presets))
    for name in todo:
        started = time.perf_counter()
        result = Pipeline.preset(name).run(base).result
        seconds = time.perf_counter() - started
        rows.append(Row(name, base_bytes, weight_bytes(result), demo.accuracy(result, images, labels),
                        base_acc, seconds))
        _save(result, out_dir, f"{BASENAME}_{_file_stem(name)}", written, notes)
    return rows, written, notes


def _file_stem(preset: str) -> str:
    return preset.replace("+", "_").replace("/", "_")


def render_rows(rows) -> str:
    from pipeline.report import format_table, human_bytes

    headers = ("preset", "weights before", "after", "ratio", "accuracy", "change", "time")
    table = [(r.preset, human_bytes(r.bytes_before), human_bytes(r.bytes_after), f"{r.ratio:.2f}x",
              f"{r.accuracy:.4f}", f"{100 * r.accuracy_change:+.2f} pt",
              "-" if r.seconds is None else f"{r.seconds:.2f} s") for r in rows]
    return format_table(headers, table)
