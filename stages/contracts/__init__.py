"""Stage contracts: what each stage promises to preserve, as data next to its code.

    @stage("dead_code_elimination", contract=exact())
    @stage("distributive_quantized_binary_op_scale_normalization", contract=within(1))
    @compression_stage("sparsify_weights", check_sparsify, contract=lossy(sparsify_bound))

Kinds:

- ``exact()``: every output bit-identical (dtype, shape, values; NaN equals NaN).
- ``within(k, values="quantize", rtol=0)``: the named quantized values (the outputs of ops
  of type ``values`` that keep their name across the step) move by at most ``k``
  quantization steps; with those values held at their old contents, every output is
  bit-identical, or (``rtol`` > 0: float arithmetic reassociated) within
  ``rtol * max |output|``.
- ``lossy(bound)``: the stage changes weights, and promises something about each one:
  ``bound(case) -> [problem, ...]`` is checked on the weights themselves (decompressed
  before and after by the independent oracle, ir/oracle.py, never the production
  decoders); with every compressed weight held at its new decoded value, every output is
  bit-identical (the stage changed nothing but weights).
- ``composed(name, ...)``: a stage that runs other stages (canonicalize_quantization):
  the union of its parts' allowances (steps add up over distinct parts, rtol is the
  largest, exact parts allow nothing).

Checks (each returns a list of Violation, empty when the promise holds):

    check_step(before, after, stage, stats, inputs=())   # everything below
    check_weights(before, after, stage, stats)           # lossy bounds (no inputs needed)
    check_outputs(before, after, contract, inputs, stats)  # exact / within / lossy outputs
    check_report(before, after, stage, stats, require_change=False)  # no silent no-op

`inputs` is a list of {input name: array} for function "main" (pipeline.contracts draws
them when none are given). Every evaluation runs the quantization and decoder ops through
ir.oracle and compares the production kernels with it op by op: a kernel bug that would
cancel in a before/after comparison is a violation of its own ("kernel").

What the weight bounds check beyond the values (the layout the stage documents, read from the
weight's consumers with the contract's own table, graph.WEIGHT_AXES): per_channel scales on the
consumer's output axis, per_block blocks of the largest size <= block_size dividing its input
axis, n:m runs along its input axis (exactly the n smallest of every m), vectors of a vector LUT
along the channel axis, each reading its nearest entry; every scale finite and > 0.

No silent no-op (check_report): always, a stage's report must match the program (a weight
reported compressed is in a compressed form, a weight reported skipped is untouched and
has a reason, a weight of the program in a form the stage takes is in the report, pattern
counts are consistent: rewritten <= matched, and a changed program has a rewrite). With
``require_change``, the step must also have changed the program; the default is off, since
a pipeline legitimately holds stages that do not apply to a given program (the
canonicalize_quantization preset runs ten passes; a typical program needs two or three).
The report's selection is checked too (selection.py): without an op_selector or config, weights
of more than 2048 elements and only those are compressed, and every skip reason that states
numbers ("48 channels not divisible by group_size 16") must agree with them. Postconditions may
take the step's input too (leaves(after, before)) to judge what the step built; and no step may
introduce a quantization scale that is not finite and > 0.

Modules (one idea each; every public name is importable from here):

    kinds           Contract, exact / within / lossy / composed, effective, contract_of, Violation
    graph           plain readings of a function (producers, readers, block outputs, const values)
    blocks          tensors as blocks, parameters at full rank, ulps, the largest-divisor rule
    weights         WeightCase, weight_cases, reported figures, check_weights
    affine          affine_bound, affine_tensor_problems, code_range
    palettize       palettize_bound
    sparsify        sparsify_bound
    decompress      decompress_bound
    postconditions  what a rewrite pass leaves no site of (no_cancelling_pairs, ...), or builds only
                    where its opset allows (leaves(after, before)); no new non-finite / non-positive scale
    outputs         check_outputs (exact / within / lossy on the outputs, kernels vs the oracle)
    report          check_report (no silent no-op: the report matches the program)
    selection       the seed's size rule, and the numbers of every skip reason checked
    step            check_step (all of the above for one step)
"""
from stages.contracts.affine import affine_bound, affine_tensor_problems, code_range
from stages.contracts.decompress import decompress_bound
from stages.contracts.graph import find_form
from stages.contracts.kinds import Contract, Violation, composed, contract_of, effective, exact, lossy, within
from stages.contracts.outputs import check_outputs
from stages.contracts.palettize import _optimum_problems, palettize_bound  # noqa: F401 (tests read the DP)
from stages.contracts.postconditions import (constexpr_forms_fit_opset, int_ops_fit_opset, no_cancelling_pairs,
                                             no_new_bad_scales, no_unnormalized_binary_ops,
                                             no_unreordered_lut_scales)
from stages.contracts.report import check_report
from stages.contracts.sparsify import sparsify_bound
from stages.contracts.step import check_step
from stages.contracts.weights import WeightCase, check_weights, figure_problems, weight_cases

__all__ = ["no_cancelling_pairs", "no_unnormalized_binary_ops", "constexpr_forms_fit_opset", "int_ops_fit_opset",
           "no_unreordered_lut_scales", "no_new_bad_scales", "Contract", "Violation", "WeightCase", "exact",
           "within", "lossy", "composed", "effective", "contract_of", "check_step", "check_weights",
           "check_outputs", "check_report", "affine_bound", "palettize_bound", "sparsify_bound",
           "decompress_bound", "affine_tensor_problems", "code_range", "find_form", "figure_problems",
           "weight_cases"]
