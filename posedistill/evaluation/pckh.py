"""MPII PCKh (Andriluka et al. CVPR 2014), computed as the HRNet / SimpleBaseline `mpii.py` does.

A joint is correct when its distance to the ground truth is at most `threshold` x the person's
head size (0.6 x head-box diagonal, `SC_BIAS`). Per-joint PCKh = 100 x correct / labelled. The
table follows the official one:

* Head = head_top; Shoulder, Elbow, Wrist, Hip, Knee, Ankle = mean of the left and right joints'
  PCKh. (The official script reports head_top alone as "Head"; upper_neck enters only the mean.)
* Mean = joint-count-weighted mean over all joints except pelvis and thorax, i.e. correct /
  labelled over the 14 remaining joints (pelvis and thorax are masked out as in the official code).
* Mean@0.1 = the same at threshold 0.1.

Joint order is MPII's (`posedistill.keypoints.MPII`). People whose head size is not positive
(no head box) cannot be scored; their joints are left out and counted in "people_skipped".
"""
from __future__ import annotations

import math
import os

import numpy as np

from posedistill.data.mpii import load_mpii, read_head_boxes_mat
from posedistill.keypoints import MPII

__all__ = ["GROUPS", "pckh", "evaluate_pckh", "format_pckh_table"]

# table rows: name -> MPII joint indices averaged (official `name_value` of mpii.py)
GROUPS: dict[str, tuple[int, ...]] = {
    "Head": (9,),            # head_top
    "Shoulder": (12, 13),
    "Elbow": (11, 14),
    "Wrist": (10, 15),
    "Hip": (2, 3),
    "Knee": (1, 4),
    "Ankle": (0, 5),
}
EXCLUDED = (6, 7)            # pelvis, thorax: not in the mean


def _per_joint(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, head_size: np.ndarray,
               threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(correct counts [K], labelled counts [K]) over the people with a positive head size."""
    err = np.linalg.norm(pred - gt, axis=-1)                                   # [N, K]
    size = np.where(head_size > 0, head_size, 1.0)[:, None]
    vis = visible & (head_size > 0)[:, None]
    correct = (err / size <= threshold) & vis
    return correct.sum(axis=0).astype(np.float64), vis.sum(axis=0).astype(np.float64)


def pckh(pred, gt, visible, head_size, threshold: float = 0.5, extra_thresholds: tuple[float, ...] = (0.1,)
         ) -> dict[str, float]:
    """PCKh by joint group, in percent.

    pred, gt: [N, 16, 2] in the same pixels; visible: [N, 16] (bool / >0 = labelled);
    head_size: [N] pixels. Returns {"Head", "Shoulder", ..., "Ankle", "Mean", "Mean@0.1",
    "people_skipped"}; a group none of whose joints is labelled anywhere is NaN."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    k = MPII.num_joints
    if gt.ndim != 3 or gt.shape[1:] != (k, 2):
        raise ValueError(f"pckh: gt must be [N, {k}, 2] (MPII joint order), got shape {gt.shape}")
    if pred.shape != gt.shape:
        raise ValueError(f"pckh: pred has shape {pred.shape}, expected {gt.shape} like gt")
    n = gt.shape[0]
    vis = np.asarray(visible)
    if vis.shape != (n, k):
        raise ValueError(f"pckh: visible must be [{n}, {k}], got shape {vis.shape}")
    size = np.asarray(head_size, dtype=np.float64).reshape(-1)
    if size.shape != (n,):
        raise ValueError(f"pckh: head_size must have {n} entries (one per person), got {size.shape[0]}")
    if not (np.isfinite(pred).all() and np.isfinite(size).all()):
        raise ValueError("pckh: pred / head_size contain NaN or infinite values")
    if not threshold > 0:
        raise ValueError(f"pckh: threshold must be > 0, got {threshold}")
    vis = vis > 0

    correct, count = _per_joint(pred, gt, vis, size, threshold)
    with np.errstate(invalid="ignore", divide="ignore"):
        joint = 100.0 * correct / count                                         # NaN where count 0
    out: dict[str, float] = {}
    for name, idx in GROUPS.items():
        vals = joint[list(idx)]
        vals = vals[np.isfinite(vals)]
        out[name] = float(vals.mean()) if vals.size else math.nan
    keep = np.array([j not in EXCLUDED for j in range(k)])

    def mean_of(c: np.ndarray, t: np.ndarray) -> float:
        total = t[keep].sum()
        return float(100.0 * c[keep].sum() / total) if total > 0 else math.nan

    out["Mean"] = mean_of(correct, count)
    for thr in extra_thresholds:
        c, t = _per_joint(pred, gt, vis, size, thr)
        out[f"Mean@{thr:g}"] = mean_of(c, t)
    out["people_skipped"] = float((size <= 0).sum())
    return out


def evaluate_pckh(predictions: list[dict], ann_file: str | os.PathLike, head_boxes: str | os.PathLike | None = None,
                  threshold: float = 0.5) -> dict[str, float]:
    """PCKh of image-pixel predictions against an HRNet-format MPII JSON.

    predictions: dicts with "ann_id" (the entry's position in the JSON, as `data/mpii.py` sets it)
    and "keypoints" [16, 2 or 3] in 0-based image pixels. head_boxes: the official
    `mpii_gt_val.mat`; then its joints, `jnt_missing` and head boxes are used, as the official
    evaluation (otherwise head sizes come from the JSON, see `data/mpii.py`). Every entry of the
    file must have exactly one prediction."""
    instances, source = load_mpii(ann_file, "", head_boxes=head_boxes)
    n, k = len(instances), MPII.num_joints
    pred = np.full((n, k, 2), np.nan)
    for i, p in enumerate(predictions):
        if "ann_id" not in p or "keypoints" not in p:
            raise ValueError(f"evaluate_pckh: prediction {i} needs 'ann_id' (entry index in {ann_file}) and "
                             f"'keypoints' [{k}, 2 or 3]")
        a = int(p["ann_id"])
        if not 0 <= a < n:
            raise ValueError(f"evaluate_pckh: prediction {i} has ann_id {a}, but {ann_file} has entries 0..{n - 1}")
        kp = np.asarray(p["keypoints"], dtype=np.float64)
        if kp.ndim != 2 or kp.shape[0] != k or kp.shape[1] < 2:
            raise ValueError(f"evaluate_pckh: prediction {i} has keypoints of shape {kp.shape}, expected ({k}, 3)")
        if np.isfinite(pred[a]).all():
            raise ValueError(f"evaluate_pckh: two predictions for entry {a} of {ann_file}")
        pred[a] = kp[:, :2]
    missing = np.flatnonzero(~np.isfinite(pred).all(axis=(1, 2)))
    if missing.size:
        raise ValueError(f"evaluate_pckh: {missing.size} of the {n} entries of {ann_file} have no prediction "
                         f"(first: {missing[:5].tolist()})")
    if source == "mat":
        _, pos_gt, jnt_missing = read_head_boxes_mat(head_boxes)
        gt = np.transpose(pos_gt, (2, 0, 1)) - 1.0                              # 1-based -> 0-based
        visible = (jnt_missing == 0).T
    else:
        gt = np.stack([inst.keypoints[:, :2] for inst in instances]).astype(np.float64)
        visible = np.stack([inst.keypoints[:, 2] > 0 for inst in instances])
    sizes = np.array([inst.head_size for inst in instances])
    out = pckh(pred, gt, visible, sizes, threshold)
    out["head_size_from_mat"] = float(source == "mat")
    return out


def format_pckh_table(metrics: dict[str, float], title: str = "") -> str:
    """Markdown table row of the official layout: | Head | Shoulder | ... | Mean | Mean@0.1 |."""
    cols = list(GROUPS) + ["Mean"] + sorted(k for k in metrics if k.startswith("Mean@"))
    head = "| " + " | ".join(([""] if title else []) + cols) + " |"
    rule = "|" + "|".join("---" for _ in range(len(cols) + bool(title))) + "|"
    vals = [f"{metrics[c]:.2f}" if c in metrics and math.isfinite(metrics[c]) else "-" for c in cols]
    row = "| " + " | ".join(([title] if title else []) + vals) + " |"
    return "\n".join((head, rule, row))
