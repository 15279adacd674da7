"""COCO-style keypoint evaluation: rescoring, OKS-NMS, results JSON, OKS AP/AR.

The pipeline is the official top-down one (SimpleBaseline / HRNet `lib/dataset/coco.py`):

1. rescoring: instance score = box score x mean of the keypoint scores above
   `keypoint_score_thr` (0.2); 0 when no keypoint passes (as the official code);
2. OKS-NMS per image at `oks_nms_thr` (0.9), hard by default, Gaussian soft-OKS-NMS optional;
3. COCO results JSON (`image_id`, `category_id`, flat `keypoints`, `score`, plus `center` / `scale`
   when given), written atomically when `out_dir` is set;
4. OKS AP/AR by pycocotools `COCOeval(iouType="keypoints")` with the metadata's sigmas; for
   CrowdPose by xtcocotools `COCOeval(iouType="keypoints_crowd", sigmas, use_area=False)`, which
   adds AP by crowd level (easy / medium / hard = image `crowdIndex` < 0.2 / <= 0.8 / above).

Predictions are a list of per-instance dicts (what `engine.evaluate.predict` returns):

    image_id    int, an image of the annotation file
    keypoints   [K, 3] image pixels (x, y, score of the joint)
    area        float, box area in image pixels (OKS-NMS normaliser)
    bbox_score  float, detector score (1 for ground-truth boxes); default 1 when absent
    score       optional float: the instance's score as it is, no rescoring (bottom-up person scores)
    center, scale  optional, [2] each, copied into the results JSON

pycocotools' progress printing is captured and logged (logger `posedistill.evaluation.coco_eval`,
level INFO); the returned dict holds numbers only (-1 where pycocotools has no ground truth, e.g.
an area range without people).
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import os
import tempfile
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from posedistill.data.coco import read_json
from posedistill.keypoints import COCO, CROWDPOSE, KeypointMeta

__all__ = [
    "COCO_METRICS", "CROWDPOSE_METRICS", "oks_iou", "oks_nms", "soft_oks_nms", "rescore",
    "coco_results", "write_coco_results", "evaluate_coco",
]

log = logging.getLogger(__name__)

COCO_METRICS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
CROWDPOSE_METRICS = ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP(E)", "AP(M)", "AP(H)")


# ---------------------------------------------------------------------------------------- OKS-NMS

def oks_iou(g: np.ndarray, d: np.ndarray, area_g: float, area_d: np.ndarray, sigmas: Sequence[float],
            vis_thr: float | None = None) -> np.ndarray:
    """OKS between one pose g [K, 3] and poses d [N, K, 3] (x, y, score), as the official NMS:
    mean over joints of exp(-d^2 / (2 * mean_area * (2 sigma)^2)), mean_area = (area_g + area_d) / 2.
    With `vis_thr`, only joints scored above it in both poses count (0 when none does)."""
    g = np.asarray(g, dtype=np.float64)
    d = np.asarray(d, dtype=np.float64).reshape(-1, *g.shape)
    var = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2                       # [K]
    area = (area_g + np.asarray(area_d, dtype=np.float64).reshape(-1)) / 2.0 + np.spacing(1)
    sq = ((d[..., :2] - g[None, :, :2]) ** 2).sum(-1)                              # [N, K]
    e = np.exp(-sq / var[None] / area[:, None] / 2.0)
    if vis_thr is None:
        return e.mean(axis=1)
    mask = (g[None, :, 2] > vis_thr) & (d[..., 2] > vis_thr)
    n = mask.sum(axis=1)
    return np.where(n > 0, (e * mask).sum(axis=1) / np.maximum(n, 1), 0.0)


def oks_nms(keypoints: np.ndarray, scores: np.ndarray, areas: np.ndarray, thr: float,
            sigmas: Sequence[float], vis_thr: float | None = None) -> list[int]:
    """Greedy OKS-NMS: keep the best-scored pose, drop the others whose OKS with it exceeds `thr`,
    repeat. keypoints [N, K, 3], scores [N], areas [N] -> kept indices, best first."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        ovr = oks_iou(keypoints[i], keypoints[order[1:]], areas[i], areas[order[1:]], sigmas, vis_thr)
        order = order[1:][ovr <= thr]
    return keep


def soft_oks_nms(keypoints: np.ndarray, scores: np.ndarray, areas: np.ndarray, thr: float,
                 sigmas: Sequence[float], vis_thr: float | None = None, max_dets: int = 20) -> list[int]:
    """Soft OKS-NMS (official `soft_oks_nms`): instead of dropping overlapping poses, decay their
    ranking score by exp(-oks^2 / thr) and re-sort; keeps at most `max_dets` poses. Kept poses
    keep their original scores (only the order of selection uses the decayed ones)."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    rank = scores[order]
    keep: list[int] = []
    while order.size and len(keep) < max_dets:
        i = int(order[0])
        keep.append(i)
        ovr = oks_iou(keypoints[i], keypoints[order[1:]], areas[i], areas[order[1:]], sigmas, vis_thr)
        order, rank = order[1:], rank[1:] * np.exp(-ovr ** 2 / thr)
        resort = np.argsort(-rank, kind="stable")
        order, rank = order[resort], rank[resort]
    return keep


def rescore(keypoints: np.ndarray, bbox_score: float, keypoint_score_thr: float = 0.2) -> float:
    """Official top-down rescoring: box score x mean of the joint scores above the threshold
    (0 when no joint passes). keypoints [K, 3]."""
    s = np.asarray(keypoints, dtype=np.float64)[:, 2]
    good = s[s > keypoint_score_thr]
    return float(bbox_score) * (float(good.mean()) if good.size else 0.0)


# ---------------------------------------------------------------------------------------- results

def _check_predictions(predictions, k: int, image_ids: set | None, where: str) -> None:
    if not isinstance(predictions, (list, tuple)):
        raise ValueError(f"{where}: predictions must be a list of per-instance dicts, got {type(predictions).__name__}")
    for i, p in enumerate(predictions):
        if not isinstance(p, dict):
            raise ValueError(f"{where}: prediction {i} must be a dict, got {type(p).__name__}")
        for key in ("image_id", "keypoints", "area"):
            if key not in p:
                raise ValueError(f"{where}: prediction {i} has no {key!r} (expected keys image_id, keypoints "
                                 f"[K, 3], area, bbox_score, optional center / scale)")
        kp = np.asarray(p["keypoints"], dtype=np.float64)
        if kp.shape != (k, 3):
            raise ValueError(f"{where}: prediction {i} (image {p['image_id']}) has keypoints of shape {kp.shape}, "
                             f"expected ({k}, 3) = (x, y, score) for the {k} joints of the annotation file")
        if not np.isfinite(kp).all():
            raise ValueError(f"{where}: prediction {i} (image {p['image_id']}) has NaN / infinite keypoints")
        if image_ids is not None and int(p["image_id"]) not in image_ids:
            raise ValueError(f"{where}: prediction {i} is for image_id {p['image_id']}, which the annotation "
                             f"file does not list")


def coco_results(predictions: list[dict], sigmas: Sequence[float], category_id: int = 1,
                 oks_nms_thr: float = 0.9, keypoint_score_thr: float = 0.2, soft_nms: bool = False,
                 nms_vis_thr: float | None = None) -> list[dict]:
    """Rescored, OKS-NMS-filtered predictions in the COCO results format (list of dicts)."""
    k = len(sigmas)
    _check_predictions(predictions, k, None, "coco_results")
    per_image: dict[int, list[dict]] = defaultdict(list)
    for p in predictions:
        per_image[int(p["image_id"])].append(p)
    out = []
    nms = soft_oks_nms if soft_nms else oks_nms
    for image_id in sorted(per_image):
        group = per_image[image_id]
        kps = np.stack([np.asarray(p["keypoints"], dtype=np.float64) for p in group])
        scores = np.array([float(p["score"]) if "score" in p else
                           rescore(kp, float(p.get("bbox_score", 1.0)), keypoint_score_thr) for kp, p in zip(kps, group)])
        areas = np.array([float(p["area"]) for p in group])
        keep = nms(kps, scores, areas, oks_nms_thr, sigmas, nms_vis_thr) if len(group) > 1 else [0]
        for i in keep:
            r = {"image_id": image_id, "category_id": int(category_id),
                 "keypoints": [round(float(v), 3) for v in kps[i].reshape(-1)], "score": float(scores[i])}
            for key in ("center", "scale"):
                if key in group[i]:
                    r[key] = [float(v) for v in np.asarray(group[i][key]).reshape(-1)]
            out.append(r)
    return out


def write_coco_results(results: list[dict], path: str | os.PathLike) -> Path:
    """Write COCO results JSON atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(results, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


# ---------------------------------------------------------------------------------------- COCOeval

def _load_annotations(ann_file) -> dict:
    path = str(ann_file)
    data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(data.get(key), list)
                                             for key in ("images", "annotations", "categories")):
        raise ValueError(f"{path}: expected a COCO keypoint file with lists 'images', 'annotations', 'categories'")
    return data


def _person_category(data: dict, path: str) -> tuple[int, int]:
    cats = [c for c in data["categories"] if isinstance(c, dict) and isinstance(c.get("keypoints"), list)]
    if not cats:
        raise ValueError(f"{path}: no category with a 'keypoints' list in 'categories'")
    return int(cats[0]["id"]), len(cats[0]["keypoints"])


def evaluate_coco(predictions: list[dict], ann_file: str | os.PathLike, meta: KeypointMeta | None = None,
                  out_dir: str | os.PathLike | None = None, oks_nms_thr: float = 0.9,
                  keypoint_score_thr: float = 0.2, soft_nms: bool = False, crowdpose: bool | None = None,
                  results_name: str = "keypoint_results.json", allow_empty: bool = False) -> dict[str, float]:
    """OKS AP/AR of image-pixel predictions (format in the module docstring) against a COCO-format
    keypoint file.

    meta: joint metadata (sigmas); default from the file's joint count (17 -> COCO, 14 -> CrowdPose).
    crowdpose: use xtcocotools' CrowdPose protocol; default: when meta is CrowdPose or the file's
    images carry `crowdIndex`. allow_empty: no predictions give 0 everywhere (a bottom-up model that
    finds nobody) instead of an error. Returns COCO_METRICS or CROWDPOSE_METRICS keys -> float."""
    path = str(ann_file)
    data = _load_annotations(path)
    category_id, k = _person_category(data, path)
    if meta is None:
        by_k = {COCO.num_joints: COCO, CROWDPOSE.num_joints: CROWDPOSE}
        if k not in by_k:
            raise ValueError(f"{path}: {k} joints per person; pass meta= (a KeypointMeta with {k} joints) "
                             f"to give the OKS sigmas")
        meta = by_k[k]
    if meta.num_joints != k:
        raise ValueError(f"{path}: the person category has {k} keypoints but meta {meta.name!r} has "
                         f"{meta.num_joints} joints")
    if crowdpose is None:
        crowdpose = meta.name == "crowdpose" or any("crowdIndex" in im for im in data["images"])
    if not predictions and not allow_empty:
        raise ValueError(f"evaluate_coco: no predictions to evaluate against {path}")
    if not predictions:      # a bottom-up model that finds nobody: every precision and recall is 0
        log.info("no predictions to evaluate against %s: every metric is 0", path)
        return {name: 0.0 for name in (CROWDPOSE_METRICS if crowdpose else COCO_METRICS)}
    image_ids = {int(im["id"]) for im in data["images"]}
    _check_predictions(predictions, k, image_ids, f"evaluate_coco({Path(path).name})")

    results = coco_results(predictions, meta.sigmas, category_id, oks_nms_thr, keypoint_score_thr, soft_nms)
    if out_dir is not None:
        write_coco_results(results, Path(out_dir) / results_name)

    sigmas = np.asarray(meta.sigmas, dtype=np.float64)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        if crowdpose:
            from xtcocotools.coco import COCO as XCOCO
            from xtcocotools.cocoeval import COCOeval as XCOCOeval

            gt = XCOCO(path)       # from the path: its AP(E/M/H) split re-reads the file's crowdIndex
            dt = gt.loadRes(copy.deepcopy(results))
            ev = XCOCOeval(gt, dt, "keypoints_crowd", sigmas, use_area=False)
        else:
            from pycocotools.coco import COCO as PCOCO
            from pycocotools.cocoeval import COCOeval as PCOCOeval

            missing = [a.get("id") for a in data["annotations"] if "area" not in a]
            if missing:
                # COCOeval needs a ground-truth area; use the CrowdPose convention (box w x h x 0.53)
                warnings.warn(f"{path}: {len(missing)} annotation(s) have no 'area'; using box w x h x 0.53",
                              stacklevel=2)
                data = copy.deepcopy(data)
                for a in data["annotations"]:
                    if "area" not in a:
                        a["area"] = float(a["bbox"][2]) * float(a["bbox"][3]) * 0.53
            gt = PCOCO()
            gt.dataset = data
            gt.createIndex()
            dt = gt.loadRes(copy.deepcopy(results))
            ev = PCOCOeval(gt, dt, "keypoints")
            ev.params.useSegm = None
            ev.params.kpt_oks_sigmas = sigmas
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    log.info("OKS evaluation of %d results against %s:\n%s", len(results), path, buf.getvalue())
    names = CROWDPOSE_METRICS if crowdpose else COCO_METRICS
    stats = [float(v) for v in ev.stats]
    if len(stats) != len(names):
        raise RuntimeError(f"COCOeval returned {len(stats)} statistics, expected {len(names)} ({names})")
    return {name: (v if math.isfinite(v) else -1.0) for name, v in zip(names, stats)}
