"""The stages' error figures (one float32 pass, stages/compression/figures.py) against a float64
reference, the bit-level fp16 helpers they rest on, and the per-weight progress bar."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ir.ops.quant import blockwise_shift_scale
from stages.base import StageContext
from stages.compression import affine_quantize_weights
from stages.compression.affine import dequantized_figures
from stages.compression.figures import error_figures, float16_to_float32, round_to_float16
from stages.compression.numeric.affine import affine_quantize
from stages.compression.numeric.metrics import error_figures as reference_figures
from tests.stages.compression.helpers import assert_decompress_exact, linear_program

RNG = np.random.default_rng(7)
ALL_FP16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)

# the documented precision (figures.py): a wrong formula (mean of |d|, sum instead of mean,
# a chunk counted twice or skipped, 20 log10) misses these by orders of magnitude
SNR_DB_ABS, MAX_REL, MSE_REL = 1e-5, 6e-8, 2e-6


def assert_close_to_reference(got: dict, w, r):
    ref = reference_figures(w, r)  # float64 throughout
    if math.isinf(ref.snr_db):
        assert got["snr_db"] == ref.snr_db
    else:
        assert got["snr_db"] == pytest.approx(ref.snr_db, abs=SNR_DB_ABS)
    assert got["max_abs_error"] == pytest.approx(ref.max_abs_error, rel=MAX_REL, abs=0)
    assert got["mse"] == pytest.approx(ref.mse, rel=MSE_REL, abs=0)


# ---- bit-level fp16 helpers -----------------------------------------------------------------

def test_float16_to_float32_is_numpys_cast_for_every_fp16_value():
    got = float16_to_float32(ALL_FP16, np.empty(ALL_FP16.size, np.int32))
    ref = ALL_FP16.astype(np.float32)
    finite = np.isfinite(ref)
    assert np.array_equal(got[finite].view(np.uint32), ref[finite].view(np.uint32))  # -0 and subnormals too
    assert np.array_equal(np.isnan(got), np.isnan(ref)) and np.array_equal(got[np.isinf(ref)], ref[np.isinf(ref)])


def test_float16_to_float32_of_finite_values_needs_no_fallback():
    x = np.array([-65504.0, -1.5, -6.0e-8, 0.0, 2.0 ** -14, 3.0e-5, 65504.0], np.float16)
    assert float16_to_float32(x, np.empty(x.size, np.int32)).tolist() == x.astype(np.float32).tolist()


def _products(scales: np.ndarray) -> np.ndarray:
    """Every product of the fp16 scales and the integers data - offset can take (8-bit codes)."""
    codes = np.arange(-383, 256, dtype=np.float32)
    p = (scales.astype(np.float32)[:, None] * codes[None, :]).ravel()
    return p[np.abs(p) <= 65504]


@pytest.mark.parametrize("subnormals", [True, False])
def test_round_to_float16_is_numpys_cast_on_every_dequantized_product(subnormals):
    # an integer times an fp16 scale is a multiple of 2**-24: subnormals=False (what the affine
    # stage uses) must hold for subnormal scales too
    p = _products(ALL_FP16[1:0x7C00][slice(0, None, 7) if subnormals else slice(3, None, 7)])  # ~6M, ~1 s
    got = round_to_float16(p.copy(), np.empty(2 * p.size, np.int32), subnormals)
    assert np.array_equal(got.view(np.uint32) & 0x7FFFFFFF, p.astype(np.float16).astype(np.float32).view(np.uint32)
                          & 0x7FFFFFFF)  # magnitudes bit for bit (0 may lose its sign: |w - r| is the same)
    assert np.array_equal(np.signbit(got) | (got == 0), np.signbit(p) | (p == 0))


def test_round_to_float16_ties_go_to_even():
    # exact midpoints between neighbouring fp16 values, normal and subnormal
    lo = ALL_FP16[np.r_[1:40, 1000:1040, 0x7000:0x7040]].astype(np.float64)
    hi = np.nextafter(lo.astype(np.float16), np.float16(np.inf)).astype(np.float64)
    mid = ((lo + hi) / 2).astype(np.float32)
    assert np.array_equal(mid.astype(np.float64), (lo + hi) / 2)  # representable exactly in fp32
    got = round_to_float16(mid.copy(), np.empty(2 * mid.size, np.int32))
    assert np.array_equal(got, mid.astype(np.float16).astype(np.float32))
    sub = mid[np.abs(mid) < 2.0 ** -14]  # not multiples of 2**-24: subnormals=False gets them wrong
    assert sub.size and not np.array_equal(round_to_float16(sub.copy(), np.empty(sub.size, np.int32), False),
                                           sub.astype(np.float16).astype(np.float32))


# ---- whole-array figures ----------------------------------------------------------------------

@given(dtype=st.sampled_from([np.float16, np.float32, np.float64]),
       shape=st.sampled_from([(1,), (7, 3), (300, 500), (65537,)]),
       noise=st.sampled_from([0.0, 1e-4, 1e-2, 1.0]), seed=st.integers(0, 2 ** 16))
def test_error_figures_match_a_float64_reference(dtype, shape, noise, seed):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal(shape) * rng.choice([1e-3, 1.0, 100.0])).astype(dtype)
    r = (w.astype(np.float64) + rng.standard_normal(shape) * noise).astype(dtype)
    assert_close_to_reference(error_figures(w, r), w, r)


def test_error_figures_hand_computed():
    w = np.array([3.0, -4.0, 0.0, 1.0], np.float16)
    r = np.array([3.0, -3.0, 0.5, 1.0], np.float16)
    got = error_figures(w, r)
    assert got["max_abs_error"] == 1.0 and got["mse"] == pytest.approx(1.25 / 4, rel=1e-7)
    assert got["snr_db"] == pytest.approx(10 * math.log10(26 / 1.25), abs=1e-6)
    assert error_figures(w, w)["snr_db"] == math.inf
    assert error_figures(np.zeros(4, np.float32), np.ones(4, np.float32))["snr_db"] == -math.inf


def test_error_figures_never_write_their_inputs():
    w = RNG.standard_normal(70000).astype(np.float32)
    r = w + np.float32(0.5)
    w.flags.writeable = r.flags.writeable = False
    error_figures(w, r)  # writing into either raises


def test_error_figures_of_huge_fp32_values_redo_the_chunk_in_float64():
    w = np.array([3e20, -2e20, 1e19], np.float32)  # squares overflow float32
    r = w * np.float32(0.5)
    assert_close_to_reference(error_figures(w, r), w, r)


def test_error_figures_report_nan_and_inf():
    w = np.ones(100, np.float16)
    r = w.copy()
    r[50] = np.nan
    assert math.isnan(error_figures(w, r)["max_abs_error"]) and math.isnan(error_figures(w, r)["snr_db"])
    r[50] = np.inf
    assert error_figures(w, r)["max_abs_error"] == math.inf and error_figures(w, r)["snr_db"] == -math.inf


# ---- the affine stage's fused pass -----------------------------------------------------------

# iOS16 has no 4-bit and no per-block form: those combinations are not generated
_AFFINE_CASES = [(o, d, g) for o in ("iOS16", "iOS18") for d in ("int8", "uint8", "int4")
                 for g in ("per_tensor", "per_channel", "per_block")
                 if o == "iOS18" or (d != "int4" and g != "per_block")]


@pytest.mark.parametrize("opset,dtype,granularity", _AFFINE_CASES)
@pytest.mark.parametrize("mode", ["linear_symmetric", "linear"])
@pytest.mark.parametrize("wdt", [np.float16, np.float32])
def test_affine_stage_figures_are_those_of_the_emitted_ops(opset, mode, dtype, granularity, wdt):
    w = (RNG.standard_normal((48, 96)) * RNG.choice([1e-4, 0.1, 20.0], (48, 1)) + 0.01).astype(wdt)
    res = affine_quantize_weights(mode=mode, dtype=dtype, granularity=granularity, block_size=16).run(
        linear_program(w, opset))
    assert_close_to_reference(dict(res.stats["weights"]["w"]), w, assert_decompress_exact(res.program))


@given(rows=st.integers(1, 70), cols=st.sampled_from([1, 4, 32, 2048]),
       magnitude=st.sampled_from([1e-7, 1e-4, 0.02, 3.0, 4e4]),
       mode=st.sampled_from(["linear_symmetric", "linear"]), dtype=st.sampled_from(["int8", "uint8", "uint4"]),
       block=st.sampled_from([[0, 0], [1, 0], [1, 4], [2, 0]]),
       wdt=st.sampled_from([np.float16, np.float32, np.float64]), seed=st.integers(0, 2 ** 16))
def test_dequantized_figures_match_the_kernel_on_any_weight(rows, cols, magnitude, mode, dtype, block, wdt, seed):
    rng = np.random.default_rng(seed)
    w = np.clip(rng.standard_normal((rows, cols)) * magnitude * rng.random((rows, 1)), -6e4, 6e4).astype(wdt)
    block = [b if cols % max(b, 1) == 0 and rows % max(b, 1) == 0 else 0 for b in block]
    q = affine_quantize(w, mode=mode, dtype=dtype, block_sizes=block)
    offset = q.zero_point if np.any(q.zero_point) else None
    recon = blockwise_shift_scale(q.data, q.scale, offset)  # what constexpr_blockwise_shift_scale yields
    assert_close_to_reference(dequantized_figures(w, q.data, q.scale, offset), w, recon)


def test_dequantized_figures_of_fp16_products_near_and_beyond_fp16_range():
    # scale 300: 300 * 383 may leave fp16's range, so numpy's cast is used (inf past 65504)
    scale = np.array([[300.0]], np.float16)
    data = np.array([[0, 200, 127, 10]], np.uint8)
    w = np.array([[0.0, 60000.0, 38000.0, 3000.0]], np.float16)
    assert_close_to_reference(dequantized_figures(w, data, scale), w, blockwise_shift_scale(data, scale, None))
    data = np.array([[0, 254, 127, 10]], np.uint8)  # 254 * 300 = 76200: inf in fp16
    with np.errstate(over="ignore"):
        assert np.isinf(blockwise_shift_scale(data, scale, None)).any()
    got = dequantized_figures(w, data, scale)
    assert got["max_abs_error"] == math.inf and got["mse"] == math.inf and got["snr_db"] == -math.inf


# ---- the per-weight progress bar --------------------------------------------------------------

def _chain_of_linears(n: int):
    """n linear layers, each with its own 64x64 weight (one compression job per weight)."""
    from ir.builder import TensorSpec, program

    w = (RNG.standard_normal((64, 64))).astype(np.float32)

    @program(inputs={"x": TensorSpec((1, 64), "fp32")})
    def net(b, x):
        for i in range(n):
            x = b.linear(x=x, weight=b.const(w + i, name=f"w{i}"))
        return x

    return net


def test_progress_advances_only_as_results_come_back():
    log = []

    def logging_map(fn, items):
        items = list(items)
        out = [fn(i) for i in items]
        log.extend(("done", id(r[0])) for r in out)
        return out

    def bar(items, desc="", total=None):
        log.append(("bar", desc, total))
        for item in items:
            log.append(("advance", id(item[0])))
            yield item

    net = _chain_of_linears(9)

    st_ = affine_quantize_weights()
    plain = st_.run(net)
    tracked = st_.run(net, StageContext(map=logging_map, progress=bar))
    assert tracked.program.digest == plain.program.digest
    assert log[0] == ("bar", "affine_quantize_weights", 9)
    advanced = [e[1] for e in log if e[0] == "advance"]
    assert len(advanced) == 9
    for rep in advanced:  # every step of the bar comes after the map call that produced it
        assert log.index(("done", rep)) < log.index(("advance", rep))


def test_progress_follows_each_result_of_a_lazy_map():
    """The runner's maps yield results as they are ready: the bar moves once per weight,
    interleaved with the work, not once at the end."""
    log = []

    def lazy_map(fn, items):
        for i in items:
            r = fn(i)
            log.append("done")
            yield r

    def bar(items, desc="", total=None):
        for item in items:
            log.append("advance")
            yield item

    net = _chain_of_linears(3)

    affine_quantize_weights().run(net, StageContext(map=lazy_map, progress=bar))
    assert log == ["done", "advance"] * 3
