"""The `weightpress` command line.

    weightpress compress MODEL -o OUT (--preset NAME | --recipe FILE | --pipeline SPEC | stage options)
                         [--workers N | --scheduler ADDRESS]
    weightpress inspect MODEL
    weightpress diff A B
    weightpress verify A B [--samples N] [--inputs X.npz] [--evaluator onnxruntime] [--dim name=N]
    weightpress pipeline list
    weightpress demo [--out DIR]

A mistake a shell user can make (a missing or damaged file, an unknown
preset, a bad recipe, an unknown option) is one line on stderr,
`weightpress: error: ...`, and a non-zero exit code. Anything else is a bug:
it is reported in one line too, with its traceback when WEIGHTPRESS_DEBUG=1.
Warnings are one line each, `weightpress: warning: ...`.

Ctrl-C at any moment: `weightpress: interrupted`, exit code 130, and no
output left: a command's outputs are written atomically, and what they replace
is kept until the command ends (pipeline.models.OutputTransaction), so an
interrupted command puts back everything as it was. Once the command has
returned, Ctrl-C is only noted and the run completes (exit 0). This module
imports nothing heavy before main() has installed its handler
(pipeline.interrupts), so this holds from the first milliseconds of a run.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

PROG = "weightpress"
EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_BUG, EXIT_INTERRUPTED = 0, 1, 2, 70, 130


class UsageError(ValueError):
    """The command line itself is wrong."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (and exit code 2), not usage + error."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def _debug() -> bool:
    return os.environ.get("WEIGHTPRESS_DEBUG", "") not in ("", "0")


# ---- progress -------------------------------------------------------------------

def progress_wanted(flag) -> bool:
    """--progress / --no-progress, else: bars when stderr is a terminal."""
    return sys.stderr.isatty() if flag is None else bool(flag)


def make_progress(flag):
    """A progress(iterable, desc=, total=) drawing tqdm bars on stderr, or None when off."""
    if not progress_wanted(flag):
        return None
    from tqdm import tqdm

    def progress(iterable, desc="", total=None):
        return tqdm(iterable, desc=desc, total=total, file=sys.stderr, leave=False, dynamic_ncols=True)

    return progress


# ---- compress -------------------------------------------------------------------

# Stage options, in the order their stages run (prune, then palettize or quantize,
# as joint compression expects): flag, metavar, argparse type (and `choices_of`: the
# stage option whose choices the flag offers, read from the stage's metadata), help,
# stage name, the stage parameters the value becomes.
def _percent(text: str) -> float:
    value = float(text)
    if not 0 < value < 100:
        raise argparse.ArgumentTypeError(f"sparsity must be a percentage between 0 and 100, got {text}")
    return value


def _bpw(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 64:
        raise argparse.ArgumentTypeError(f"bits per weight must be a number in (0, 64], got {text}")
    return value


_SIZE_UNITS = {"": 1, "b": 1, "k": 10 ** 3, "kb": 10 ** 3, "kib": 2 ** 10, "m": 10 ** 6, "mb": 10 ** 6,
               "mib": 2 ** 20, "g": 10 ** 9, "gb": 10 ** 9, "gib": 2 ** 30}


def parse_size(text: str) -> int:
    """Bytes from "5MB" (10^6), "4.5MiB" (2^20), "800KB", "123456"; a unit table, case-insensitive."""
    import re

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _SIZE_UNITS or float(m.group(1)) * _SIZE_UNITS[unit] < 1:
        raise argparse.ArgumentTypeError(f"a size is a positive number of bytes with an optional unit "
                                         f"(KB, MB, GB, KiB, MiB, GiB), e.g. 5MB; got {text!r}")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


STAGE_OPTIONS = (
    ("--sparsify", "PCT", dict(type=_percent), "prune PCT%% of each weight (smallest magnitudes)",
     "sparsify_weights", lambda pct: {"target_sparsity": pct / 100.0}),
    ("--palettize", "NBITS", dict(type=int, choices_of="nbits"),
     "palettize each weight to a 2**NBITS-entry LUT (k-means)",
     "palettize_weights", lambda nbits: {"nbits": nbits}),
    ("--quantize", "DTYPE", dict(choices_of="dtype"),
     "affine-quantize each weight per channel",
     "affine_quantize_weights", lambda dtype: {"dtype": dtype}),
    ("--target-bpw", "B", dict(type=_bpw),
     "mixed precision: each weight in the form (k-means LUT of 2-6 bits, int4 per block, int8, fp16, or "
     "as it is) that gives the least estimated error with B bits per weight on average",
     "mixed_precision", lambda bpw: {"target_bpw": bpw}),
    ("--target-size", "SIZE", dict(type=parse_size),
     "mixed precision under a size: the stored constants take at most SIZE (e.g. 5MB, 4.5MiB)",
     "mixed_precision", lambda size: {"target_size": size}),
)


def _argparse_kind(kind: dict, stage_name: str) -> dict:
    """The add_argument keywords of a stage option: `choices_of` becomes the stage option's choices."""
    if "choices_of" not in kind:
        return kind
    from stages import get

    rest = {k: v for k, v in kind.items() if k != "choices_of"}
    return {**rest, "choices": get(stage_name).option(kind["choices_of"]).choices}


def _option_dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def build_pipeline(args):
    """The Pipeline the compress options describe (exactly one way of giving it)."""
    from pipeline import Pipeline

    stage_opts = [(flag, stage, to_params(getattr(args, _option_dest(flag))))
                  for flag, _, _, _, stage, to_params in STAGE_OPTIONS
                  if getattr(args, _option_dest(flag)) is not None]
    given = [name for name, present in (("--preset", args.preset), ("--recipe", args.recipe),
                                        ("--pipeline", args.pipeline_spec), ("stage options", stage_opts))
             if present]
    if getattr(args, "target_bpw", None) is not None and getattr(args, "target_size", None) is not None:
        raise UsageError("--target-bpw and --target-size are two budgets for the same thing: give one")
    if len(given) != 1:
        raise UsageError("compress needs exactly one of --preset, --recipe, --pipeline or stage options "
                         "(--sparsify/--palettize/--quantize/--target-bpw/--target-size)" + (f"; got {' and '.join(given)}" if given else ""))
    if getattr(args, "awq", False) and not stage_opts:
        raise UsageError("--awq goes with --quantize or --palettize (in --pipeline / --recipe, put "
                         "awq_scale_weights{...} before the quantizer)")
    if args.preset:
        return Pipeline.preset(args.preset)
    if args.recipe:
        recipe = Path(args.recipe)
        if not recipe.is_file():
            raise UsageError(f"{recipe}: no such recipe file")
        return Pipeline.from_recipe(recipe)
    if args.pipeline_spec:
        return Pipeline.from_spec(args.pipeline_spec)
    from pipeline.spec import format_step

    awq = _awq_step(args, stage_opts)
    if getattr(args, "calibration", None) is not None:
        stage_opts = [(flag, name, params) for flag, stage, params in stage_opts
                      for name in CALIBRATED.get(stage, (stage,))]
    return Pipeline.from_spec(",".join(format_step(stage, params) for _, stage, params in awq + stage_opts))


# --awq: awq_scale_weights first, searching for the form the stage option then gives the weights
AWQ_TARGETS = {"palettize_weights": lambda p: {"target": "lut", "nbits": p["nbits"], "group_size": 0},
               "affine_quantize_weights": lambda p: {"target": "int4_channel" if "4" in str(p["dtype"])
                                                     else "int8_channel"}}


def _awq_step(args, stage_opts) -> list:
    if not getattr(args, "awq", False):
        return []
    if getattr(args, "calibration", None) is None:
        raise UsageError("--awq needs --calibration (the scales come from the activations' statistics)")
    found = [(stage, params) for _, stage, params in stage_opts if stage in AWQ_TARGETS]
    if not found:
        raise UsageError("--awq goes with --quantize or --palettize (in --pipeline / --recipe, put "
                         "awq_scale_weights{...} before the quantizer)")
    stage, params = found[0]
    return [("--awq", "awq_scale_weights", AWQ_TARGETS[stage](params))]


# with --calibration, a stage option runs its calibrated stage first; the data-free stage after
# it takes the weights the calibrated one has no statistics for (embeddings under GPTQ, convs)
CALIBRATED = {"palettize_weights": ("gptq_palettize_weights", "palettize_weights"),
              "affine_quantize_weights": ("gptq_quantize_weights", "affine_quantize_weights")}


def with_target(pipe, target, out: Path):
    """The pipeline, run after set_target when --target raises the Core ML deployment target."""
    if target is None:
        return pipe
    from pipeline import Pipeline
    from pipeline.models import format_of
    from stages import get

    if format_of(out).name != "Core ML":
        raise UsageError(f"--target {target}: a Core ML deployment target, but {out} is not a Core ML model")
    try:
        return Pipeline([get("set_target")(target=target)]) + pipe
    except ValueError as e:  # an unknown target, named by the stage
        raise UsageError(str(e)) from None


def _check_paths(model: Path, out: Path, report):
    """Cheap checks first, so a typo is reported before minutes of compression."""
    from pipeline.models import ModelFileError, check_writable, format_of
    from pipeline.report import report_kind

    format_of(model)
    if not model.exists():
        raise ModelFileError(f"{model}: no such file")
    check_writable(out)
    if report:
        report_kind(report)
    if out.exists() and model.exists() and out.resolve() == model.resolve():
        raise UsageError(f"{out}: the output would overwrite the input model; choose another path")
    for path in filter(None, (out, report and Path(report))):
        if not path.parent.is_dir() and str(path.parent):
            raise UsageError(f"{path}: directory {path.parent} does not exist")


def _seconds_by_weight(trace) -> dict:
    """Per-weight seconds when the stages reported them in their statistics."""
    found = {}
    for step in getattr(trace, "steps", ()):
        for name, st in _weight_stats(step):
            sec = st.get("seconds") if hasattr(st, "get") else None
            if isinstance(sec, (int, float)):
                found[name] = found.get(name, 0.0) + sec
    return found


def _weight_stats(step):
    stats = getattr(step, "stats", None) or {}
    weights = stats.get("weights") if hasattr(stats, "get") else None
    if hasattr(weights, "items"):
        return list(weights.items())
    if isinstance(weights, (list, tuple)):
        return [(w.get("name"), w) for w in weights if hasattr(w, "get")]
    return []


def _skip_notes(trace) -> dict:
    """Per weight, why a stage left it as it was ("skipped" in the stage's statistics);
    prefixed by the stage's name when several stages looked at the weights."""
    steps = [s for s in getattr(trace, "steps", ()) if _weight_stats(s)]
    found: dict = {}
    for step in steps:
        stage = getattr(getattr(step, "stage", None), "name", "?")
        for name, st in _weight_stats(step):
            why = st.get("skipped") if hasattr(st, "get") else None
            if why:
                found.setdefault(name, []).append(f"{stage}: {why}" if len(steps) > 1 else str(why))
    return {name: "; ".join(reasons) for name, reasons in found.items()}


# writer options of `compress`: flag dest -> (the output suffix they need, the writer keyword)
WRITER_OPTIONS = {"onnx_matmul_nbits": (".onnx", "matmul_nbits"), "onnx_opset": (".onnx", "opset")}


def _writer_options(args, out: Path) -> dict:
    options = {}
    for dest, (suffix, keyword) in WRITER_OPTIONS.items():
        value = getattr(args, dest, None)
        if value is None or value is False:
            continue
        if out.suffix.lower() != suffix:
            raise UsageError(f"--{dest.replace('_', '-')} applies to {suffix} outputs, not {out.suffix or out.name}")
        options[keyword] = value
    return options


def _summary(rep, program, result, model: Path, out: Path, trace):
    """(changes, file line): per weight the bytes as written in each file where its format
    is measured (pipeline.filesizes), else the estimate; the skip reasons from the trace."""
    from pipeline.filesizes import file_bytes
    from pipeline.models import readable

    written = readable(out)  # where the written output can be read (pipeline.models.readable)
    figures = rep.stage_figures(dict(_weight_stats(step)) for step in getattr(trace, "steps", ()))
    changes = rep.compare_files(program, result, model, written, _seconds_by_weight(trace), _skip_notes(trace),
                                figures)
    line = rep.file_line(model.name, file_bytes(model), out.name, file_bytes(written), changes)
    return changes, line


def cmd_compress(args) -> int:
    import contextlib

    with contextlib.ExitStack() as stack:  # a Dask cluster (--workers / --scheduler) lives for the command
        return _compress(args, stack)


def _executor(args, stack):
    """--workers N (a LocalCluster of N processes) / --scheduler ADDRESS: the Dask client the
    per-weight work runs on; else a thread pool in this process (_threads)."""
    if args.workers is None and args.scheduler is None:
        return _threads(stack)
    from pipeline.distributed import cluster

    return stack.enter_context(cluster(workers=args.workers, scheduler=args.scheduler))


def _threads(stack):
    """A thread pool over the weights when the machine has more than one core (the per-weight work
    is numpy, which releases the GIL), with the BLAS library held to one thread for the command:
    pool threads each running a BLAS that spreads over every core oversubscribe them. On 2 cores,
    all-MiniLM-L6-v2 with 128 calibration sentences and --target-bpw 4.5: 78.0 s serial, 72.6 s
    with threads alone, 58.9 s with both; the output is the serial run's, byte for byte. The limit
    holds for the whole command, so the serial steps (calibrate's Gram sums) lose their BLAS threads
    too: those figures are whole commands, so that cost is in them."""
    from pipeline.executors import usable_cores

    if usable_cores() < 2:
        return None
    from threadpoolctl import threadpool_limits

    stack.enter_context(threadpool_limits(limits=1, user_api="blas"))
    return "threads"


def _compress(args, stack) -> int:
    from pipeline import report as rep
    from pipeline.models import load_model, save_model, write_text_atomic

    model, out = Path(args.model), Path(args.output)
    _check_paths(model, out, args.report)
    options = _writer_options(args, out)
    pipe = with_target(build_pipeline(args), args.target, out)
    calibration = None
    if args.calibration is not None:
        from pipeline.calibration import calibration_data

        calibration = calibration_data(args.calibration)  # a bad file: one line, before the model loads
    executor = _executor(args, stack)  # a cluster that does not answer: one line, before the model loads
    program = load_model(model)
    cache = None
    if args.cache:
        from pipeline import DiskCache

        cache = DiskCache(args.cache)
    started = time.perf_counter()
    trace = pipe.run(program, cache=cache, progress=progress_wanted(args.progress), calibration=calibration,
                     executor=executor)
    seconds = time.perf_counter() - started
    from stages.calibration import without_calibration

    result = without_calibration(trace.result)  # the statistics are for the stages, not the written model
    save_model(result, out, check=_output_check(args, out, result), **options)
    changes, files = _summary(rep, program, result, model, out, trace)
    headers, rows = rep.summary_rows(changes, seconds)
    allocations = rep.allocations_of(trace)
    errors, error_note = _output_errors(program, result, calibration)
    if not args.quiet:
        print(rep.format_table(headers, rows))
        print(files)
        for allocation in allocations:
            print(rep.allocation_line(allocation))
            print(rep.format_table(*rep.allocation_rows(allocation)))
        if errors:
            from pipeline.output_error import output_error_line

            print(output_error_line(errors))
    if args.report:
        notes = (f"model: {model}", f"output: {out}", f"pipeline: {pipe.spec()}", f"time: {seconds:.2f} s", files)
        write_text_atomic(args.report, rep.render_report(args.report, f"weightpress: {model.name}",
                                                         changes, seconds, notes, allocations, errors,
                                                         error_note))
    print(f"wrote {out}" + (f" and {args.report}" if args.report else ""), file=sys.stderr)
    return EXIT_OK


# the calibration batches run through both models for the summary's output error: the first ones
# holding this many samples, and at least OUTPUT_ERROR_BATCHES (a batch not cut into samples, a
# time-first one say, counts its leading axis as samples)
OUTPUT_ERROR_SAMPLES, OUTPUT_ERROR_BATCHES = 32, 8


def _output_errors(program, result, calibration) -> tuple:
    """(the end-to-end output error on the first calibration samples (pipeline.output_error),
    a note for the report): ([], why) without calibration samples or when the models cannot
    be run; the model is written by then, and a summary figure never fails the command."""
    if calibration is None:
        return [], ""
    from pipeline.output_error import output_errors
    from stages.calibration.sensitivity import probe_batches

    try:
        feeds = calibration.feeds(program.main)
        count = max(len(probe_batches(feeds, OUTPUT_ERROR_SAMPLES)), OUTPUT_ERROR_BATCHES)
        return output_errors(program, result, feeds, count), ""
    except Exception as e:  # noqa: BLE001 - said in the report and on stderr, not fatal
        why = " ".join(str(e).split())[:200] or type(e).__name__
        print(f"{PROG}: note: output error not measured: {why}", file=sys.stderr)
        return [], f"not measured: the models could not be run on the calibration samples ({why})"


def _output_check(args, out: Path, result):
    """What to run on the written file before it is moved into place (None: nothing):
    an ONNX output is loaded and run once in onnxruntime, when it is installed."""
    from pipeline.outputcheck import check_onnx, onnxruntime_available

    if not args.check or out.suffix.lower() != ".onnx" or not onnxruntime_available():
        return None

    reference = args.model if Path(args.model).suffix.lower() == ".onnx" else None

    def check(written):
        note = check_onnx(written, out, result, reference)
        if note:
            print(f"{PROG}: note: {note}", file=sys.stderr)

    return check


# ---- inspect / diff / verify ------------------------------------------------------

def cmd_inspect(args) -> int:
    from pipeline import report as rep
    from pipeline.models import load_model

    program = load_model(args.model)
    print(rep.format_table(*rep.inspect_rows(rep.weights_of(program, min_size=args.min_size))))
    print()
    print(rep.format_table(*rep.op_count_rows(rep.op_type_counts(program))))
    return EXIT_OK


def cmd_diff(args) -> int:
    from pipeline import report as rep
    from pipeline.models import load_model

    d = rep.diff_models(load_model(args.a), load_model(args.b))
    print(rep.render_diff(d))
    return EXIT_FAIL if args.exit_code and not d.empty else EXIT_OK


def cmd_verify(args) -> int:
    from pipeline import verify
    from pipeline.models import load_model

    inputs = None
    if args.inputs is not None:
        from pipeline.samples import load_npz

        inputs = load_npz(args.inputs)  # a bad file: one line, before the models load
    a, b = load_model(args.a), load_model(args.b)
    kwargs = {key: getattr(args, key) for key in ("samples", "seed", "rtol", "atol", "snr_db")
              if getattr(args, key) is not None}
    result = verify(a, b, inputs=inputs, evaluator=args.evaluator, dims=dict(args.dim or ()), **kwargs)
    print(_render_verify(result))
    passed = bool(getattr(result, "passed", False))
    print(f"{'equivalent within tolerance' if passed else 'NOT equivalent'}: {args.a} vs {args.b}")
    if not passed:  # the first line a script reads from stderr: what broke, naming the output
        print(f"{PROG}: verify failed: {result.reason}", file=sys.stderr)
    return EXIT_OK if passed else EXIT_FAIL


def _dim(text: str) -> tuple:
    """--dim name=N: a size for a symbolic dimension."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"need name=N, got {text!r}")
    return name.strip(), _positive_int(value)


def _render_verify(result) -> str:
    render = getattr(result, "render", None) or getattr(result, "summary", None)
    if callable(render):
        return str(render())
    return str(result)


# ---- pipeline list -------------------------------------------------------------------

def cmd_pipeline_list(args) -> int:
    import stages
    from pipeline.report import format_table

    rows = []
    for name in sorted(stages.names()):
        st = stages.get(name)
        params = ", ".join(f"{k}={_show(v)}" for k, v in st.defaults.items()) or "-"
        rows.append((name, st.version, params))
    print("stages:")
    print(format_table(("stage", "version", "parameters (defaults)"), rows))
    print()
    print("presets:")
    print(_render_presets())
    return EXIT_OK


def _render_presets() -> str:
    """One step per line, so a long preset stays readable."""
    from pipeline import presets
    from pipeline.spec import format_step, parse

    width = max(map(len, presets.names()))
    lines = []
    for name in presets.names():
        steps = [format_step(s.name, s.params) for s in parse(presets.spec_of(name))]
        lines += [f"{(name if i == 0 else ''):<{width}}  {step}" for i, step in enumerate(steps)]
    return "\n".join(lines)


def _show(value) -> str:
    if callable(value) and not isinstance(value, type):
        return getattr(value, "__name__", repr(value))
    return repr(value)




# ---- demo --------------------------------------------------------------------------------

def cmd_demo(args) -> int:
    from pipeline.demo.run import render_rows, run_demo

    from pipeline import demo

    n_images = len(demo.held_out()[1])
    print(f"digits MLP 64-256-128-10, accuracy on {n_images} held-out images, through the IR interpreter")
    rows, written, notes = run_demo(Path(args.out), progress=make_progress(args.progress))
    print(render_rows(rows))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    kinds = ", ".join(sorted({p.suffix for p in written}))
    print(f"wrote {len(written)} models ({kinds}) to {args.out}", file=sys.stderr)
    return EXIT_OK


# ---- the parser ----------------------------------------------------------------------------

def _add_progress(p):
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars on stderr (default: when stderr is a terminal)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"need a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"need a positive integer, got {text}")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"need a number, got {text!r}") from None
    if value != value:
        raise argparse.ArgumentTypeError("need a number, got nan")
    return value


def _tolerance(text: str) -> float:
    value = _number(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"a tolerance must be finite and >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    import ir

    p = OneLineParser(prog=PROG, description="Compress ML model weights and canonicalize quantized graphs. "
                      "Models: .onnx, .mlpackage (Core ML), .wpz (weightpress native).")
    p.add_argument("--version", action="version", version=f"{PROG} {ir.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = sub.add_parser("compress", help="compress a model's weights")
    c.add_argument("model", metavar="MODEL")
    c.add_argument("-o", "--output", required=True, metavar="OUT", help="where to write the compressed model")
    how = c.add_argument_group("what to do (exactly one)")
    how.add_argument("--preset", metavar="NAME", help="a named preset (see 'weightpress pipeline list')")
    how.add_argument("--recipe", metavar="FILE", help="a TOML or JSON recipe")
    how.add_argument("--pipeline", dest="pipeline_spec", metavar="SPEC",
                     help="a pipeline spec, e.g. 'sparsify_weights{target_sparsity=0.5},palettize_weights{nbits=4}'")
    for flag, metavar, kind, help_, stage_name, _ in STAGE_OPTIONS:
        how.add_argument(flag, metavar=metavar, help=help_, **_argparse_kind(kind, stage_name))
    c.add_argument("--target", metavar="TARGET",
                   help="Core ML deployment target of the output, e.g. iOS18 (default: the input model's; "
                        "raising it allows the newer compressed forms: 4-bit, per-block, grouped LUTs, joint)")
    c.add_argument("--report", metavar="FILE", help="also write a report (.html or .md) with weight histograms")
    c.add_argument("--calibration", metavar="FILE.npz",
                   help="calibration samples (.npz named like the model's inputs, samples along the leading "
                        "axis; or a directory of .npz): statistics are collected first, and --palettize / "
                        "--quantize use GPTQ on the weights they cover (recipes and --pipeline get a "
                        "calibrate step first and choose their calibrated stages themselves)")
    c.add_argument("--awq", action="store_true",
                   help="with --calibration and --quantize / --palettize: first scale each weight's input "
                        "channels by AWQ's search, where the scale folds exactly into the op that makes them "
                        "(awq_scale_weights: the same function, weights easier to quantize)")
    onnx_out = c.add_argument_group("ONNX output")
    onnx_out.add_argument("--onnx-matmul-nbits", action="store_true",
                          help="write int4/uint4 per-block weights of MatMul / linear as com.microsoft MatMulNBits "
                               "(onnxruntime's fast 4-bit kernels; other runtimes may not have the op)")
    onnx_out.add_argument("--onnx-opset", type=int, metavar="N",
                          help="the output's opset (default: the input model's; e.g. 21 to upgrade it for "
                               "INT4 initializers)")
    c.add_argument("--cache", metavar="DIR", help="an on-disk cache of stage results")
    dist = c.add_argument_group("Dask (pip install 'weightpress[distributed]')").add_mutually_exclusive_group()
    dist.add_argument("--workers", type=_positive_int, metavar="N",
                      help="run the per-weight work on a local Dask cluster of N worker processes")
    dist.add_argument("--scheduler", metavar="ADDRESS",
                      help="run it on the Dask cluster whose scheduler is at ADDRESS (e.g. tcp://host:8786); "
                           "its workers must reach the model's files and --cache DIR at the same paths")
    c.add_argument("-q", "--quiet", action="store_true", help="no summary table")
    c.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="load and run an .onnx output once in onnxruntime before writing it (default: on, "
                        "when onnxruntime is installed)")
    _add_progress(c)
    c.set_defaults(run=cmd_compress)

    i = sub.add_parser("inspect", help="a table of a model's weights (and the layers using them), then its op types")
    i.add_argument("model", metavar="MODEL")
    i.add_argument("--min-size", type=int, default=2, metavar="N", help="skip weights of fewer elements (default 2)")
    i.set_defaults(run=cmd_inspect)

    d = sub.add_parser("diff", help="what differs between two models")
    d.add_argument("a", metavar="A")
    d.add_argument("b", metavar="B")
    d.add_argument("--exit-code", action="store_true", help="exit with 1 when the models differ")
    d.set_defaults(run=cmd_diff)

    v = sub.add_parser("verify", help="check two models compute the same (property-based, or on real inputs)")
    v.add_argument("a", metavar="A")
    v.add_argument("b", metavar="B")
    v.add_argument("--samples", type=_positive_int, default=32, metavar="N",
                   help="random inputs to try (default 32)")
    v.add_argument("--seed", type=int, default=None, help="seed of the random inputs")
    v.add_argument("--rtol", type=_tolerance, default=None, help="relative tolerance per element (default 1e-5)")
    v.add_argument("--atol", type=_tolerance, default=None, help="absolute tolerance per element (default 1e-6)")
    v.add_argument("--snr-db", type=_number, default=None, metavar="DB",
                   help="instead of rtol/atol: pass when every sample's output SNR >= DB (for compressed models)")
    v.add_argument("--inputs", metavar="X.npz", default=None,
                   help="real inputs: one array per model input, named like it, samples along the leading axis "
                        "(instead of generated inputs)")
    v.add_argument("--evaluator", choices=("interpreter", "onnxruntime"), default="interpreter",
                   help="run the models with the reference interpreter (exact, default) or onnxruntime (fast)")
    v.add_argument("--dim", type=_dim, action="append", metavar="NAME=N",
                   help="size of a symbolic input dimension for generated inputs (repeatable)")
    v.set_defaults(run=cmd_verify)

    pl = sub.add_parser("pipeline", help="stages and presets")
    pl_sub = pl.add_subparsers(dest="pipeline_command", metavar="ACTION", required=True)
    pl_sub.add_parser("list", help="stages with their parameters, presets with their steps").set_defaults(
        run=cmd_pipeline_list)

    dm = sub.add_parser("demo", help="compress the embedded digits model with several presets")
    dm.add_argument("--out", default="weightpress-demo-out", metavar="DIR",
                    help="where to write the compressed models (default ./weightpress-demo-out)")
    _add_progress(dm)
    dm.set_defaults(run=cmd_demo)
    return p


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    text = " ".join(line.strip() for line in lines[:1]) or type(e).__name__
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        text = f"{e.filename}: {e.strerror}"
    return text


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings as one line each (the default shows the source line that raised them too)."""
    text = " ".join(str(message).split())
    print(f"{PROG}: warning: {text}", file=sys.stderr if file is None else file)


# What a bad input can make a library raise besides ValueError / OSError: each is the
# input's fault (nesting past the interpreter's stack, sizes past memory), not a bug.
_INPUT_LIMITS = {RecursionError: "nested too deeply for this tool (Python's recursion limit)",
                 MemoryError: "does not fit in memory"}


def _report(e: BaseException) -> int:
    """The exit code for what stopped a command, after one line on stderr."""
    from pipeline import interrupts

    if isinstance(e, SystemExit):
        raise e
    if isinstance(e, KeyboardInterrupt) or (interrupts.interrupted() and isinstance(e, Exception)):
        print(f"{PROG}: interrupted", file=sys.stderr)  # whatever the interrupt turned into
        return EXIT_INTERRUPTED
    if isinstance(e, BrokenPipeError):  # `weightpress inspect m | head`: the reader left; say nothing
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return EXIT_FAIL
    if _debug() or not isinstance(e, Exception):
        raise e
    if isinstance(e, UsageError):
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(e, (ValueError, OSError)):
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_FAIL
    limit = next((why for kind, why in _INPUT_LIMITS.items() if isinstance(e, kind)), None)
    if limit is not None:
        print(f"{PROG}: error: the input is {limit} ({type(e).__name__})", file=sys.stderr)
        return EXIT_FAIL
    print(f"{PROG}: internal error: {type(e).__name__}: {_one_line(e)} "
          f"(run with WEIGHTPRESS_DEBUG=1 for the traceback)", file=sys.stderr)
    return EXIT_BUG


def _command(argv) -> int:
    """Parse and run one command; its outputs are committed only if it ran to its end
    without an interrupt (see the module docstring)."""
    import warnings

    from pipeline import interrupts
    from pipeline.models import OutputTransaction

    args = build_parser().parse_args(argv)
    with OutputTransaction() as outputs, warnings.catch_warnings():
        warnings.showwarning = _show_warning
        code = args.run(args)
        if interrupts.interrupted():
            raise KeyboardInterrupt  # a library swallowed it: write nothing
        interrupts.hold()  # the point of no return: from here Ctrl-C is only noted
        outputs.finish()
    return code


def _hypothesis_storage() -> str:
    """Where verify's hypothesis keeps its caches: the user's cache directory, not the
    current one (it would leave a .hypothesis directory wherever weightpress runs)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "weightpress", "hypothesis")


def main(argv=None) -> int:
    from pipeline import interrupts

    if argv is None:  # the program (not a call from Python, whose environment is its own)
        os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", _hypothesis_storage())
    restore = interrupts.install()
    code = EXIT_BUG
    try:
        try:
            code = _command(argv)
        except BaseException as e:  # noqa: BLE001 - every way out is reported in one line
            with interrupts.deferred():
                code = _report(e)
        return code
    finally:
        if argv is not None:  # called from Python: give the caller its handler back
            restore()
        else:  # the program: the command is over, and a Ctrl-C now must not kill the exit
            interrupts.ignore()  # (Python resets its own handlers to the default at shutdown)
            if code == EXIT_INTERRUPTED:
                _exit_interrupted()


def _exit_interrupted():
    """Exit 130 now. Python would turn the exit into death by SIGINT if the interrupt had
    passed through code run by PyRun_String (some extension modules' imports), which sets a
    flag no Python code can clear; the outputs are already put back, nothing is left to do."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(EXIT_INTERRUPTED)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
