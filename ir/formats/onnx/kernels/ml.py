"""ai.onnx.ml ops that scikit-learn exports (skl2onnx) carry: Scaler, Normalizer,
Binarizer, Imputer, LabelEncoder, OneHotEncoder, FeatureVectorizer,
ArrayFeatureExtractor, LinearClassifier, LinearRegressor, TreeEnsembleClassifier,
TreeEnsembleRegressor and ZipMap (which onnx's reference evaluator does not have).

Scores follow onnxruntime: float32 outputs; post_transform NONE, LOGISTIC,
SOFTMAX, SOFTMAX_ZERO, PROBIT; a binary classifier with one score column
(one coefficient row, or trees weighting one class only) writes the two columns
onnxruntime writes: [1 - p, p] when every tree weight is non-negative, else
[-s, s] (LOGISTIC: [sigmoid(-s), sigmoid(s)]); its label is the positive class
when p > 0.5 (s > 0). ZipMap returns a list with one dict per row.
"""
from __future__ import annotations

import math

import numpy as np

from ir.formats.onnx.kernels._util import Unsupported, erf, need

ML = "ai.onnx.ml"


def _f32(x) -> np.ndarray:
    return np.asarray(x).astype(np.float32)


def scaler(ins, attrs, node):
    x = _f32(need(ins, 0, "X"))
    offset = np.asarray(attrs.get("offset", (0.0,)), np.float32)
    scale = np.asarray(attrs.get("scale", (1.0,)), np.float32)
    return [((x - offset) * scale).astype(np.float32)]


def normalizer(ins, attrs, node):
    x = _f32(need(ins, 0, "X"))
    norm = attrs.get("norm", "MAX")
    axis = -1
    if norm == "MAX":
        d = np.max(x, axis=axis, keepdims=True)
    elif norm == "L1":
        d = np.sum(np.abs(x), axis=axis, keepdims=True)
    elif norm == "L2":
        d = np.sqrt(np.sum(x * x, axis=axis, keepdims=True))
    else:
        raise ValueError(f"Normalizer: norm must be MAX, L1 or L2, got {norm!r}")
    return [(x / d).astype(np.float32)]


def binarizer(ins, attrs, node):
    x = need(ins, 0, "X")
    return [np.where(x > float(attrs.get("threshold", 0.0)), 1, 0).astype(x.dtype)]


def imputer(ins, attrs, node):
    x = need(ins, 0, "X")
    if "imputed_value_floats" in attrs:
        values = np.asarray(attrs["imputed_value_floats"], np.float32)
        replaced = float(attrs.get("replaced_value_float", 0.0))
        hit = np.isnan(x) if math.isnan(replaced) else x == replaced
    else:
        values = np.asarray(attrs.get("imputed_value_int64s", (0,)), np.int64)
        hit = x == int(attrs.get("replaced_value_int64", 0))
    fill = np.broadcast_to(values if values.size > 1 else values.reshape(()), x.shape)
    return [np.where(hit, fill, x).astype(x.dtype)]


def _labels(attrs, *names):
    for n in names:
        if n in attrs:
            return list(attrs[n])
    return None


def label_encoder(ins, attrs, node):
    x = need(ins, 0, "X")
    if "keys_tensor" in attrs or "values_tensor" in attrs:
        raise Unsupported("LabelEncoder keys / values given as tensors")
    keys = _labels(attrs, "keys_strings", "keys_int64s", "keys_floats")
    vals = _labels(attrs, "values_strings", "values_int64s", "values_floats")
    if keys is None or vals is None or len(keys) != len(vals):
        raise ValueError("LabelEncoder: keys and values must be given with equal lengths")
    if "values_strings" in attrs:
        default, dt = attrs.get("default_string", "_Unused"), object
    elif "values_int64s" in attrs:
        default, dt = int(attrs.get("default_int64", -1)), np.int64
    else:
        default, dt = float(attrs.get("default_float", -0.0)), np.float32
    table = dict(zip(keys, vals))
    flat = [table.get(v, default) for v in np.asarray(x).reshape(-1).tolist()]
    return [np.array(flat, dtype=dt).reshape(np.shape(x))]


def one_hot_encoder(ins, attrs, node):
    x = need(ins, 0, "X")
    cats = _labels(attrs, "cats_int64s", "cats_strings")
    if cats is None:
        raise ValueError("OneHotEncoder: cats_int64s or cats_strings is required")
    index = {c: i for i, c in enumerate(cats)}
    flat = np.asarray(x).reshape(-1).tolist()
    if "cats_int64s" in attrs:
        flat = [int(v) for v in flat]
    out = np.zeros((len(flat), len(cats)), np.float32)
    for r, v in enumerate(flat):
        i = index.get(v)
        if i is None:
            if not int(attrs.get("zeros", 1)):
                raise ValueError(f"OneHotEncoder: {v!r} is not a category")
            continue
        out[r, i] = 1
    return [out.reshape(np.shape(x) + (len(cats),))]


def feature_vectorizer(ins, attrs, node):
    dims = [int(d) for d in attrs.get("inputdimensions", ())]
    xs = [np.asarray(x) for x in ins if x is not None]
    if len(dims) != len(xs):
        raise ValueError(f"FeatureVectorizer: {len(xs)} inputs, {len(dims)} input dimensions")
    n = xs[0].shape[0] if xs[0].ndim > 1 else 1
    cols = []
    for x, d in zip(xs, dims):
        x2 = _f32(x).reshape(n, -1)
        part = np.zeros((n, d), np.float32)
        k = min(d, x2.shape[1])
        part[:, :k] = x2[:, :k]
        cols.append(part)
    return [np.concatenate(cols, axis=1)]


def array_feature_extractor(ins, attrs, node):
    x, idx = need(ins, 0, "X"), np.asarray(need(ins, 1, "Y"), np.int64).reshape(-1)
    n = x.shape[-1]
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"ArrayFeatureExtractor: index out of range [0, {n})")
    res = np.take(x, idx, axis=-1)
    return [res.reshape(1, -1) if x.ndim == 1 else res]


def zip_map(ins, attrs, node):
    x = _f32(need(ins, 0, "X"))
    labels = _labels(attrs, "classlabels_int64s", "classlabels_strings")
    if labels is None:
        raise ValueError("ZipMap: classlabels_int64s or classlabels_strings is required")
    rows = x.reshape(1, -1) if x.ndim == 1 else x
    if rows.shape[1] != len(labels):
        raise ValueError(f"ZipMap: {rows.shape[1]} columns for {len(labels)} class labels")
    return [[dict(zip(labels, map(float, r))) for r in rows.tolist()]]


# ---- scores ----------------------------------------------------------------------

def _probit(p):
    # the inverse of the standard normal CDF, as onnxruntime's ComputeProbit: sqrt(2) * erfinv(2p - 1)
    v = 2 * np.asarray(p, np.float64) - 1
    return (math.sqrt(2) * _erfinv(v)).astype(np.float32)


def _erfinv(y):
    # Newton steps on erf from Giles' single-precision starting point
    w = -np.log(np.maximum((1 - y) * (1 + y), 1e-300))
    x = np.where(w < 5, _giles_small(w - 2.5), _giles_large(np.sqrt(w) - 3)) * y
    for _ in range(2):
        x = x - (erf(x.astype(np.float32)).astype(np.float64) - y) / (2 / math.sqrt(math.pi) * np.exp(-x * x))
    return x


def _giles_small(w):
    p = 2.81022636e-08
    for c in (3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503,
              -0.00417768164, 0.246640727, 1.50140941):
        p = c + p * w
    return p


def _giles_large(w):
    p = -0.000200214257
    for c in (0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613,
              0.00943887047, 1.00167406, 2.83297682):
        p = c + p * w
    return p


def _sigmoid(s):
    s = np.asarray(s, np.float64)
    e = np.exp(-np.abs(s))
    return np.where(s >= 0, 1 / (1 + e), e / (1 + e))


def _softmax(s, zero=False):
    s = np.asarray(s, np.float64)
    m = np.max(s, axis=1, keepdims=True)
    e = np.exp(s - m)
    if zero:
        e = np.where(s == 0, 0, e)
    t = np.sum(e, axis=1, keepdims=True)
    return e / np.where(t == 0, 1, t)


POST = {
    "NONE": lambda s: s,
    "LOGISTIC": _sigmoid,
    "SOFTMAX": _softmax,
    "SOFTMAX_ZERO": lambda s: _softmax(s, zero=True),
    "PROBIT": _probit,
}


def _post(attrs, s):
    name = attrs.get("post_transform", "NONE")
    if name not in POST:
        raise ValueError(f"post_transform must be one of {sorted(POST)}, got {name!r}")
    return np.asarray(POST[name](s)).astype(np.float32)


def _label_array(labels, picks) -> np.ndarray:
    arr = np.array(labels, dtype=object if isinstance(labels[0], str) else np.int64)
    return arr[picks]


def _binary_columns(score, attrs, all_positive: bool):
    """onnxruntime's two columns for a one-score binary classifier, and the positive mask."""
    post = attrs.get("post_transform", "NONE")
    if all_positive:
        pos = score > 0.5
        cols = np.stack([1 - score, score], axis=1)
        return (_post(attrs, cols) if post != "NONE" else cols.astype(np.float32)), pos
    pos = score > 0
    if post == "LOGISTIC":
        return np.stack([_sigmoid(-score), _sigmoid(score)], axis=1).astype(np.float32), pos
    cols = np.stack([-score, score], axis=1)
    return _post(attrs, cols), pos


def linear_classifier(ins, attrs, node):
    x = np.asarray(need(ins, 0, "X"), np.float64)
    x = x.reshape(1, -1) if x.ndim == 1 else x
    labels = _labels(attrs, "classlabels_ints", "classlabels_strings")
    coef = np.asarray(attrs["coefficients"], np.float64)
    inter = np.asarray(attrs.get("intercepts", ()), np.float64)
    rows = coef.size // x.shape[1]
    scores = x @ coef.reshape(rows, x.shape[1]).T + (inter if inter.size else 0)
    if rows == 1 and len(labels) == 2:
        # one score column: [-s, s] (LOGISTIC: sigmoid of both), label by the sign
        cols, pos = _binary_columns(scores[:, 0], attrs, all_positive=False)
        return [_label_array(labels, pos.astype(np.int64)), cols]
    return [_label_array(labels, np.argmax(scores, axis=1)), _post(attrs, scores)]


def linear_regressor(ins, attrs, node):
    x = np.asarray(need(ins, 0, "X"), np.float64)
    x = x.reshape(1, -1) if x.ndim == 1 else x
    targets = int(attrs.get("targets", 1))
    coef = np.asarray(attrs["coefficients"], np.float64).reshape(targets, x.shape[1])
    inter = np.asarray(attrs.get("intercepts", ()), np.float64)
    return [_post(attrs, x @ coef.T + (inter if inter.size else 0))]


# ---- tree ensembles ------------------------------------------------------------------

_MODES = {
    "BRANCH_LEQ": np.less_equal, "BRANCH_LT": np.less, "BRANCH_GTE": np.greater_equal,
    "BRANCH_GT": np.greater, "BRANCH_EQ": np.equal, "BRANCH_NEQ": np.not_equal,
}


class _Forest:
    """Flattened trees: one row per node; child links as row indices."""

    def __init__(self, attrs):
        if "nodes_values_as_tensor" in attrs or "base_values_as_tensor" in attrs:
            raise Unsupported("tree ensemble with double thresholds")
        tree, nid = list(attrs["nodes_treeids"]), list(attrs["nodes_nodeids"])
        row = {(t, n): i for i, (t, n) in enumerate(zip(tree, nid))}
        self.row = row
        self.feature = np.asarray(attrs["nodes_featureids"], np.int64)
        self.value = np.asarray(attrs["nodes_values"], np.float32)
        modes = list(attrs["nodes_modes"])
        self.leaf = np.array([m == "LEAF" for m in modes])
        self.mode = modes
        self.true = np.array([row.get((t, c), -1) for t, c in zip(tree, attrs["nodes_truenodeids"])])
        self.false = np.array([row.get((t, c), -1) for t, c in zip(tree, attrs["nodes_falsenodeids"])])
        self.missing_true = np.asarray(attrs.get("nodes_missing_value_tracks_true", (0,) * len(tree)), bool)
        self.roots = []
        for i, t in enumerate(tree):  # the first node listed for a tree is its root
            if t not in [tree[r] for r in self.roots]:
                self.roots.append(i)

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """[N, n_trees] leaf rows reached by each sample in each tree."""
        n = x.shape[0]
        out = np.empty((n, len(self.roots)), np.int64)
        for j, root in enumerate(self.roots):
            cur = np.full(n, root)
            for _ in range(len(self.leaf)):
                inner = ~self.leaf[cur]
                if not inner.any():
                    break
                idx = np.nonzero(inner)[0]
                nodes = cur[idx]
                vals = x[idx, self.feature[nodes]]
                go = np.zeros(idx.size, bool)
                for mode, fn in _MODES.items():
                    sel = np.array([self.mode[k] == mode for k in nodes])
                    if sel.any():
                        go[sel] = fn(vals[sel], self.value[nodes[sel]])
                go = np.where(np.isnan(vals), self.missing_true[nodes], go)
                cur[idx] = np.where(go, self.true[nodes], self.false[nodes])
            out[:, j] = cur
        return out


def _leaf_weights(forest, x, treeids, nodeids, ids, weights, n_out):
    """[N, n_trees, n_out] leaf weights each sample collects per tree, and whether the leaf
    it reached names that output at all."""
    leaves = forest.leaves(x)
    w = np.zeros((len(forest.leaf), n_out), np.float32)  # float32, as onnxruntime accumulates
    hit = np.zeros((len(forest.leaf), n_out), bool)
    for t, nd, k, v in zip(treeids, nodeids, ids, weights):
        r = forest.row[(t, nd)]
        w[r, k] += v
        hit[r, k] = True
    return w[leaves], hit[leaves]


def _tree_sum(per_tree: np.ndarray) -> np.ndarray:
    """Sum over trees in tree order, in float32: the rounding onnxruntime's labels see
    (a positive-class score of exactly 0.5 is not 'above 0.5')."""
    acc = np.zeros((per_tree.shape[0], per_tree.shape[2]), np.float32)
    for t in range(per_tree.shape[1]):
        acc = acc + per_tree[:, t]
    return acc


def tree_ensemble_regressor(ins, attrs, node):
    x = np.asarray(need(ins, 0, "X"), np.float32)
    x = x.reshape(1, -1) if x.ndim == 1 else x
    forest = _Forest(attrs)
    n_targets = int(attrs.get("n_targets", 1))
    per_tree, hit = _leaf_weights(forest, x, attrs["target_treeids"], attrs["target_nodeids"],
                                  attrs["target_ids"], attrs["target_weights"], n_targets)
    agg = attrs.get("aggregate_function", "SUM")
    base = np.asarray(attrs.get("base_values", ()) or (0.0,) * n_targets, np.float32)
    if agg == "SUM":
        s = _tree_sum(per_tree)
    elif agg == "AVERAGE":
        s = _tree_sum(per_tree) / np.float32(len(forest.roots))
    elif agg in ("MIN", "MAX"):  # over the trees whose leaf names the target; 0 when none does
        fill = np.inf if agg == "MIN" else -np.inf
        picked = (np.min if agg == "MIN" else np.max)(np.where(hit, per_tree, fill), axis=1)
        s = np.where(hit.any(axis=1), picked, 0)
    else:
        raise ValueError(f"TreeEnsembleRegressor: unknown aggregate_function {agg!r}")
    return [_post(attrs, s + base)]


def tree_ensemble_classifier(ins, attrs, node):
    x = np.asarray(need(ins, 0, "X"), np.float32)
    x = x.reshape(1, -1) if x.ndim == 1 else x
    labels = _labels(attrs, "classlabels_int64s", "classlabels_strings")
    forest = _Forest(attrs)
    ids = list(attrs["class_ids"])
    weights = list(attrs["class_weights"])
    n = len(labels)
    per_tree, _ = _leaf_weights(forest, x, attrs["class_treeids"], attrs["class_nodeids"], ids, weights, n)
    s = _tree_sum(per_tree)
    base = [np.float32(b) for b in attrs.get("base_values", ())]
    if n > 2:
        s = s + (np.asarray(base, np.float32) if base else np.float32(0))
        return [_label_array(labels, np.argmax(s, axis=1)), _post(attrs, s)]
    if len(set(ids)) != 1:  # binary given as two columns: a two-class multiclass problem
        s = s + (np.asarray(base, np.float32) if len(base) == 2 else (base[0] if base else np.float32(0)))
        return [_label_array(labels, (s[:, 1] > s[:, 0]).astype(np.int64)), _post(attrs, s)]
    # one weighted class: onnxruntime's binary case on the summed score of that class (with
    # base values it adds base_values[0] to a class-0 score; class 1 with base values it
    # treats in a way of its own: left to the reference evaluator)
    if ids[0] != 0 and base:
        raise Unsupported("binary tree ensemble weighting class 1 only, with base values")
    score = s[:, ids[0]] + (base[0] if base else np.float32(0))
    cols, pos = _binary_columns(score, attrs, all_positive=all(w >= 0 for w in weights))
    return [_label_array(labels, pos.astype(np.int64)), cols]


KERNELS = {f"{ML}:{name}": fn for name, fn in {
    "Scaler": scaler, "Normalizer": normalizer, "Binarizer": binarizer, "Imputer": imputer,
    "LabelEncoder": label_encoder, "OneHotEncoder": one_hot_encoder, "FeatureVectorizer": feature_vectorizer,
    "ArrayFeatureExtractor": array_feature_extractor, "ZipMap": zip_map,
    "LinearClassifier": linear_classifier, "LinearRegressor": linear_regressor,
    "TreeEnsembleClassifier": tree_ensemble_classifier, "TreeEnsembleRegressor": tree_ensemble_regressor,
}.items()}
