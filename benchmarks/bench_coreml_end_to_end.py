"""weightpress vs coremltools 9.0 on a real converted transformer, whole process, side by side.

    python benchmarks/bench_coreml_end_to_end.py [--runs 3] [--layers 6] [--dim 384] [--keep DIR]

The model is built here (no download): a pre-norm transformer encoder written with plain torch
layers (qkv and output projections, softmax attention, GELU MLP, layer norms; 6 layers of width
384 and MLP 1536 by default: 10.7M parameters), traced and converted by coremltools to an
mlprogram for iOS17 with fp16 weights.

Each run starts a fresh Python process for each tool, in turn, and times it from the outside
(wall clock, imports included: that is what a user waits for):

    ours:        weightpress compress M.mlpackage -o out.mlpackage --preset int8 | palettize-4bit
    coremltools: ct.models.MLModel(M) -> linear_quantize_weights / palettize_weights with the
                 same configuration -> save

Both outputs are checked for their specification version (the input's: 8). Printed: every
run's times, the best and the median per tool, and ours / coremltools (below 1: ours faster).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CORE_ML_SIDE = {  # preset -> coremltools' own call with the preset's configuration
    "int8": "cto.linear_quantize_weights(m, cto.OptimizationConfig(cto.OpLinearQuantizerConfig("
            "mode='linear_symmetric', dtype='int8', granularity='per_channel')))",
    "palettize-4bit": "cto.palettize_weights(m, cto.OptimizationConfig(cto.OpPalettizerConfig("
                      "mode='kmeans', nbits=4)))",
}

COREMLTOOLS_SCRIPT = """
import sys
import coremltools as ct
import coremltools.optimize.coreml as cto
m = ct.models.MLModel(sys.argv[1], skip_model_load=True)
out = {call}
out.save(sys.argv[2])
"""

BUILD_SCRIPT = """
import sys
import torch
import coremltools as ct

D, H, F, L = int(sys.argv[2]), 6, 4 * int(sys.argv[2]), int(sys.argv[3])


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv, self.proj = torch.nn.Linear(D, 3 * D), torch.nn.Linear(D, D)
        self.ln1, self.ln2 = torch.nn.LayerNorm(D), torch.nn.LayerNorm(D)
        self.ff1, self.ff2 = torch.nn.Linear(D, F), torch.nn.Linear(F, D)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(b, t, 3, H, D // H).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-1, -2) / (D // H) ** 0.5, -1) @ v
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, D))
        return x + self.ff2(torch.nn.functional.gelu(self.ff1(self.ln2(x))))


class Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(64, D)
        self.blocks = torch.nn.Sequential(*[Block() for _ in range(L)])
        self.head = torch.nn.Linear(D, 10)

    def forward(self, x):
        return self.head(self.blocks(self.embed(x)))


torch.manual_seed(0)
net = Encoder().eval()
x = torch.randn(1, 16, 64)
model = ct.convert(torch.jit.trace(net, x), inputs=[ct.TensorType(shape=x.shape, name="x")],
                   convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17)
model.save(sys.argv[1])
print(sum(p.numel() for p in net.parameters()))
"""


def _run(cmd, env=None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return seconds


def _spec_version(path) -> int:
    from ir.formats.coreml import proto
    from ir.formats.coreml.package import locate

    with open(locate(path)[0], "rb") as f:
        return proto.parse_model(f.read()).specificationVersion


def build(path, dim, layers) -> int:
    proc = subprocess.run([sys.executable, "-c", BUILD_SCRIPT, path, str(dim), str(layers)],
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"building the model failed:\n{proc.stderr[-2000:]}")
    return int(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--presets", default="int8,palettize-4bit")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR (and keep the model) instead of a temp dir")
    args = ap.parse_args(argv)
    sys.path.insert(0, REPO)
    work = args.keep or tempfile.mkdtemp(prefix="bench-coreml-")
    os.makedirs(work, exist_ok=True)
    model = os.path.join(work, "encoder.mlpackage")
    if not os.path.isdir(model):
        params = build(model, args.dim, args.layers)
        print(f"model: transformer encoder, {params / 1e6:.1f}M parameters, iOS17 mlprogram, fp16 weights")
    source_spec = _spec_version(model)
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    print(f"{'preset':<16}{'run':>4}{'weightpress s':>15}{'coremltools s':>15}{'ratio':>8}")
    for preset in args.presets.split(","):
        ours, theirs = [], []
        for run in range(args.runs):
            out_ours, out_ct = (os.path.join(work, f"{preset}-{who}.mlpackage") for who in ("ours", "ct"))
            ours.append(_run([sys.executable, "-m", "pipeline.cli", "compress", model, "-o", out_ours,
                              "--preset", preset], env))
            theirs.append(_run([sys.executable, "-c", COREMLTOOLS_SCRIPT.format(call=CORE_ML_SIDE[preset]),
                                model, out_ct]))
            print(f"{preset:<16}{run + 1:>4}{ours[-1]:>15.2f}{theirs[-1]:>15.2f}{ours[-1] / theirs[-1]:>8.2f}")
            specs = _spec_version(out_ours), _spec_version(out_ct)
            if specs != (source_spec, source_spec):
                raise SystemExit(f"{preset}: spec versions {specs}, the input's is {source_spec}")
        for what, f in (("best", min), ("median", statistics.median)):
            a, b = f(ours), f(theirs)
            print(f"{preset:<16}{what:>4}{a:>15.2f}{b:>15.2f}{a / b:>8.2f}")


if __name__ == "__main__":
    main()
