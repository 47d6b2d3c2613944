"""pipeline.strategies' program and weight generators: valid, deterministic, and the hard
cases they promise are really there."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from ir.validate import validate
from pipeline.strategies import (PATTERNS, WEIGHT_CASES, example_model, example_program, pattern_programs,
                                 weight_array, weight_arrays)
from pipeline.strategies.choices import RngChooser, tagged_example
from pipeline.strategies.weights import weight_model

FAST = settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_examples_are_valid_and_the_same_for_the_same_seed(pattern):
    for seed in range(4):
        a, b = example_program(pattern, seed), example_program(pattern, seed)
        validate(a)
        assert a.digest == b.digest
    assert len({example_program(pattern, s).digest for s in range(6)}) > 1, "the seed changes nothing"


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_drawn_programs_validate(pattern):
    @FAST
    @given(pattern_programs(pattern))
    def run(prog):
        validate(prog)
    run()


BOUNDARY = {"edge_w": 2048, "edge1_w": 2049}  # the selection-boundary weights of large models
SPECIAL = {*BOUNDARY, "big_w"}


def test_models_are_deterministic_and_large_ones_pass_the_default_selection():
    from stages.compression.weights import DEFAULT_MIN_ELEMENTS

    a, b = example_model(1), example_model(1)
    assert a.digest == b.digest
    sizes = [op.attrs["val"].size for op in a.main.ops if op.op_type == "const" and op.outputs[0].name.endswith("_w")
             and op.outputs[0].name not in SPECIAL]
    assert sizes and all(s > DEFAULT_MIN_ELEMENTS for s in sizes)


def test_boundary_weights_sit_on_the_default_selection_threshold():
    from stages.compression.weights import DEFAULT_MIN_ELEMENTS

    seed = next(s for s in range(50) if "selection_boundary" in tagged_example(_large_model, s)[1])
    consts = {op.outputs[0].name: op.attrs["val"].size for op in example_model(seed).main.ops if op.op_type == "const"}
    assert {k: consts[k] for k in BOUNDARY} == BOUNDARY
    assert BOUNDARY["edge_w"] == DEFAULT_MIN_ELEMENTS


def _large_model(c):
    return weight_model(c, True, "iOS18")


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_tags_are_deterministic_and_name_what_was_built(pattern):
    gen = PATTERNS[pattern][0]
    for seed in range(8):
        (a, tags_a), (b, tags_b) = tagged_example(gen, seed), tagged_example(gen, seed)
        assert a.digest == b.digest and tags_a == tags_b and tags_a
    # the tagged structural cases are really in the programs
    for seed in range(150):
        prog, tags = tagged_example(gen, seed)
        zps = [np.asarray(op.zero_point.val) for op in prog.main.ops
               if op.op_type in ("quantize", "dequantize", "constexpr_affine_dequantize") and op.zero_point is not None]
        if "zp:partly_zero" in tags:
            assert any(z.size > 1 and np.any(z == 0) and np.any(z != 0) for z in zps), seed
        if "scales:past_fp16:fp16" in tags:
            scales = {op.name: float(np.max(op.scale.val)) for op in prog.main.ops if op.op_type == "dequantize"}
            assert scales["dx"] / scales["dy"] > 65504, seed
        if "data:range_ends" in tags:
            data = next(op.attrs["val"] for op in prog.main.ops if op.outputs[0].name == "data")
            assert data.reshape(-1)[0] != data.reshape(-1)[-1] and data.min() < data.max()


def test_k_values_has_exactly_k_distinct_values():
    for seed in range(12):
        c = RngChooser(seed)
        w = weight_array(c, (16, 8), c.pick(("fp16", "fp32")), "k_values")
        k = next(int(t.split(":")[1]) for t in c.tags if t.startswith("k_values:"))
        assert len(np.unique(w)) == k


def _case(case, dtype="fp32", shape=(8, 6), seed=0):
    return weight_array(RngChooser(seed), shape, dtype, case)


def test_the_hard_cases_hold_what_they_promise():
    for seed in range(10):
        z = _case("zero_channel", seed=seed)
        assert np.any(np.all(z == 0, axis=1)), "no all-zero channel"
        c = _case("constant_groups", seed=seed)
        assert np.any(np.ptp(c, axis=1) == 0), "no constant channel"
        assert len(np.unique(_case("few_values", seed=seed))) < 16, "as many values as a 4-bit LUT"
        e = _case("fp16_extremes", "fp16", seed=seed)
        assert np.any(np.abs(e) == np.float16(65504)) or np.any((e != 0) & (np.abs(e) < 2 ** -14))
        assert np.all(np.isfinite(e))
        t = _case("ties", seed=seed)
        assert len(np.unique(np.abs(t))) < t.size, "no tied magnitudes"


@FAST
@given(weight_arrays())
def test_drawn_weights_are_finite_read_only_floats(w):
    assert w.dtype in (np.float16, np.float32) and not w.flags.writeable
    assert np.all(np.isfinite(w))
    assert set(WEIGHT_CASES) >= {"zero_channel", "few_values", "fp16_extremes"}
