"""Train the demo model shipped in pipeline/demo/ (run once, offline).

    python tools/train_demo_model.py

An MLP 64 -> 256 -> 128 -> 10 with ReLU on scikit-learn's bundled digits
images (8x8, values 0..16, scaled to 0..1). scikit-learn is only needed
here, never at run time: the script writes

    pipeline/demo/digits_mlp.npz      float32 weights in `linear` layout [out, in]
    pipeline/demo/digits_heldout.npz  the held-out split: images (uint8 0..16), labels (uint8)

The split and the optimizer are seeded so a re-run gives the same files.
"""
from __future__ import annotations

import argparse
import pathlib

import numpy as np

SEED = 0
HIDDEN = (256, 128)
DEMO_DIR = pathlib.Path(__file__).resolve().parent.parent / "pipeline" / "demo"


def train(test_size: float = 0.25):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    digits = load_digits()
    x = digits.data.astype(np.uint8)  # 0..16 integers: store small, scale at use
    y = digits.target.astype(np.uint8)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, random_state=SEED, stratify=y)
    clf = MLPClassifier(hidden_layer_sizes=HIDDEN, activation="relu", alpha=1e-4,
                        max_iter=400, random_state=SEED)
    clf.fit(x_tr / 16.0, y_tr)
    accuracy = clf.score(x_te / 16.0, y_te)
    # sklearn keeps coefs as [in, out]; the IR's linear wants [out, in].
    weights = {}
    for i, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_), start=1):
        weights[f"fc{i}_weight"] = np.ascontiguousarray(w.T, dtype=np.float32)
        weights[f"fc{i}_bias"] = b.astype(np.float32)
    return weights, (x_te, y_te), accuracy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=pathlib.Path, default=DEMO_DIR)
    args = ap.parse_args()
    weights, (x_te, y_te), accuracy = train()
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "digits_mlp.npz", **weights)
    np.savez_compressed(args.out / "digits_heldout.npz", images=x_te, labels=y_te)
    sizes = {p.name: p.stat().st_size for p in sorted(args.out.glob("*.npz"))}
    print(f"held-out accuracy {accuracy:.4f} on {len(y_te)} images; files {sizes}")


if __name__ == "__main__":
    main()
