"""Weights with the hard cases, and models whose weights the compression stages compress.

    from pipeline.strategies import weight_arrays, weight_models

    @given(weight_arrays(dtype="fp16"))              # one float array, channel axis 0
    def test_kernel(w): ...

    @given(weight_models())                          # a program with linear / conv / matmul weights
    def test_stage(prog): ...

    from pipeline.strategies.weights import example_model
    prog = example_model(seed=1, large=True)         # deterministic; weights over the 2048-element
                                                     # threshold of the default op selection

The hard cases (WEIGHT_CASES) are the ones that broke or would break a compressor:
- ``zero_channel``: output channels that are all zero (a range of 0: scale 0 -> NaN), and
  sometimes the whole weight;
- ``constant_groups``: channels holding one repeated value (a block without spread);
- ``few_values``: fewer distinct values than a 4-bit LUT has entries (k-means must not
  invent entries or leave them unsorted);
- ``k_values``: exactly 2, 4 or 16 distinct values, as many as a 1-, 2- or 4-bit LUT has
  entries (the boundary between "the values themselves" and k-means), sometimes spread over
  many decades (where k-means' means would miss the values by rounding);
- ``fp16_extremes``: +-65504 and subnormals next to ordinary values (scale rounding at the
  edge of the range, reconstruction overflow);
- ``ties``: values on a coarse grid (equal magnitudes: percentile and n:m tie breaking,
  threshold equality);
- ``tiny``: every value near fp16's smallest normals (a scale that rounds to 0);
- ``normal``: the ordinary case, at a random magnitude.

The models add the structural cases: a const read by two ops (decompress_weights once
deleted it and crashed), an already sparse weight (joint compression), a vector LUT
with several blocks (cluster_dim > 1, per-group LUTs), an already jointly compressed
weight whose nonzero values are a vector LUT (constexpr_lut_to_sparse with vectors), a
conv weight and a matmul weight (different output axes), and (large models) weights of
exactly and one past the default selection's 2048 elements, and one past the op kernels'
chunk size (65536 elements: the chunked loops and fast lookup paths).

Every choice that makes a case is named with c.tag (e.g. "fc1_w:zero_channel",
"shared_const", "vector_lut:blocks:2"), so a fixed harness can pick seeds that cover
them all (pipeline.strategies.choices.tagged_example).
"""
from __future__ import annotations

import numpy as np

from ir.builder import Builder, TensorSpec
from ir.core import Program
from pipeline.strategies.choices import example_of, normal, rng_of, strategy_of

WEIGHT_CASES = ("normal", "zero_channel", "constant_groups", "few_values", "k_values", "fp16_extremes", "ties",
                "tiny")
FLOAT_DTYPES = {"fp32": np.float32, "fp16": np.float16}
FP16_MAX = 65504.0
FP16_SUBNORMALS = (2.0 ** -24, 3 * 2.0 ** -24, 2.0 ** -15)


def _rows(c, w, fraction=0.3):
    """Some channel indices of w (axis 0), at least one."""
    n = w.shape[0]
    k = max(1, int(round(n * fraction)))
    return rng_of(c).choice(n, size=k, replace=False)


def _case_normal(c, shape, dt):
    return normal(c, shape, np.float64, 10.0 ** rng_of(c).uniform(-3, 1))


def _case_zero_channel(c, shape, dt):
    w = normal(c, shape, np.float64)
    if c.integer(0, 5) == 0:
        return np.zeros(shape)
    w[_rows(c, w)] = 0.0
    return w


def _case_constant_groups(c, shape, dt):
    w = normal(c, shape, np.float64)
    for r in _rows(c, w, 0.5):
        w[r] = c.pick((0.5, -1.25, 3.0, 1e-3))
    return w


def _case_few_values(c, shape, dt):
    values = np.array(c.pick(((-1.0, 0.0, 1.0), (0.25, 0.5), (-2.0, 0.125, 0.375, 7.0), (1.5,))))
    return rng_of(c).choice(values, size=shape)


def _case_k_values(c, shape, dt):
    k = c.pick((2, 4, 16))
    c.tag(f"k_values:{k}")
    if c.boolean():  # magnitudes over many decades: k-means' prefix-sum means miss tiny values
        c.tag("k_values_wide")
        decades = 4 if FLOAT_DTYPES[dt] == np.float16 else 8
        r = rng_of(c)
        values = np.unique((r.choice([-1.0, 1.0], k) * 10.0 ** r.uniform(-decades, decades, k)).astype(FLOAT_DTYPES[dt]))
    else:
        values = np.unique(normal(c, (k,), np.float64).astype(FLOAT_DTYPES[dt]))
    while values.size < k:  # normal draws that collide in fp16: top up with distinct ones
        values = np.unique(np.concatenate([values, values.max() + np.arange(1, k - values.size + 1) / 8]))
    w = rng_of(c).choice(values.astype(np.float64), size=shape)
    flat = w.reshape(-1)
    if flat.size >= k:
        flat[:k] = values  # every value present at least once
    return w


def _case_fp16_extremes(c, shape, dt):
    w = normal(c, shape, np.float64)
    flat = w.reshape(-1)
    picks = rng_of(c).choice(flat.size, size=min(flat.size, 4), replace=False)
    specials = (FP16_MAX, -FP16_MAX) + FP16_SUBNORMALS
    for i, p in enumerate(picks):
        flat[p] = specials[(i + c.integer(0, len(specials) - 1)) % len(specials)]
    return w


def _case_ties(c, shape, dt):
    return np.round(normal(c, shape, np.float64) * 4) / 4


def _case_tiny(c, shape, dt):
    return normal(c, shape, np.float64, 2.0 ** -14)


CASES = {"normal": _case_normal, "zero_channel": _case_zero_channel, "constant_groups": _case_constant_groups,
         "few_values": _case_few_values, "k_values": _case_k_values, "fp16_extremes": _case_fp16_extremes,
         "ties": _case_ties,
         "tiny": _case_tiny}


def weight_array(c, shape, dtype="fp32", case=None, name=None) -> np.ndarray:
    """A weight of `shape` (channel axis 0) for one hard case (drawn when None), read-only.
    Tags the case ("case:<case>", and "<name>:<case>" when named)."""
    case = case or c.pick(WEIGHT_CASES)
    c.tag(f"case:{case}")
    if name:
        c.tag(f"{name}:{case}")
    w = np.ascontiguousarray(CASES[case](c, shape, dtype).astype(FLOAT_DTYPES[dtype]))
    w.flags.writeable = False
    return w


def weight_arrays(shape=None, dtype=None, cases=WEIGHT_CASES):
    """Strategy: float weights (shape / dtype drawn when None) of the given hard cases."""
    def gen(c):
        shp = shape or tuple(c.integer(1, 8) for _ in range(c.integer(1, 3)))
        return weight_array(c, shp, dtype or c.pick(tuple(FLOAT_DTYPES)), c.pick(tuple(cases)))
    return strategy_of(gen)


# ---- models ---------------------------------------------------------------------------------

def _dims(c, large: bool) -> dict:
    if large:  # every weight over the default selection's 2048 elements
        return {"batch": 2, "n_in": 64, "n_h": 48, "n_out": 64, "conv_c": 16, "conv_k": 9, "length": 12}
    return {"batch": c.integer(1, 3), "n_in": c.integer(2, 8) * 2, "n_h": c.integer(1, 6) * 2,
            "n_out": c.integer(1, 6), "conv_c": c.integer(1, 4) * 2, "conv_k": c.integer(1, 3),
            "length": c.integer(3, 6)}


def _sparse_weight(c, b, shape, fname, name):
    """An iOS18 constexpr_sparse_to_dense weight (already sparse: joint compression input)."""
    w = np.array(weight_array(c, shape, fname, c.pick(("normal", "ties", "few_values", "k_values")), name))
    w[np.abs(w) < np.median(np.abs(w))] = 0
    mask = w != 0
    nz = b.const(w[mask].astype(FLOAT_DTYPES[fname]), name=f"{name}_nonzero")
    m = b.const(mask.astype(np.uint8), dtype="uint1", name=f"{name}_mask")
    shared = c.boolean()
    if shared:
        c.tag("sparse_w:nonzero_read_twice")
    extra = [b.relu(x=nz, name=f"{name}_nonzero_reader")] if shared else []  # a const read by two ops
    return b.constexpr_sparse_to_dense(nonzero_data=nz, mask=m, name=name), extra


def _vector_lut_weight(c, b, shape, fname, name):
    """A vector LUT (vector size 2 along axis 0) with one LUT per block of output channels."""
    out, n_in = shape
    vs = 2
    blocks = c.pick([g for g in (1, 2, 4) if (out // vs) % g == 0])
    nbits = c.pick((1, 2))
    c.tag(f"vector_lut:blocks:{blocks}")
    c.tag(f"vector_lut:nbits:{nbits}")
    k = 2 ** nbits
    idx = b.const(rng_of(c).integers(0, k, size=(out // vs, n_in)).astype(np.uint8), dtype=f"uint{nbits}",
                  name=f"{name}_indices")
    lut = normal(c, (blocks, 1, k, vs), FLOAT_DTYPES[fname])
    return b.constexpr_lut_to_dense(indices=idx, lut=lut, vector_axis=np.int32(0), name=name)


def _sparse_vector_lut_weight(c, b, shape, fname, name):
    """An already jointly compressed weight: its nonzero values are 2-vectors (along axis 0) of
    a LUT with one LUT per block of output channels (constexpr_lut_to_sparse with vector_axis
    -> constexpr_sparse_to_dense)."""
    out, n_in = shape
    vs = 2
    blocks = c.pick([g for g in (1, 2) if (out // vs) % g == 0])
    nbits = c.pick((1, 2, 4))
    c.tag(f"sparse_vector_lut:blocks:{blocks}")
    c.tag(f"sparse_vector_lut:nbits:{nbits}")
    k = 2 ** nbits
    rng = rng_of(c)
    mask = rng.integers(0, 2, size=(out // vs, n_in)).astype(np.uint8)
    mask.reshape(-1)[0] = 1  # at least one vector kept
    idx = rng.integers(0, k, size=int(mask.sum())).astype(np.uint8)
    lut = normal(c, (blocks, 1, k, vs), FLOAT_DTYPES[fname])
    m, values = b.constexpr_lut_to_sparse(indices_mask=b.const(mask, dtype="uint1", name=f"{name}_mask"),
                                          indices_nonzero_data=b.const(idx, dtype=f"uint{nbits}",
                                                                       name=f"{name}_indices"),
                                          lut=lut, vector_axis=np.int32(0), name=f"{name}_palettized")
    return b.constexpr_sparse_to_dense(nonzero_data=values, mask=m, name=name)


def weight_model(c, large: bool = False, opset: str = "iOS18") -> Program:
    """x -> linear (+bias) -> relu -> [shared-weight pair] -> matmul; optional conv, sparse, vector-LUT branches."""
    fname = c.pick(tuple(FLOAT_DTYPES))
    fdt = FLOAT_DTYPES[fname]
    d = _dims(c, large)
    b = Builder()
    c.tag(f"dtype:{fname}")
    c.tag(f"opset:{opset}")
    x = b.input("x", TensorSpec((d["batch"], d["n_in"]), fname))
    w1 = b.const(weight_array(c, (d["n_h"], d["n_in"]), fname, name="fc1_w"), name="fc1_w")
    bias = b.const(normal(c, (d["n_h"],), fdt, 0.1), name="fc1_b") if c.boolean() else None
    if bias is not None:
        c.tag("bias")
    h = b.relu(x=b.linear(x=x, weight=w1, bias=bias, name="fc1"), name="act1")
    if c.boolean():  # one const read by two ops
        c.tag("shared_const")
        shared = b.const(weight_array(c, (d["n_h"], d["n_h"]), fname, name="shared_w"), name="shared_w")
        h = b.add(x=b.linear(x=h, weight=shared, name="left"), y=b.linear(x=h, weight=shared, name="right"),
                  name="pair")
    w3 = b.const(weight_array(c, (d["n_h"], d["n_out"]), fname, name="proj_w"), name="proj_w")
    outs = [b.matmul(x=h, y=w3, name="logits")]
    if c.boolean():
        c.tag("conv")
        img = b.input("img", TensorSpec((1, d["conv_c"], d["length"]), fname))
        wc = b.const(weight_array(c, (d["conv_c"], d["conv_c"], d["conv_k"]), fname, name="conv_w"), name="conv_w")
        outs.append(b.conv(x=img, weight=wc, pad_type="same", name="conv"))
    if opset == "iOS18" and c.boolean():
        c.tag("sparse_w")
        ws, extra = _sparse_weight(c, b, (d["n_h"], d["n_in"]), fname, "sparse_w")
        outs += [b.linear(x=x, weight=ws, name="sparse_fc"), *extra]
    if opset == "iOS18" and c.boolean():
        c.tag("vector_lut")
        wv = _vector_lut_weight(c, b, (max(4, d["n_h"] - d["n_h"] % 4), d["n_in"]), fname, "vlut_w")
        outs.append(b.linear(x=x, weight=wv, name="vlut_fc"))
        if c.boolean():  # the decoded weight read by a layer and by another constexpr (a scaled copy)
            c.tag("vector_lut:read_twice")
            sshape = (wv.shape[0], 1)
            scaled = b.constexpr_blockwise_shift_scale(data=wv, scale=rng_of(c).uniform(0.5, 2, sshape).astype(fdt),
                                                       name="vlut_scaled_w")
            outs.append(b.linear(x=x, weight=scaled, name="vlut_scaled_fc"))
    if opset == "iOS18" and c.integer(0, 3) == 0:
        c.tag("sparse_vector_lut")
        wj = _sparse_vector_lut_weight(c, b, (max(4, d["n_h"] - d["n_h"] % 4), d["n_in"]), fname, "svlut_w")
        outs.append(b.linear(x=x, weight=wj, name="svlut_fc"))
    if large and c.integer(0, 2) == 0:
        # weights of exactly and one past the default selection's size (compressed only when > 2048)
        c.tag("selection_boundary")
        wa = b.const(weight_array(c, (32, d["n_in"]), fname, name="edge_w"), name="edge_w")  # 2048 elements
        outs.append(b.linear(x=x, weight=wa, name="edge_fc"))
        z = b.input("z", TensorSpec((d["batch"], 683), fname))
        wb = b.const(weight_array(c, (3, 683), fname, name="edge1_w"), name="edge1_w")  # 2049 elements
        outs.append(b.linear(x=z, weight=wb, name="edge1_fc"))
    if large and c.integer(0, 3) == 0:
        # one weight past the op kernels' chunk size (65536 elements, not a multiple of it): the
        # chunked loops and the fast lookup paths for long weights run
        c.tag("chunked_weight")
        wide = b.input("wide", TensorSpec((d["batch"], 256), fname))
        wc = b.const(weight_array(c, (257, 256), fname, name="big_w"), name="big_w")
        outs.append(b.linear(x=wide, weight=wc, name="big_fc"))
    return Program.make([b.function("main", outs, opset)])


def weight_models(large: bool = False, opsets=("iOS18",)):
    """Strategy: programs from weight_model (opset drawn from `opsets`)."""
    return strategy_of(lambda c: weight_model(c, large, c.pick(tuple(opsets))))


def example_model(seed: int, large: bool = True, opset: str = "iOS18") -> Program:
    """The deterministic weight_model for seed."""
    return example_of(lambda c: weight_model(c, large, opset), seed)


__all__ = ["WEIGHT_CASES", "weight_array", "weight_arrays", "weight_model", "weight_models", "example_model"]
