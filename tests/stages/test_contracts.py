"""stages.contracts: the contract kinds, every stage's declaration, and the weight bounds on
hand-made cases (right and wrong)."""
import numpy as np
import pytest

import stages
from stages.contracts import (Violation, affine_tensor_problems, check_report, code_range, composed, contract_of,
                              effective, exact, lossy, sparsify_bound, within, WeightCase, palettize_bound)

F32 = np.float32


def test_every_registered_stage_declares_a_contract():
    missing = [n for n in stages.names() if stages.get(n).contract is None and not n.startswith("test_")]
    assert missing == []
    assert stages.get("affine_quantize_weights").bind(dtype="int4").contract.kind == "lossy"  # kept by bind
    assert stages.get("dead_code_elimination").bind().contract == exact()


def test_composition_adds_steps_keeps_the_largest_rtol_and_lossy_wins():
    assert contract_of(stages.get("canonicalize_quantization")) == within(2, rtol=1e-5, eps=64)
    assert effective(composed("dead_code_elimination", "const_deduplication")).kind == "exact"
    assert effective(composed("dead_code_elimination", "sparsify_weights")).kind == "lossy"
    with pytest.raises(ValueError):
        within(-1)


def test_code_ranges_are_the_seeds():
    assert code_range("int8", "linear_symmetric") == (-127, 127)
    assert code_range("uint8", "linear_symmetric") == (0, 254)
    assert code_range("int4", "linear_symmetric") == (-7, 7)
    assert code_range("uint4", "linear") == (0, 15)


def _symmetric(w, lo=-127, hi=127):
    r = np.abs(w).max(axis=1, keepdims=True)
    scale = (2 * r / (hi - lo)).astype(F32)
    codes = np.clip(np.rint(w / scale), lo, hi).astype(np.int8)
    return codes, scale


def test_affine_bound_by_hand():
    w = np.array([[1.0, -0.5, 0.25, 0.0], [-2.0, 2.0, 1.0, 0.5]], F32)
    codes, scale = _symmetric(w)
    assert affine_tensor_problems(w, codes, scale, None, "int8", "linear_symmetric", "w") == []
    # the range [-128, 127] with scale 2R / 255: a -128 code, and scales that are not R / 127
    codes2, scale2 = _symmetric(w, -128, 127)
    codes2[1, 0] = -128  # -2 / (4 / 255) = -127.5 (up to the fp32 rounding of the scale)
    found = affine_tensor_problems(w, codes2, scale2, None, "int8", "linear_symmetric", "w")
    assert any("outside [-127, 127]" in p for p in found) and any("block scale(s)" in p for p in found)
    # one code off: that value is a whole step from its reconstruction
    bad = codes.copy()
    bad[0, 2] += 1  # 0.25 * 127 = 31.75: 32, not 33
    assert any("farther than scale/2" in p for p in
               affine_tensor_problems(w, bad, scale, None, "int8", "linear_symmetric", "w"))
    # a zero point that is not the mode's
    assert any("zero point" in p for p in affine_tensor_problems(
        w, codes, scale, np.ones_like(codes[:, :1]), "int8", "linear_symmetric", "w"))


def _case(original, decoded, params, stats, after=None, values=None):
    return WeightCase("w", "main", original, decoded, "w", params, stats, after, values or {}, {}, None)


def test_sparsify_bound_by_hand():
    w = np.array([0.5, -0.001, 0.001, 0.0, 0.002, -3.0], F32)
    good = np.where(np.abs(w) <= F32(0.001), 0, w).astype(F32)
    params = {"mode": "threshold_based", "threshold": 0.001}
    assert sparsify_bound(_case(w, good, params, {"mode": "threshold_based"})) == []
    strict = np.where(np.abs(w) < F32(0.001), 0, w).astype(F32)
    assert "2 value(s) zeroed or kept" in sparsify_bound(_case(w, strict, params, {"mode": "threshold_based"}))[0]
    moved = good.copy()
    moved[0] = F32(0.5000001)
    assert "kept value(s) changed" in sparsify_bound(_case(w, moved, params, {"mode": "threshold_based"}))[0]
    pct = {"mode": "percentile_based", "target_percentile": 0.5, "target_sparsity": None}
    half = np.array([0.5, 0, 0, 0, 0.002, -3.0], F32)  # floor(6 * 0.5) = 3 smallest magnitudes
    assert sparsify_bound(_case(w, half, pct, {"mode": "percentile_based"})) == []
    four = np.array([0.5, 0, 0, 0, 0, -3.0], F32)
    assert "4 zeros, promised floor(6 * 0.5) = 3" in sparsify_bound(_case(w, four, pct, {"mode": "percentile_based"}))[0]


def test_palettize_bound_by_hand():
    from ir.builder import TensorSpec, program
    from ir import oracle

    w = np.array([[0.0, 0.1, 0.9, 1.0], [0.2, 0.8, 0.0, 1.0]], F32)

    def case(lut, idx, mode):
        @program(inputs={"x": TensorSpec((1, 4), "fp32")})
        def net(b, x):
            dense = b.constexpr_lut_to_dense(indices=b.const(idx, dtype="uint1", name="i"),
                                             lut=b.const(lut, name="l"), name="w")
            return b.linear(x=x, weight=dense)
        values = oracle.const_values(net).values
        return _case(w, values["w"], {"mode": mode}, {"kind": "dense"}, net.main, values)

    idx = (w > 0.5).astype(np.uint8)
    means = np.array([[[[0.075], [0.925]]]], F32)  # the means of {0, .1, .2, 0} and {.9, 1, .8, 1}
    assert palettize_bound(case(means, idx, "kmeans")) == []
    swapped = (w <= 0.5).astype(np.uint8)
    assert "do not read their nearest" in palettize_bound(case(means, swapped, "kmeans"))[0]
    assert any("not the mean" in p for p in palettize_bound(case(np.array([[[[0.0], [1.0]]]], F32), idx, "kmeans")))
    assert palettize_bound(case(np.array([[[[0.0], [1.0]]]], F32), idx, "uniform")) == []
    found = palettize_bound(case(np.array([[[[0.0], [0.5]]]], F32), (w > 0.25).astype(np.uint8), "uniform"))
    assert any("uniform entry 1" in p for p in found)


class _Fake:
    name = "sparsify_weights"


def test_report_checks():
    from tests.pipeline import contract_programs as cp

    prog = cp.mlp()
    found = check_report(prog, prog, _Fake(), {"weights": {"w1": {"mode": "x"}}})
    assert any("reports 1 weight(s) compressed" in str(v) for v in found)
    assert any("'w2'" in str(v) and "neither compressed nor skipped" in str(v) for v in found)
    assert check_report(prog, prog, _Fake(), {"weights": {"w1": {"skipped": "r"}, "w2": {"skipped": "r"}}}) == []
    counts = {"patterns": {"p": {"matched": 1, "rewritten": 2}}}
    assert "rewritten 2 > matched 1" in str(check_report(prog, prog, _Fake(), counts)[0])
    assert "reports 1 rewrite" in str(check_report(prog, prog, _Fake(), {"patterns": {"p": {"matched": 1,
                                                                                              "rewritten": 1}}})[-1])
    required = check_report(prog, prog, _Fake(), {"patterns": {"p": {"matched": 0, "rewritten": 0}}},
                            require_change=True)
    assert isinstance(required[0], Violation) and "p matched 0 rewritten 0" in required[0].detail


def test_kmeans_optimum_by_hand():
    from stages.contracts import _optimum_problems

    v = np.array([0, 0, 1, 1, 10, 10, 11, 11], np.float64)
    # the optimum of 2 entries: {0, 1} -> 0.5 and {10, 11} -> 10.5, sum of squares 8 * 0.25 = 2
    assert _optimum_problems(v, np.array([0.5, 10.5]), np.float32, "g") == []
    # entries 0 and 8 are a Lloyd fixed point of nothing: 2 * 1 + 2 * 4 + 2 * 9 = 28 > 2
    assert "error 28 is above the optimum 2" in _optimum_problems(v, np.array([0.0, 8.0]), np.float32, "g")[0]
