"""NonMaxSuppression (opsets 10-11).

Per batch and class: boxes whose score exceeds score_threshold, taken by
descending score (ties: the lower box index first), each kept unless its IoU
with a box already kept exceeds iou_threshold, at most
max_output_boxes_per_class of them (0: none). Boxes are [y1, x1, y2, x2] with
either corner first (center_point_box=0) or [x_center, y_center, width, height]
(=1). Output: [batch, class, box] rows in that order, int64."""
from __future__ import annotations

import numpy as np

from ir.formats.onnx.kernels._util import arg, need, scalar


def _corners(boxes: np.ndarray, center: bool) -> np.ndarray:
    b = boxes.astype(np.float64)
    if center:
        xc, yc, w, h = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
        return np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=1)
    y1, y2 = np.minimum(b[:, 0], b[:, 2]), np.maximum(b[:, 0], b[:, 2])
    x1, x2 = np.minimum(b[:, 1], b[:, 3]), np.maximum(b[:, 1], b[:, 3])
    return np.stack([y1, x1, y2, x2], axis=1)


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    y1, x1 = np.maximum(box[0], others[:, 0]), np.maximum(box[1], others[:, 1])
    y2, x2 = np.minimum(box[2], others[:, 2]), np.minimum(box[3], others[:, 3])
    inter = np.clip(y2 - y1, 0, None) * np.clip(x2 - x1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def non_max_suppression(ins, attrs, node):
    boxes, scores = need(ins, 0, "boxes"), need(ins, 1, "scores")
    limit = int(scalar(arg(ins, 2), 0))
    iou_t = float(scalar(arg(ins, 3), 0.0))
    score_t = arg(ins, 4)
    score_t = None if score_t is None else float(scalar(score_t))
    center = bool(int(attrs.get("center_point_box", 0)))
    rows = []
    for b in range(boxes.shape[0]):
        corners = _corners(boxes[b], center)
        for c in range(scores.shape[1]):
            s = scores[b, c].astype(np.float64)
            cand = np.arange(s.size) if score_t is None else np.nonzero(s > score_t)[0]
            cand = cand[np.argsort(-s[cand], kind="stable")]
            kept: list = []
            for i in cand:
                if len(kept) >= limit:
                    break
                if kept and np.any(_iou(corners[i], corners[kept]) > iou_t):
                    continue
                kept.append(int(i))
            rows.extend((b, c, i) for i in kept)
    return [np.array(rows, np.int64).reshape(-1, 3)]


KERNELS = {"NonMaxSuppression": non_max_suppression}
