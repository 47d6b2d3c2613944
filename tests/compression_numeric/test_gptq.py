"""GPTQ (numeric/gptq.py) against hand-computed cases, a direct least-squares reference and
brute force on tiny problems."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from stages.compression.numeric.gptq import (affine_quantizer, gptq, inverse_cholesky_upper, lut_quantizer,
                                             output_loss, prepared_hessian)


def _unit_grid(rows, cols, lo=-7, hi=7):
    """scale 1, zero point 0: codes are the reconstruction."""
    return affine_quantizer(np.ones((rows, cols)), np.zeros((rows, cols)), lo, hi, np.float64)


def test_hand_example_gptq_finds_the_optimum_rounding_misses():
    # w = [0.4, 0.4] on the integer grid, inputs strongly correlated (H = [[1, .95], [.95, 1]]).
    # Rounding gives [0, 0]: loss .16 + .16 + 2 * .95 * .16 = 0.624.
    # GPTQ rounds w0 to 0 (error .4), moves w1 to .4 + .95 * .4 = .78, rounds it to 1:
    # d = [.4, -.6], loss .16 + .36 - 2 * .95 * .24 = 0.064, the optimum over all code pairs.
    w = np.array([[0.4, 0.4]])
    h = np.array([[1.0, 0.95], [0.95, 1.0]])
    r = gptq(w, h, _unit_grid(1, 2), damp=0.0, act_order=False)
    assert r.codes.tolist() == [[0, 1]]
    assert r.loss == pytest.approx(0.064)
    assert output_loss(w, np.zeros_like(w), h) == pytest.approx(0.624)
    best = min(output_loss(w, np.array([c], float), h) for c in itertools.product(range(-2, 3), repeat=2))
    assert r.loss == pytest.approx(best)


def test_diagonal_hessian_is_plain_rounding():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 9)) * 3
    h = np.diag(rng.uniform(0.5, 2.0, 9))
    r = gptq(w, h, _unit_grid(5, 9), damp=0.0)
    assert np.array_equal(r.codes, np.clip(np.rint(w), -7, 7))


def _sequential_least_squares(w, h, lo=-7, hi=7):
    """The definition GPTQ implements, solved directly: for j = 0, 1, ...: round column j of the
    current weight, then set the columns after j to the least-squares optimum given the codes
    so far: v_F = w_F + H_FF^-1 H_FQ (w_Q - q_Q), from the original w every time."""
    rows, cols = w.shape
    q = np.zeros_like(w)
    v = w.copy()
    for j in range(cols):
        q[:, j] = np.clip(np.rint(v[:, j]), lo, hi)
        Q, F = np.arange(j + 1), np.arange(j + 1, cols)
        if len(F):
            d = w[:, Q] - q[:, Q]
            v[:, F] = w[:, F] + np.linalg.solve(h[np.ix_(F, F)], h[np.ix_(F, Q)] @ d.T).T
    return q


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("block", [1, 2, 5])
def test_matches_the_direct_least_squares_reference(seed, block):
    rng = np.random.default_rng(seed)
    rows, cols = 3, 5
    x = rng.normal(size=(40, cols)) @ rng.normal(size=(cols, cols))  # correlated inputs
    h = x.T @ x / 40
    w = rng.normal(size=(rows, cols)) * 2.5
    r = gptq(w, h, _unit_grid(rows, cols), block=block, damp=0.0, act_order=False)
    assert np.array_equal(r.codes, _sequential_least_squares(w, h))


def test_one_row_three_inputs_against_brute_force():
    # the last column is chosen optimally given the others (brute force over its code), and the
    # whole result is never worse than rounding on these correlated problems
    rng = np.random.default_rng(3)
    for _ in range(20):
        x = rng.normal(size=(30, 3)) @ np.array([[1, .8, .3], [0, .6, .5], [0, 0, .4]])
        h = x.T @ x / 30
        w = rng.uniform(-3, 3, size=(1, 3))
        r = gptq(w, h, _unit_grid(1, 3), damp=0.0, act_order=False)
        last = min(range(-7, 8), key=lambda c: output_loss(w, np.array([[*r.codes[0, :2], c]], float), h))
        assert r.codes[0, 2] == last
        assert r.loss <= output_loss(w, np.rint(w), h) + 1e-12
        best = min(output_loss(w, np.array([c], float), h) for c in itertools.product(range(-4, 5), repeat=3))
        assert r.loss >= best - 1e-12


def test_act_order_permutes_but_returns_original_column_order():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 6)) * np.array([0.1, 5, 1, 3, 0.5, 2])
    h = x.T @ x / 50
    w = rng.normal(size=(4, 6)) * 3
    seen = []

    def grid(j, col):
        seen.append(j)
        return np.clip(np.rint(col), -7, 7), np.clip(np.rint(col), -7, 7)

    r = gptq(w, h, grid, damp=0.0, act_order=True)
    assert seen == list(np.argsort(-np.diagonal(h), kind="stable"))
    perm = np.array(seen)
    ref = _sequential_least_squares(w[:, perm], h[np.ix_(perm, perm)])
    assert np.array_equal(r.codes[:, perm], ref)


def test_affine_grid_codes_stay_in_range_and_reconstruct_on_the_grid():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(4, 8))
    h = np.cov(rng.normal(size=(8, 64))) + 0.1 * np.eye(8)
    scale = np.full((4, 8), 0.05)
    zp = np.full((4, 8), 3.0)
    r = gptq(w, h, affine_quantizer(scale, zp, 0, 15, np.float32))
    assert r.codes.min() >= 0 and r.codes.max() <= 15
    assert np.allclose(r.reconstruction, (r.codes - 3) * 0.05, rtol=1e-6)


def test_dead_channels_and_damping():
    h = np.diag([2.0, 0.0, 4.0])
    p = prepared_hessian(h, 0.1)
    assert np.allclose(np.diagonal(p), [2 + 0.7 / 3, 1 + 0.7 / 3, 4 + 0.7 / 3])  # mean diag 7/3 after the fix
    u = inverse_cholesky_upper(p)
    assert np.allclose(u.T @ u, np.linalg.inv(p))
    assert np.allclose(u, np.triu(u))
    assert h[1, 1] == 0.0  # the input is untouched


def test_lut_quantizer_is_the_nearest_entry_of_each_rows_lut():
    rng = np.random.default_rng(4)
    luts = np.sort(rng.normal(size=(2, 4)), axis=1)
    row_lut = np.array([0, 1, 1])
    q = lut_quantizer(luts, row_lut)
    col = rng.normal(size=3) * 2
    recon, idx = q(0, col)
    for r in range(3):
        assert idx[r] == np.argmin(np.abs(col[r] - luts[row_lut[r]]))
        assert recon[r] == luts[row_lut[r], idx[r]]


def test_deterministic():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(64, 16))
    h = x.T @ x / 64
    w = rng.normal(size=(8, 16))
    a = gptq(w, h, _unit_grid(8, 16), block=4)
    b = gptq(w, h, _unit_grid(8, 16), block=4)
    assert np.array_equal(a.codes, b.codes) and a.loss == b.loss


# ---- the compiled column loop (gptq_jit) gives the numpy loop's answer, code for code ----------

def _jit_or_skip():
    from stages.compression.numeric import gptq_jit

    if not gptq_jit.AVAILABLE:
        pytest.skip("numba is not installed")


@pytest.mark.parametrize("rows, cols, block, act_order", [(1, 1, 128, True), (5, 9, 4, False), (24, 70, 16, True),
                                                          (40, 33, 128, True)])
def test_compiled_block_loop_equals_numpy_affine(rows, cols, block, act_order):
    _jit_or_skip()
    rng = np.random.default_rng(rows * 100 + cols)
    w = rng.normal(size=(rows, cols))
    x = rng.normal(size=(4 * cols + 3, cols)) @ (rng.normal(size=(cols, cols)) * 0.4 + np.eye(cols))
    h = x.T @ x / len(x)
    # a per-block-of-8 grid with an offset, codes limited per element as the int4 edge does
    scale = np.repeat(rng.uniform(0.05, 0.3, size=(rows, -(-cols // 8))), 8, axis=1)[:, :cols]
    zero = np.repeat(rng.integers(-2, 3, size=(rows, -(-cols // 8))), 8, axis=1)[:, :cols].astype(float)
    lo = np.full((rows, cols), -8.0)
    lo[:, ::3] = -5.0
    q = affine_quantizer(scale, zero, lo, 7, np.float32)
    a = gptq(w, h, q, block=block, act_order=act_order, engine="numpy")
    b = gptq(w, h, q, block=block, act_order=act_order, engine="jit")
    assert np.array_equal(a.codes, b.codes)
    assert np.array_equal(a.reconstruction, b.reconstruction)
    assert a.loss == b.loss


def test_compiled_block_loop_equals_numpy_lut():
    _jit_or_skip()
    rng = np.random.default_rng(7)
    w = rng.normal(size=(12, 50))
    x = rng.normal(size=(300, 50)) @ (rng.normal(size=(50, 50)) * 0.4 + np.eye(50))
    h = x.T @ x / 300
    luts = rng.normal(size=(3, 8)).astype(np.float32)  # unsorted on purpose: the quantizer sorts
    luts[1, 5] = luts[1, 2]  # a repeated entry: ties go to the lower index in both loops
    q = lut_quantizer(luts, np.arange(12) // 4)
    a = gptq(w, h, q, block=16, engine="numpy")
    b = gptq(w, h, q, block=16, engine="jit")
    assert np.array_equal(a.codes, b.codes) and np.array_equal(a.reconstruction, b.reconstruction)


def test_engine_jit_without_a_compiled_form_is_refused():
    # a float64 reconstruction has no compiled form (the kernel reconstructs in fp32)
    with pytest.raises(ValueError, match="engine='jit'"):
        gptq(np.ones((2, 2)), np.eye(2), _unit_grid(2, 2), engine="jit")


def test_the_remembered_factorisation_is_keyed_by_h_damp_and_order():
    """factor() remembers by content: the same H gives the same arrays back; another damp, another
    order or another H must not get a remembered factor (each equals a fresh computation)."""
    from stages.compression.numeric import gptq as g

    rng = np.random.default_rng(11)
    x = rng.normal(size=(40, 6)) * np.linspace(0.5, 3, 6)
    h = x.T @ x / 40

    def fresh(h_, damp, act_order):
        order = np.argsort(-np.diagonal(h_), kind="stable") if act_order else np.arange(6)
        return order, inverse_cholesky_upper(prepared_hessian(h_, damp)[np.ix_(order, order)])

    first = g.factor(h, 0.01, True)
    assert g.factor(h.copy(), 0.01, True)[1] is first[1]  # remembered by content
    for h_, damp, act in ((h, 0.5, True), (h, 0.01, False), (h * 2, 0.01, True)):
        order, u = g.factor(h_, damp, act)
        want_order, want_u = fresh(h_, damp, act)
        np.testing.assert_array_equal(order, want_order)
        np.testing.assert_allclose(u, want_u, rtol=1e-12)
        assert not u.flags.writeable
