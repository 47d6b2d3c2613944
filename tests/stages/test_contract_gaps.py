"""The checks stages.contracts gained against wrong stages the earlier contracts let through:
hand-made right and wrong cases for each, the wrong ones named by weight (or site) and reason."""
import importlib

import numpy as np
import pytest

import stages
from ir.builder import TensorSpec, program
from pipeline import EquivalenceError, Pipeline
from stages.contracts import affine_tensor_problems, check_report, no_new_bad_scales
from stages.contracts.palettize import _lut_row_problems
from stages.contracts.selection import false_claims
from stages.contracts.sparsify import _nm_problems

F32, F16 = np.float32, np.float16


# ---- n:m ----------------------------------------------------------------------------------------

def test_nm_is_exact_and_along_the_given_axis():
    w = np.array([[4.0, 1.0, 3.0, 2.0, 5.0, 6.0, 0.5, 7.0]], F32)
    right = w.copy()
    right[0, [1, 3, 4, 6]] = 0  # the 2 smallest of [4, 1, 3, 2] and of [5, 6, 0.5, 7]
    assert _nm_problems(w, right == 0, (2, 4), "weight 'w'", axes=(0, 1)) == []
    three = right.copy()
    three[0, 2] = 0
    found = _nm_problems(w, three == 0, (2, 4), "weight 'w'", axes=(0, 1))
    assert found and "weight 'w': along axis 1" in found[0] and "3 instead of 2 (2:4)" in found[0]
    swapped = w.copy()
    swapped[0, [0, 3, 4, 6]] = 0  # two zeros per run, but 4 zeroed while 3 is kept
    found = _nm_problems(w, swapped == 0, (2, 4), "weight 'w'", axes=(0, 1))
    assert found and "zero a magnitude 4 above a kept one 1" in found[0]


def test_nm_tail_and_own_zeros():
    w = np.array([[0.0, 0.0, 0.0, 9.0, 1.0, 2.0]], F32)  # runs [0, 0, 0, 9] and the tail [1, 2]
    # 3 own zeros stay (not 2), the tail of 2 counts as padded by 2: max(0, 2 - 2) = 0 zeros
    assert _nm_problems(w, w == 0, (2, 4), "weight 'w'", axes=(0, 1)) == []
    z = w == 0
    z[0, 4] = True
    assert "1 instead of 0" in _nm_problems(w, z, (2, 4), "weight 'w'", axes=(0, 1))[0]


# ---- affine ------------------------------------------------------------------------------------

def test_a_zero_scale_fails_even_on_an_all_zero_block():
    w = np.zeros((2, 4), F32)
    codes = np.zeros((2, 4), np.int8)
    assert affine_tensor_problems(w, codes, np.ones((2, 1), F32), None, "int8", "linear_symmetric", "weight 'w'") == []
    found = affine_tensor_problems(w, codes, np.zeros((2, 1), F32), None, "int8", "linear_symmetric", "weight 'w'")
    assert found == ["weight 'w': 2 scale(s) not finite and > 0, e.g. np.float32(0.0) (an all-zero block still "
                     "needs a usable scale)"]
    assert "not finite" in affine_tensor_problems(w, codes, np.full((2, 1), np.inf, F32), None, "int8",
                                                  "linear_symmetric", "w")[0]


def test_a_range_end_past_the_last_code_fails():
    """linear uint8 over [-1, 1]: the zero point 127.5 rounds to 128, so 1 sits at code 255.5;
    an fp16 scale rounded down pushes it further, and clipping to 255 costs more than half a step."""
    w = np.array([[-1.0, 1.0, 0.25, -0.5]], F16)
    exact = 2.0 / 255
    down = np.float16(exact) if float(np.float16(exact)) <= exact else np.nextafter(np.float16(exact), F16(0))
    up = np.nextafter(down, F16(1))

    def codes(s):
        return np.clip(np.rint(w.astype(np.float64) / float(s)) + 128, 0, 255).astype(np.uint8)
    zp = np.full((1, 1), 128, np.uint8)
    assert affine_tensor_problems(w, codes(up), np.full((1, 1), up), zp, "uint8", "linear", "weight 'w'") == []
    found = affine_tensor_problems(w, codes(down), np.full((1, 1), down), zp, "uint8", "linear", "weight 'w'")
    assert len(found) == 1 and found[0].startswith("weight 'w': 1 value(s) farther than scale/2")
    assert "codes [0, 255]" in found[0]


# ---- palettize: k-means with no more distinct values than entries ------------------------------

def test_kmeans_keeps_every_value_when_there_are_no_more_than_entries():
    vals = np.array([0.1, 0.2, 0.2, 0.3, 0.7], np.float64).astype(F32).astype(np.float64)
    row = np.unique(vals)
    assert _lut_row_problems(vals, np.append(row, row[-1]), "kmeans", F32, "weight 'w' LUT 0") == []
    off = row.copy()
    off[1] = np.nextafter(F32(off[1]), F32(1))  # a mean from prefix sums, one ulp off
    found = _lut_row_problems(vals, off, "kmeans", F32, "weight 'w' LUT 0")
    assert found and found[0].startswith("weight 'w' LUT 0: 4 distinct value(s) and 4 entries, but 1 value(s) "
                                         "are no entry")


# ---- selection and skip reasons -----------------------------------------------------------------

def _two_weights():
    a = np.ones((32, 64), F32)  # exactly 2048 elements: below the rule (more than 2048)
    b = np.ones((48, 64), F32)

    @program(inputs={"x": TensorSpec((2, 64), "fp32")})
    def net(b_, x):
        return b_.add(x=b_.linear(x=x, weight=b_.const(a, name="a"), name="ya"),
                      y=b_.linear(x=b_.linear(x=x, weight=b_.const(b, name="b"), name="yb"),
                                  weight=b_.const(np.ones((32, 48), F32), name="c"), name="yc"))
    return net


def test_the_size_rule_is_checked_both_ways():
    prog = _two_weights()
    st = stages.get("palettize_weights").bind(nbits=4)
    good = {"weights": {"a": {"skipped": "below the size threshold: 2048 elements, compressed when more than 2048"},
                        "b": {"skipped": "not smaller once compressed: kmeans takes 3100 bytes against the weight's 3072"},
                        "c": {"skipped": "below the size threshold: 1536 elements, compressed when more than 2048"}}}
    assert [v for v in check_report(prog, prog, st, good) if v.promise == "selection"] == []
    wrong = {"weights": {**good["weights"], "a": {"mse": 0.0},
                         "b": {"skipped": "below the size threshold: 3072 elements, compressed when more than 2048"}}}
    found = {v.where: v.detail for v in check_report(prog, prog, st, wrong) if v.promise == "selection"}
    assert found["weight 'a'"] == ("compressed, but it has 2048 elements: without an op_selector only weights of "
                                   "more than 2048 are")
    assert found["weight 'b'"] == "skipped as below the size threshold, but it has 3072 elements (more than 2048)"
    # an op_selector decides on its own
    chosen = stages.get("palettize_weights").bind(nbits=4, op_selector=lambda view: True)
    assert [v for v in check_report(prog, prog, chosen, wrong) if v.promise == "selection"
            and "elements" in v.detail] == []


def test_skip_reasons_must_agree_with_their_numbers():
    assert false_claims("w: 48 channels not divisible by group_size 16") == ["48 is divisible by 16"]
    assert false_claims("w: 20 channels not divisible by group_size 16") == []
    assert false_claims("m=4 > half the axis length 8") == ["m=4 is not more than half of 8"]
    assert false_claims("m=4 > half the axis length 6") == []
    assert false_claims("per_grouped_channel: no group size <= 16 divides the 48 channels and is a multiple of "
                        "cluster_dim 2") == ["a group size of 16 divides 48 and is a multiple of 2"]
    assert false_claims("not smaller once compressed: int8 takes 100 bytes against the weight's 400") == \
        ["100 bytes are fewer than 400"]
    assert false_claims("below the size threshold: 12 elements, compressed when more than 2048") == []


def _sparse_weight_program():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((48, 64)).astype(F32)
    w[np.abs(w) < 0.7] = 0
    mask = w != 0

    @program(inputs={"x": TensorSpec((2, 64), "fp32")}, opset="iOS18")
    def net(b, x):
        nz = b.const(w[mask], name="w_nonzero")
        m = b.const(mask.astype(np.uint8), dtype="uint1", name="w_mask")
        return b.linear(x=x, weight=b.constexpr_sparse_to_dense(nonzero_data=nz, mask=m, name="w"), name="y")
    return net


def test_a_joint_grouped_palettization_that_always_refuses_fails(monkeypatch):
    pal = importlib.import_module("stages.compression.palettize")
    spec = 'palettize_weights{granularity="per_grouped_channel",group_size=16,nbits=4}'
    trace = Pipeline.from_spec(spec).run(_sparse_weight_program(), verify="each")
    assert trace.steps[0].changed and trace.steps[0].verification.passed

    def refuses(view, nz, mask, params, axis):
        raise pal.NotCompressible(f"{view.name}: {mask.shape[axis]} channels not divisible by group_size "
                                  f"{params['group_size']}")
    monkeypatch.setattr(pal, "_sparse_luts", refuses)
    with pytest.raises(EquivalenceError) as e:
        Pipeline.from_spec(spec).run(_sparse_weight_program(), verify="each")
    assert "weight 'w': skipped because '48 channels not divisible by group_size 16', which does not hold: " \
           "48 is divisible by 16" in str(e.value)


# ---- scales a step introduces --------------------------------------------------------------------

def _dequantized(scale):
    @program(inputs={"x": TensorSpec((4,), "int8")})
    def net(b, x):
        return b.dequantize(input=x, scale=np.array(scale, F16), name="y")
    return net


def test_a_step_may_not_introduce_an_infinite_or_zero_scale():
    good, inf, nan = _dequantized(0.5), _dequantized(np.inf), _dequantized(np.nan)
    assert no_new_bad_scales(good, good) == []
    assert no_new_bad_scales(inf, good) == ["main: dequantize 'y' has scale inf"]  # an fp16 overflow
    assert no_new_bad_scales(nan, good) == ["main: dequantize 'y' has scale nan"]
    assert no_new_bad_scales(inf, inf) == []  # the input's own: not the step's
