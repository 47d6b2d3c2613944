"""The compiled k-means (kmeans1d_jit) against its numpy twin and against the full DP."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from stages.compression.numeric import kmeans1d as km
from stages.compression.numeric import kmeans1d_jit
from tests.near_degenerate import near_degenerate_problem

pytestmark = pytest.mark.skipif(not kmeans1d_jit.AVAILABLE, reason="numba not installed (the [fast] extra)")


@st.composite
def problems(draw):
    """(segments, k): 1-5 segments of more than k distinct values each: continuous values,
    coarse quarter-integer grids (many exact cost ties), heavy tails."""
    k = draw(st.integers(2, 8))
    parts, weights = [], []
    for _ in range(draw(st.integers(1, 5))):
        rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
        kind = draw(st.sampled_from(["normal", "grid", "tails"]))
        v = np.zeros(0)
        while len(v) <= k:
            n = draw(st.integers(k + 1, 60))
            if kind == "normal":
                v = rng.standard_normal(n) * draw(st.sampled_from([1e-3, 1.0, 50.0])) + rng.uniform(-1, 1)
            elif kind == "grid":
                v = rng.integers(-6, 7, n) * 0.25
            else:
                v = rng.standard_t(1.5, n)
            v = np.unique(v)
        parts.append(v)
        weights.append(rng.integers(1, 30, len(v)).astype(np.float64))
    offsets = np.concatenate(([0], np.cumsum([len(v) for v in parts])))
    return km.Segments(np.concatenate(parts), np.concatenate(weights), offsets), k


@settings(max_examples=150, deadline=None)
@given(problem=problems(), steps=st.sampled_from([0, 1, 3, km.BRACKET_STEPS]))
def test_the_compiled_engine_gives_the_numpy_engines_boundaries(problem, steps):
    # Same arithmetic in the same order: not only the same cost, the same partition, ties included.
    seg, k = problem
    p = km.prefix_sums(seg)
    jit = km.bracketed_boundaries(seg, p, k, steps, engine="jit")
    ref = km.bracketed_boundaries(seg, p, k, steps, engine="numpy")
    np.testing.assert_array_equal(jit, ref)


@settings(max_examples=100, deadline=None)
@given(problem=problems())
def test_the_compiled_engine_reaches_the_full_dps_optimum(problem):
    seg, k = problem
    p = km.prefix_sums(seg)
    b = km.bracketed_boundaries(seg, p, k, engine="jit")
    assert np.all(np.diff(b, axis=1) > 0)
    assert np.all(b[:, 0] == seg.offsets[:-1]) and np.all(b[:, -1] == seg.offsets[1:])
    full = km.exact_boundaries(seg, p, k)
    np.testing.assert_allclose(km.cost(p, b), km.cost(p, full), rtol=1e-12, atol=1e-300)


def test_the_compiled_engine_is_exact_on_the_group_the_banded_dp_misses():
    seg, p = near_degenerate_problem()  # see tests/near_degenerate.py
    optimum = km.cost(p, km.exact_boundaries(seg, p, 16))[0]
    banded = km.cost(p, km.banded_exact_boundaries(seg, p, 16))[0]
    jit = km.cost(p, km.bracketed_boundaries(seg, p, 16, engine="jit"))[0]
    assert banded > optimum * (1 + 5e-4)  # the case is a hard one
    assert jit == pytest.approx(optimum, rel=1e-12)


def test_weightpress_jit_0_switches_to_numpy(monkeypatch):
    seg = km.Segments(np.arange(10.0), np.ones(10), np.array([0, 10]))
    p = km.prefix_sums(seg)
    calls = []
    real = kmeans1d_jit.bracketed_boundaries
    monkeypatch.setattr(kmeans1d_jit, "bracketed_boundaries", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setenv("WEIGHTPRESS_JIT", "0")
    off = km.bracketed_boundaries(seg, p, 3)
    assert calls == []
    monkeypatch.setenv("WEIGHTPRESS_JIT", "1")
    on = km.bracketed_boundaries(seg, p, 3)
    assert calls == [1]
    np.testing.assert_array_equal(on, off)
    assert km.cost(p, on)[0] == pytest.approx(9.0)  # 0..9 in runs of 3, 3 and 4 (in some order): 2 + 2 + 5


@settings(max_examples=150, deadline=None)
@given(problem=problems(), steps=st.sampled_from([0, 1, 3, km.BRACKET_STEPS]))
def test_the_compiled_climbs_give_the_numpy_bracket(problem, steps):
    # The bands themselves, not just the optimum inside them: a tie sent the wrong way at a
    # midpoint moves a band edge without (usually) changing the answer.
    seg, k = problem
    p = km.prefix_sums(seg)
    lo, hi = km.lloyd_bracket(seg, p, k, steps)
    for g in range(len(seg.offsets) - 1):
        for up, expected in ((True, lo[g]), (False, hi[g])):
            b = np.empty(k + 1, np.int64)
            kmeans1d_jit._climb(seg.values, p.w, p.s, p.shift[g], p.scale[g], seg.offsets[g],
                                seg.offsets[g + 1], k, up, steps, b)
            np.testing.assert_array_equal(b, expected)


def test_the_compiled_engine_survives_threads_and_fork():
    # numba's own parallel layers abort a process that forks after using them (OpenMP) or that
    # calls them from two threads at once (workqueue); the engine uses neither.
    import multiprocessing
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(3)
    v = np.unique(rng.standard_normal(3000))
    seg = km.Segments(np.concatenate([v, v + 1]), np.ones(2 * len(v)), np.array([0, len(v), 2 * len(v)]))
    p = km.prefix_sums(seg)
    expected = km.bracketed_boundaries(seg, p, 8, engine="numpy")
    with ThreadPoolExecutor(4) as pool:
        for got in pool.map(lambda _: km.bracketed_boundaries(seg, p, 8, engine="jit"), range(8)):
            np.testing.assert_array_equal(got, expected)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        for got in pool.map(_solve_in_child, [(seg, p)] * 2):
            np.testing.assert_array_equal(got, expected)


def _solve_in_child(args):
    seg, p = args
    return km.bracketed_boundaries(seg, p, 8, engine="jit")


def test_read_only_or_narrow_inputs_reuse_the_one_compiled_version():
    # numba compiles a version per argument type (seconds each) and read-only arrays are a type
    # of their own; the IR's arrays are read-only, offsets may come as int32.
    rng = np.random.default_rng(5)
    v = np.unique(rng.standard_normal(500))
    seg = km.Segments(v, np.ones(len(v)), np.array([0, 200, len(v)], np.int32))
    p = km.prefix_sums(seg)
    expected = km.bracketed_boundaries(seg, p, 4, engine="numpy")
    frozen = km.Segments(*(x.copy() for x in seg))
    for x in (*frozen, *p):
        x.flags.writeable = False
    np.testing.assert_array_equal(km.bracketed_boundaries(frozen, p, 4, engine="jit"), expected)
    np.testing.assert_array_equal(km.bracketed_boundaries(seg, p, np.int64(4), engine="jit"), expected)
    assert len(kmeans1d_jit._solve_range.signatures) == 1
