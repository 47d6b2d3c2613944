"""Damaged Core ML packages through load_model (the one loader the CLI uses for every
format): a refusal naming the package, never a traceback, the package left as it was.
One export (coremltools is slow to import) serves every case."""
from __future__ import annotations

import importlib.util
import shutil

import pytest

from tests.adversarial import generators as gen

pytestmark = pytest.mark.skipif(importlib.util.find_spec("coremltools") is None, reason="needs coremltools")

MODEL = "Data/com.apple.CoreML/model.mlmodel"
WEIGHTS = "Data/com.apple.CoreML/weights/weight.bin"


def _damage(pkg, case):
    {"truncated spec": lambda: (pkg / MODEL).write_bytes((pkg / MODEL).read_bytes()[:40]),
     "garbage spec": lambda: (pkg / MODEL).write_bytes(b"\x08\x07garbage" * 20),
     "truncated weights": lambda: (pkg / WEIGHTS).write_bytes((pkg / WEIGHTS).read_bytes()[:100]),
     "no manifest": lambda: (pkg / "Manifest.json").unlink(),
     "manifest not JSON": lambda: (pkg / "Manifest.json").write_text("{not json"),
     "weights outside the package": lambda: ((pkg / WEIGHTS).unlink(),
                                             (pkg / WEIGHTS).symlink_to("/etc/passwd")),
     }[case]()


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    from pipeline.models import save_model

    path = tmp_path_factory.mktemp("coreml") / "m.mlpackage"
    save_model(gen.small_program(), path)
    return path


@pytest.mark.parametrize("case", ["truncated spec", "garbage spec", "truncated weights", "no manifest",
                                  "manifest not JSON", "weights outside the package"])
def test_a_damaged_package_is_refused(package, tmp_path, case):
    from pipeline.models import ModelFileError, load_model

    pkg = tmp_path / "bad.mlpackage"
    shutil.copytree(package, pkg)
    _damage(pkg, case)
    before = sorted((p.relative_to(pkg), p.is_symlink() or p.read_bytes()) for p in pkg.rglob("*") if not p.is_dir())
    with pytest.raises(ModelFileError) as e:
        load_model(pkg)
    assert "bad.mlpackage" in str(e.value) and "\n" not in str(e.value)
    after = sorted((p.relative_to(pkg), p.is_symlink() or p.read_bytes()) for p in pkg.rglob("*") if not p.is_dir())
    assert after == before
