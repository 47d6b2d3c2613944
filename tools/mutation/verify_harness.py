"""The fixed verify harness of the mutation driver: does `verify="each"` at default
settings catch a mutant?

    python tools/mutation/verify_harness.py [--json OUT] [--only SUBSTRING]

Run with the tree under test first on sys.path (the driver runs it with cwd and
PYTHONPATH in the mutated copy). It prints (or writes) one JSON object
{case name: [outcome, detail]}, outcome one of
  ok       every checked step passed;
  failed   verify reported a failure (EquivalenceError, or any error whose class
           name says Equivalence / Contract / Verification);
  crashed  anything else raised (a stage crash, an invalid program, verify itself
           raising instead of reporting).

The cases (fixed: same programs in every process, from the seeded generators of
pipeline.strategies):
  quant/<pattern>/<seed>/preset  the canonicalize_quantization preset, verify="each"
  quant/<pattern>/<seed>/pass    the pattern's own seed pass, verify="each"
  comp/<config>/<model>          a compression pipeline (every preset, plus one run of
                                 each mode the presets leave out), verify="each"
  decomp/<config>/<model>        that pipeline's result (run without verify), then
                                 decompress_weights with verify="each" (exact contract)
The driver compares each case with the unmutated tree's outcome: only cases that
are "ok" there count (with --baseline the others are not even run, and the run stops
at the first failure, which decides the verdict).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

PATTERN_SEEDS = tuple(range(8))
MODELS = {"m0": (0, "iOS18"), "m1": (1, "iOS18"), "m2": (2, "iOS18"), "m3_ios16": (3, "iOS16")}

# configurations beyond the presets: each mode / form a preset does not run
EXTRA_CONFIGS = {
    "affine-linear-uint8-tensor": 'affine_quantize_weights{dtype="uint8",granularity="per_tensor",mode="linear"}',
    "affine-linear-int8-channel": 'affine_quantize_weights{dtype="int8",granularity="per_channel",mode="linear"}',
    "affine-sym-uint8": 'affine_quantize_weights{dtype="uint8",granularity="per_channel",mode="linear_symmetric"}',
    "palettize-uniform-4": 'palettize_weights{mode="uniform",nbits=4}',
    "palettize-unique": 'palettize_weights{mode="unique"}',
    "palettize-vector": 'palettize_weights{cluster_dim=2,granularity="per_grouped_channel",group_size=16,'
                        'mode="kmeans",nbits=2}',
    "palettize-pcs": 'palettize_weights{enable_per_channel_scale=true,mode="kmeans",nbits=4}',
    "sparse-threshold": 'sparsify_weights{mode="threshold_based",threshold=0.5}',
    "sparse-nm": 'sparsify_weights{n_m_ratio=[2,4]}',
    "sparse+int8": 'sparsify_weights{mode="percentile_based",target_percentile=0.5},'
                   'affine_quantize_weights{dtype="int8",granularity="per_channel",mode="linear_symmetric"}',
}


# forms that need iOS18 (int4, per-block / per-group, joint, per-channel scale, vectors)
NEEDS_IOS18 = {"int4-block32", "palettize-4bit-grouped", "palettize-pcs", "palettize-vector", "sparse+int8",
               "sparse+palettize"}


def _verdict(exc: BaseException) -> str:
    name = type(exc).__name__
    if any(word in name for word in ("Equivalence", "Contract", "Verification")):
        return "failed"
    return "crashed"


def _run(fn) -> list:
    try:
        fn()
        return ["ok", ""]
    except Exception as exc:  # the outcome is the point: report it, never stop the harness
        cause = exc.__cause__
        detail = f"{type(exc).__name__}: {exc}" + (f" <- {type(cause).__name__}: {cause}" if cause else "")
        return [_verdict(exc), detail[:300]]


def cases() -> dict:
    """{case name: zero-argument callable}."""
    from pipeline import Pipeline
    from pipeline.presets import PRESETS
    from pipeline.strategies.programs import PATTERNS, example_program
    from pipeline.strategies.weights import example_model
    import stages

    out = {}
    for pattern, (_, stage_name) in PATTERNS.items():
        for seed in PATTERN_SEEDS:
            prog = example_program(pattern, seed)
            out[f"quant/{pattern}/{seed}/preset"] = (
                lambda p=prog: Pipeline.preset("canonicalize_quantization").run(p, verify="each"))
            out[f"quant/{pattern}/{seed}/pass"] = (
                lambda p=prog, s=stage_name: Pipeline([stages.get(s)]).run(p, verify="each"))
    configs = {name: spec for name, spec in PRESETS.items() if name != "canonicalize_quantization"}
    configs.update(EXTRA_CONFIGS)
    models = {name: example_model(seed, large=True, opset=opset) for name, (seed, opset) in MODELS.items()}
    for cname, spec in configs.items():
        for mname, model in models.items():
            if mname.endswith("ios16") and cname in NEEDS_IOS18:
                continue  # refused before iOS18 by design (TargetError), not a case
            out[f"comp/{cname}/{mname}"] = lambda s=spec, m=model: Pipeline.from_spec(s).run(m, verify="each")

            def decomp(s=spec, m=model):
                compressed = Pipeline.from_spec(s).run(m).result
                Pipeline.from_spec("decompress_weights").run(compressed, verify="each")
            out[f"decomp/{cname}/{mname}"] = decomp
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", help="write the results here instead of stdout")
    ap.add_argument("--only", help="run only the cases whose name contains this")
    ap.add_argument("--prefixes", help="comma-separated case-name prefixes to run (e.g. quant/,decomp/)")
    ap.add_argument("--times", action="store_true", help="print each case's seconds to stderr")
    ap.add_argument("--baseline", help="a JSON of this harness on the unmutated tree: run only the cases "
                                       "that were ok there, and stop at the first one that fails")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    import numpy as np
    np.seterr(all="ignore")
    results = {}
    usable = None
    if args.baseline:
        with open(args.baseline) as f:
            usable = {k for k, v in json.load(f).items() if v[0] == "ok"}
    for name, fn in cases().items():
        if (args.only and args.only not in name) or (usable is not None and name not in usable):
            continue
        if args.prefixes and not name.startswith(tuple(args.prefixes.split(","))):
            continue
        t0 = time.perf_counter()
        results[name] = _run(fn)
        if usable is not None and results[name][0] == "failed":
            break  # one failure decides the verdict (killed); the driver needs no more
        if args.times:
            print(f"{time.perf_counter() - t0:6.2f}s {name} {results[name][0]}", file=sys.stderr)
    text = json.dumps(results, indent=1, sort_keys=True)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
