"""Losses: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (which is the
former on log_softmax over axis 1, and also returns that log-probability).

input [N, C, d1, ...], target [N, d1, ...]; a target equal to ignore_index
contributes 0 and does not count. reduction "mean" divides by the summed weights
of the counted targets (their number without weights), "sum" adds, "none" keeps
the per-element losses."""
from __future__ import annotations

import numpy as np

from ir.formats.onnx.kernels._util import arg, need, work


def _nll(logp: np.ndarray, target: np.ndarray, weight, attrs) -> np.ndarray:
    reduction = attrs.get("reduction", "mean")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be mean, sum or none, got {reduction!r}")
    t = np.asarray(target).astype(np.int64)
    c = logp.shape[1]
    ignore = attrs.get("ignore_index")
    keep = np.ones(t.shape, bool) if ignore is None else t != int(ignore)
    safe = np.where(keep, t, 0)
    if np.any((safe < 0) | (safe >= c)):
        raise ValueError(f"target class out of range [0, {c})")
    picked = np.take_along_axis(logp, np.expand_dims(safe, 1), axis=1).squeeze(1)
    w = np.ones(t.shape, logp.dtype) if weight is None else work(np.asarray(weight))[safe]
    w = np.where(keep, w, 0).astype(logp.dtype)
    loss = -picked * w
    if reduction == "none":
        return loss
    if reduction == "sum":
        return np.asarray(loss.sum())
    return np.asarray(loss.sum() / w.sum())


def nll_loss(ins, attrs, node):
    x, target = need(ins, 0, "input"), need(ins, 1, "target")
    return [_nll(work(x), target, arg(ins, 2), attrs).astype(x.dtype)]


def softmax_cross_entropy(ins, attrs, node):
    x, labels = need(ins, 0, "scores"), need(ins, 1, "labels")
    w = work(x)
    m = np.max(w, axis=1, keepdims=True)
    logp = (w - m) - np.log(np.sum(np.exp(w - m), axis=1, keepdims=True))
    return [_nll(logp, labels, arg(ins, 2), attrs).astype(x.dtype), logp.astype(x.dtype)]


KERNELS = {"NegativeLogLikelihoodLoss": nll_loss, "SoftmaxCrossEntropyLoss": softmax_cross_entropy}
