"""The .mlpackage directory: a manifest naming the model file and the weights directory.

    M.mlpackage/Manifest.json
    M.mlpackage/Data/com.apple.CoreML/model.mlmodel        the Model message
    M.mlpackage/Data/com.apple.CoreML/weights/weight.bin   the weight file (blob.py)

Writing is atomic (ir.atomic.write_tree): the package is built in a scratch
directory beside the destination and swapped in (an existing package is
exchanged with it in one step where the system can, else moved aside first).
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid

from ir.atomic import write_tree

DATA = "Data"
ROOT = "com.apple.CoreML"
MODEL_FILE = "model.mlmodel"
WEIGHTS_DIR = "weights"
WEIGHTS_FILE = "weight.bin"


class PackageError(ValueError):
    """A directory that is not a readable .mlpackage; names it and says why."""


def _entries(path: str) -> dict:
    manifest = os.path.join(path, "Manifest.json")
    try:
        with open(manifest, encoding="utf-8") as f:
            doc = json.load(f)
        return doc["itemInfoEntries"], doc["rootModelIdentifier"]
    except FileNotFoundError:
        raise PackageError(f"{path}: not an .mlpackage (no Manifest.json)") from None
    except (ValueError, KeyError, TypeError) as e:
        raise PackageError(f"{path}: unreadable Manifest.json ({type(e).__name__}: {e})") from None


def locate(path) -> tuple:
    """(model file, weights directory) of the package at `path`."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise PackageError(f"{path}: not an .mlpackage directory")
    entries, root = _entries(path)
    if root not in entries or "path" not in entries[root]:
        raise PackageError(f"{path}: the manifest names no root model")
    model = os.path.join(path, DATA, entries[root]["path"])
    weights = next((os.path.join(path, DATA, e["path"]) for e in entries.values()
                    if e.get("name") == WEIGHTS_DIR and "path" in e), os.path.join(os.path.dirname(model), WEIGHTS_DIR))
    if not os.path.isfile(model):
        raise PackageError(f"{path}: the model file {entries[root]['path']} is missing")
    return model, weights


def _manifest(model_bytes: bytes) -> dict:
    # identifiers derived from the content: the same model writes the same package
    seed = uuid.UUID(bytes=hashlib.sha256(model_bytes).digest()[:16])
    model_id, weights_id = (str(uuid.uuid5(seed, n)).upper() for n in (MODEL_FILE, WEIGHTS_DIR))
    return {
        "fileFormatVersion": "1.0.0",
        "itemInfoEntries": {
            model_id: {"author": ROOT, "description": "CoreML Model Specification", "name": MODEL_FILE,
                       "path": f"{ROOT}/{MODEL_FILE}"},
            weights_id: {"author": ROOT, "description": "CoreML Model Weights", "name": WEIGHTS_DIR,
                         "path": f"{ROOT}/{WEIGHTS_DIR}"},
        },
        "rootModelIdentifier": model_id,
    }


def write(path, model_bytes: bytes, write_weights) -> str:
    """Write a package at `path` atomically; `write_weights(file path)` writes the weight file."""
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise PackageError(f"{path}: exists and is not a package directory")

    def build(staged):
        root = os.path.join(staged, DATA, ROOT)
        os.makedirs(os.path.join(root, WEIGHTS_DIR))
        with open(os.path.join(root, MODEL_FILE), "wb") as f:
            f.write(model_bytes)
        write_weights(os.path.join(root, WEIGHTS_DIR, WEIGHTS_FILE))
        with open(os.path.join(staged, "Manifest.json"), "w", encoding="utf-8") as f:
            json.dump(_manifest(model_bytes), f, indent=4)

    return write_tree(path, build)
