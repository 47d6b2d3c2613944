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
  io/<format>/<config>/<model>   that pipeline's result written to a file (.wpz, or ONNX
                                 with its packed sub-byte initializers) and read back, then
                                 verify(result, read back) at default settings: what
                                 `weightpress verify` checks after a save (sub-byte indices
                                 and masks are stored packed and read through unpacking)

Which seeds (fixed, and chosen without running any stage, so a mutant cannot choose
its own programs):
- quant: PATTERN_SEEDS (a table found once on the unmutated tree: the first seeds whose
  program the pass rewrites, and a few it leaves alone; the preset and the pass run on
  them), plus the seeds that cover every structural case the generator names with c.tag
  (zero point kinds, data at the range ends, scales past fp16, block outputs inside a
  chain, opsets, layouts, ...) PATTERN_TAG_TIMES times: a greedy cover over the first
  SEARCH seeds, computed from the generators alone (the pass runs on them);
- models: likewise the seeds whose models cover every tag of weight_model (weight cases,
  dtypes, shared consts, sparse / vector-LUT / joint vector-LUT weights, weights at the
  selection boundary), for iOS18 and (the tags an iOS16 model can carry) iOS16.
The driver compares each case with the unmutated tree's outcome: only cases that
are "ok" there count (with --baseline the others are not even run, and the run stops
at the first failure, which decides the verdict).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
import warnings
from functools import lru_cache

# per pattern: the first 10 seeds whose program the pattern's pass rewrites and the first 2 it
# leaves alone, found once on the unmutated tree (a fixed table: choosing them at run time would
# let a mutant choose its own programs); regenerate with --seed-table after changing a generator
PATTERN_SEEDS = {
    "quantized_reshape": (0, 1, 2, 4, 8, 9, 12, 13, 15, 17, 3, 5),
    "zero_point_round_trip": (0, 2, 3, 5, 6, 8, 12, 15, 17, 19, 1, 4),
    "const_dequantize_flip": (0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 3, 14),
    "dequantize_quantize_pair": (1, 3, 5, 6, 7, 8, 9, 11, 16, 17, 0, 2),
    "quantized_binary": (3, 4, 7, 10, 13, 15, 17, 20, 23, 24, 0, 1),
    "const_dequantize": (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    "affine_dequantize_layout": (0, 2, 4, 5, 6, 7, 8, 9, 11, 12, 1, 3),
    "lut_per_channel_scale": (0, 1, 3, 4, 8, 10, 11, 12, 14, 15, 2, 5),
    "quantized_lut": (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
}
SEARCH = 200  # seeds searched for the tag cover
PATTERN_TAG_TIMES = 2  # programs per tag of a pattern generator (a tag's case in two contexts)
# model tags left out of the cover: which weight holds which case (the weights of a model share
# their compression path; "case:<case>" still requires every case somewhere) -- each kept tag
# costs a model, and a model costs a case per configuration
MODEL_TAG_SKIP = re.compile(r"^(shared_w|conv_w|edge_w|edge1_w|sparse_w|big_w):")
MODEL_COST = {True: 4.0}  # a model with the 65K-element weight takes ~4x as long to compress (k-means)
IOS16_TAGS = re.compile(r"^(case:|dtype:|shared_const$|conv$|bias$)")  # what differs on iOS16 forms

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
    # size * 0.37 is not whole on the models' weights (sparse-50's halves are: floor = ceil there)
    "sparse-percentile-37": 'sparsify_weights{mode="percentile_based",target_percentile=0.37}',
    "sparse-nm": 'sparsify_weights{n_m_ratio=[2,4]}',
    "sparse+int8": 'sparsify_weights{mode="percentile_based",target_percentile=0.5},'
                   'affine_quantize_weights{dtype="int8",granularity="per_channel",mode="linear_symmetric"}',
    "sparse+palettize-grouped": 'sparsify_weights{mode="percentile_based",target_percentile=0.5},'
                                'palettize_weights{granularity="per_grouped_channel",group_size=16,'
                                'mode="kmeans",nbits=2}',
}

# the configurations whose results are also written and read back (sub-byte storage: 4-bit
# indices, 2-bit vector indices, 1-bit masks, int4 codes, joint masks + indices)
IO_CONFIGS = ("palettize-4bit", "palettize-vector", "sparse-50", "int4-block32", "sparse+palettize",
              "palettize-uniform-4")
IO_FORMATS = ("wpz", "onnx")
IO_MODELS = 2  # the first models (by seed) of the cover also go through each format

# a configuration a model's structure refuses by design (a CompressionError naming the weight,
# not a case): vectors and per-channel scales are refused on an already sparse weight
REFUSED_ON = {"palettize-vector": "sparse_w", "palettize-pcs": "sparse_w"}


# forms that need iOS18 (int4, per-block / per-group, joint, per-channel scale, vectors)
NEEDS_IOS18 = {"int4-block32", "palettize-4bit-grouped", "palettize-pcs", "palettize-vector", "sparse+int8",
               "sparse+palettize", "sparse+palettize-grouped"}


def tag_cover(gen, search: int = SEARCH, keep=None, times: int = 1, cost=None) -> list:
    """The seeds (sorted) of a greedy cover of every tag gen's first `search` examples carry
    (kept by `keep`), each tag by `times` seeds (or all that carry it): repeatedly the seed
    that covers the most tags still short per unit of cost(all its tags), lowest first."""
    from pipeline.strategies.choices import tagged_example

    tags, price = {}, {}
    for seed in range(search):
        found = tagged_example(gen, seed)[1]
        price[seed] = 1.0 if cost is None else cost(found)
        tags[seed] = frozenset(t for t in found if keep is None or keep(t))
    need = {}
    for found in tags.values():
        for t in found:
            need[t] = min(times, need.get(t, 0) + 1)
    chosen = []
    while any(need.values()):
        best = max((s for s in tags if s not in chosen),
                   key=lambda s: (sum(need[t] > 0 for t in tags[s]) / price[s], -s))
        chosen.append(best)
        for t in tags[best]:
            need[t] = max(0, need[t] - 1)
    return sorted(chosen)


@lru_cache(maxsize=None)
def pattern_seeds(pattern: str) -> tuple:
    """The seeds covering the pattern generator's tags, each by PATTERN_TAG_TIMES programs."""
    from pipeline.strategies.programs import PATTERNS

    return tuple(tag_cover(PATTERNS[pattern][0], times=PATTERN_TAG_TIMES))


def model_seeds() -> dict:
    """{model name: (seed, opset)}: the models covering weight_model's tags."""
    from pipeline.strategies.weights import weight_model

    keep18 = lambda t: not MODEL_TAG_SKIP.match(t)  # noqa: E731
    cost = lambda tags: MODEL_COST.get("chunked_weight" in tags, 1.0)  # noqa: E731
    out = {f"m{s}": (s, "iOS18")
           for s in tag_cover(lambda c: weight_model(c, True, "iOS18"), keep=keep18, cost=cost)}
    keep16 = lambda t: bool(IOS16_TAGS.match(t))  # noqa: E731
    out.update({f"m{s}_ios16": (s, "iOS16")
                for s in tag_cover(lambda c: weight_model(c, True, "iOS16"), keep=keep16, cost=cost)})
    return out


def _refused(cname: str, mname: str, tags: frozenset) -> bool:
    if mname.endswith("ios16") and cname in NEEDS_IOS18:
        return True  # refused before iOS18 by design (TargetError)
    return REFUSED_ON.get(cname) in tags


def _round_trip(program, fmt: str):
    """program written in `fmt` and read back."""
    with tempfile.TemporaryDirectory(prefix="wp-harness-") as tmp:
        if fmt == "wpz":
            from ir.serialize import load, save

            path = os.path.join(tmp, "m.wpz")
            save(program, path)
            return load(path)
        from ir.formats.onnx import export_onnx, import_onnx

        path = os.path.join(tmp, "m.onnx")
        export_onnx(program, path)
        return import_onnx(path)


class RoundTripVerificationError(Exception):
    """verify() reported the program read back differs from the one written."""


def _io_case(spec, model, fmt):
    from pipeline import Pipeline
    from pipeline.verify import verify

    compressed = Pipeline.from_spec(spec).run(model).result
    report = verify(compressed, _round_trip(compressed, fmt))
    if not report.passed:
        raise RoundTripVerificationError(report.summary()[:300])


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
    import stages

    out = {}
    for pattern, (_, stage_name) in PATTERNS.items():
        for seed in sorted(set(PATTERN_SEEDS[pattern]) | set(pattern_seeds(pattern))):
            prog = example_program(pattern, seed)
            if seed in PATTERN_SEEDS[pattern]:  # the whole preset on the fixed table's programs
                out[f"quant/{pattern}/{seed}/preset"] = (
                    lambda p=prog: Pipeline.preset("canonicalize_quantization").run(p, verify="each"))
            out[f"quant/{pattern}/{seed}/pass"] = (
                lambda p=prog, s=stage_name: Pipeline([stages.get(s)]).run(p, verify="each"))
    configs = {name: spec for name, spec in PRESETS.items() if name != "canonicalize_quantization"}
    configs.update(EXTRA_CONFIGS)
    from pipeline.strategies.choices import tagged_example
    from pipeline.strategies.weights import weight_model

    models = {name: tagged_example(lambda c, o=opset: weight_model(c, True, o), seed)
              for name, (seed, opset) in model_seeds().items()}
    io_models = [m for m in models if not m.endswith("ios16")][:IO_MODELS]
    for cname, spec in configs.items():
        for mname, (model, tags) in models.items():
            if _refused(cname, mname, tags):
                continue  # refused by design, not a case
            out[f"comp/{cname}/{mname}"] = lambda s=spec, m=model: Pipeline.from_spec(s).run(m, verify="each")

            def decomp(s=spec, m=model):
                compressed = Pipeline.from_spec(s).run(m).result
                Pipeline.from_spec("decompress_weights").run(compressed, verify="each")
            out[f"decomp/{cname}/{mname}"] = decomp
            if cname in IO_CONFIGS and mname in io_models:
                for fmt in IO_FORMATS:
                    out[f"io/{fmt}/{cname}/{mname}"] = lambda s=spec, m=model, f=fmt: _io_case(s, m, f)
    return out


def seed_table(changed: int = 10, unchanged: int = 2) -> dict:
    """PATTERN_SEEDS recomputed on this tree (run it on correct code only)."""
    import stages
    from pipeline.strategies.programs import PATTERNS, example_program

    table = {}
    for name, (_, stage_name) in PATTERNS.items():
        st, yes, no = stages.get(stage_name), [], []
        for seed in range(500):
            p = example_program(name, seed)
            (yes if st(p) is not p else no).append(seed)
            if len(yes) >= changed and len(no) >= unchanged:
                break
        table[name] = tuple(yes[:changed] + no[:unchanged])
    return table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", help="write the results here instead of stdout")
    ap.add_argument("--only", help="run only the cases whose name contains this")
    ap.add_argument("--prefixes", help="comma-separated case-name prefixes to run (e.g. quant/,decomp/)")
    ap.add_argument("--times", action="store_true", help="print each case's seconds to stderr")
    ap.add_argument("--baseline", help="a JSON of this harness on the unmutated tree: run only the cases "
                                       "that were ok there, and stop at the first one that fails")
    ap.add_argument("--cases", help="a JSON list of case names: run only those")
    ap.add_argument("--seed-table", action="store_true", help="print PATTERN_SEEDS recomputed, and stop")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    if args.seed_table:
        print(seed_table())
        return 0
    import numpy as np
    np.seterr(all="ignore")
    results = {}
    usable = None
    if args.baseline:
        with open(args.baseline) as f:
            usable = {k for k, v in json.load(f).items() if v[0] == "ok"}
    if args.cases:
        with open(args.cases) as f:
            wanted = set(json.load(f))
        usable = wanted if usable is None else usable & wanted
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
