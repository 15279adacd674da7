"""Built-in synthetic multi-person pose data (`posedistill data synth`, `posedistill data video`).

Writes images with exact keypoint truth in the formats of the real datasets, so every reader,
evaluator and recipe of the toolkit runs on them unchanged:

    OUT/images/000000000001.jpg ...
    OUT/annotations/person_keypoints_<split>.json   COCO keypoints (17 joints) or CrowdPose (14 joints,
                                                     per-image `crowdIndex`)
    OUT/annotations/detections_<split>.json         COCO results format (image_id, category_id, bbox,
                                                     score): jittered boxes, misses, false positives
    OUT/annotations/mpii_<split>.json               MPII, HRNet-code layout (instead of the two above)
    OUT/annotations/complete_keypoints_<split>.json only when a label defect (below) is asked for:
                                                     the full truth

The figures and scenes are drawn by `synth_render.py`. Everything is a pure function of the seed:
image i uses the generator `numpy.random.default_rng([seed, 0, i])`, so the same seed gives
byte-identical images and JSON (sorted keys, coordinates rounded to 2 decimals).

Label defects. Kato et al., "Improving Multi-Person Pose Estimation using Label Correction" (seed
004, section 3.1) name four ways COCO labels fail a bottom-up (PAF) learner; each has its own knob
here, is off by default, and changes the annotation files only, never the images:

(a) `truncation_rate`: people placed partly outside the image (15-60% of their extent along one
    axis stays inside). Their joints outside the image are unlabelled (COCO: v = 0, x = y = 0), so
    the limbs that cross the border get no PAF. Unlike the other knobs this changes the scenes: it
    replaces the difficulty preset's `truncation_prob` and keeps every other person inside the image
    (`SceneConfig.keep_inside`), so 0 means nobody crosses the border. None keeps the preset
    (medium: 15% truncated, and about 5% more cross the border by placement).
(b) `occluded_unlabelled`: hidden joints (v = 1 in the full truth: behind another person, an
    object or the person's own body) left unlabelled; exactly round(rate x hidden joints).
(c) `missing_keypoint_rate`: visible joints (v = 2) left unlabelled; exactly round(rate x visible
    joints), chosen at random over the whole set.
(d) `missing_person_rate`: whole people left out of the annotations, exactly round(rate x people),
    with no crowd / ignore region over them: a loader has no way to mask them.

Each knob draws from its own random stream over the full truth, so turning one on or changing its
rate never changes what another one picks; when two pick the same label it is simply gone once.
A person whose labels all went stays annotated with num_keypoints 0, as COCO does.

`crowd_rate` is not a defect but its correct counterpart: that fraction of the people (chosen
among those (d) leaves) is released as a COCO crowd region (iscrowd 1, uncompressed-RLE
segmentation of its visible pixels, no keypoints), which bottom-up loaders mask out of the loss
(`data.bottomup`). People with few labelled joints or a small area, the other thing those loaders
mask, occur by themselves (small, truncated and occluded people) and carry `num_keypoints`, `area`
and a segmentation like everyone else.

`missing_label_rate` R (the older knob, unchanged): exactly round(R x labelled joints) labels
disappear, about a quarter of that budget by dropping whole people (as (d)) and the rest as single
joints, visible or hidden alike (as (b) and (c) mixed). It composes with the knobs above.

Whenever any of these is on, `complete_keypoints_<split>.json` holds the full truth: every person
with all its in-image labels, plus `amodal_keypoints`, which also gives the joints outside the image
(v = 1, their true position; defect (a)). Nothing is applied unless asked, so a held-out split
generated without these arguments is labelled completely.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from posedistill.data import synth_render as R
from posedistill.errors import InputError
from posedistill.keypoints import COCO, CROWDPOSE, MPII, KeypointMeta
from posedistill.vis import draw_poses, save_grid

FORMATS: dict[str, KeypointMeta] = {"coco": COCO, "crowdpose": CROWDPOSE, "mpii": MPII}
# Scene points (synth_render indices) that make each format's joints, in its annotation order.
FORMAT_POINTS: dict[str, list[int]] = {
    "coco": list(range(R.NUM_COCO)),
    "crowdpose": [R.L_SHO, R.R_SHO, R.L_ELB, R.R_ELB, R.L_WRI, R.R_WRI, R.L_HIP, R.R_HIP,
                  R.L_KNE, R.R_KNE, R.L_ANK, R.R_ANK, R.HEAD_TOP, R.NECK],
    # thorax = shoulder midpoint, pelvis = hip midpoint, upper_neck = under the chin.
    "mpii": [R.R_ANK, R.R_KNE, R.R_HIP, R.L_HIP, R.L_KNE, R.L_ANK, R.PELVIS, R.NECK, R.CHIN, R.HEAD_TOP,
             R.R_WRI, R.R_ELB, R.R_SHO, R.L_SHO, R.L_ELB, R.L_WRI],
}
for _f, _pts in FORMAT_POINTS.items():
    assert len(_pts) == FORMATS[_f].num_joints, _f


@dataclass(frozen=True)
class DetectorNoise:
    """How the simulated person detector errs."""
    miss_rate: float = 0.05          # base probability of missing a person
    jitter: float = 0.06             # std of the box-centre shift, fraction of box size
    size_jitter: float = 0.1         # std of the log box-size change
    duplicate_rate: float = 0.15     # a second, worse box on the same person
    false_positives: float = 0.5     # mean false-positive boxes per image (Poisson)


DETECTOR: dict[str, DetectorNoise] = {
    "easy": DetectorNoise(miss_rate=0.02, jitter=0.04, size_jitter=0.06, duplicate_rate=0.1, false_positives=0.2),
    "medium": DetectorNoise(),
    "hard": DetectorNoise(miss_rate=0.1, jitter=0.08, size_jitter=0.14, duplicate_rate=0.2, false_positives=1.0),
}


@dataclass
class SynthResult:
    """What `generate_dataset` wrote (paths) and, on request, the visible-pixel masks."""
    out_dir: Path
    image_dir: Path
    ann_file: Path
    det_file: Path | None                  # None for mpii
    complete_ann_file: Path | None         # the full truth, written when a label defect is on
    num_images: int
    num_people: int                        # people annotated in the full truth
    masks: dict[int, np.ndarray] | None    # annotation id -> [H, W] bool visible mask (return_masks=True)
    complete: list[dict] | None = None     # full-truth records (return_masks=True): see `_person_record`
    preview: Path | None = None


def _r2(x: float) -> float:
    v = round(float(x), 2)
    return 0.0 if v == 0 else v   # no "-0.0"


def _dump(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, sort_keys=True, separators=(",", ":")))


def _polygons(mask: np.ndarray, box: tuple[int, int, int, int]) -> list[list[float]]:
    x0, y0, x1, y1 = box
    contours, _ = cv2.findContours(mask[y0:y1, x0:x1].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = [(c.reshape(-1, 2) + np.array([x0, y0])).astype(np.float64).ravel().tolist()
             for c in contours if len(c) >= 3]
    if not polys:   # a sliver: the box as a polygon keeps pycocotools' mask conversion working
        polys = [[x0, y0, x1, y0, x1, y1, x0, y1]]
    return [[float(v) for v in p] for p in polys]


def _head_box(person: R.Person) -> list[float]:
    a, b, ang = person.head_axes
    c, s = math.cos(math.radians(ang)), math.sin(math.radians(ang))
    hx, hy = math.hypot(a * c, b * s), math.hypot(a * s, b * c)
    cx, cy = person.points[R.HEAD_C]
    return [cx - hx, cy - hy, cx + hx, cy + hy]


def _amodal_points(scene: R.Scene, index: int) -> np.ndarray:
    """The person's scene points [26, 3] with the labelled points outside the image added back at
    their true position with v = 1 (eyes / nose of a head turned away stay unlabelled, as inside)."""
    pts = scene.points[index].copy()
    person = scene.persons[index]
    h, w = scene.label.shape
    for j in R.LABELLED_POINTS:
        x, y = person.points[j]
        if pts[j, 2] > 0 or (0 <= math.floor(x + 0.5) < w and 0 <= math.floor(y + 0.5) < h):
            continue
        if j <= R.R_EYE and R.face_facing(person, j) <= R.FACE_THRESH[j] and person.head_frame[2][2] > 0.5:
            continue
        pts[j] = (x, y, 1.0)
    return pts


def _person_record(scene: R.Scene, index: int, mask: np.ndarray, ann_id: int, image_id: int,
                   with_segmentation: bool) -> dict:
    """Full truth of one person: scene points [26, 3], visible box / area / polygons, head box,
    amodal box of all points (x0, y0, x1, y1)."""
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    person = scene.persons[index]
    amodal = np.concatenate([person.points, person.torso])
    rec = {"id": ann_id, "image_id": image_id, "points": scene.points[index].copy(),
           "amodal_points": _amodal_points(scene, index),
           "bbox": [x0, y0, x1 - x0, y1 - y0], "area": int(xs.size), "head_box": _head_box(person),
           "amodal": [*amodal.min(0), *amodal.max(0)]}
    rec["segmentation"] = _polygons(mask, (x0, y0, x1, y1)) if with_segmentation else None
    return rec


def format_keypoints(points: np.ndarray, fmt: str) -> np.ndarray:
    """Scene points [..., 26, 3] -> the format's keypoints [..., K, 3]; unlabelled joints are 0."""
    return points[..., FORMAT_POINTS[fmt], :].copy()


def drop_labels(kps: list[np.ndarray], rate: float, rng: np.random.Generator,
                person_share: float = 0.25) -> tuple[list[bool], list[np.ndarray]]:
    """Remove exactly round(rate x labelled joints) labels: whole people first (about `person_share`
    of the budget), then single joints. kps: per person [K, 3] with v > 0 labelled. Returns
    (kept flags per person, new keypoint arrays)."""
    if not 0.0 <= rate <= 1.0:
        raise InputError(f"missing_label_rate must be in [0, 1], got {rate}")
    counts = np.array([int((k[:, 2] > 0).sum()) for k in kps])
    budget = int(round(rate * counts.sum()))
    keep = [True] * len(kps)
    out = [k.copy() for k in kps]
    dropped = 0
    for p in rng.permutation(len(kps)):
        if counts[p] == 0:
            continue
        if dropped + counts[p] > person_share * budget:
            break
        keep[p] = False
        dropped += int(counts[p])
    cand = [(p, j) for p in range(len(kps)) if keep[p] for j in np.flatnonzero(out[p][:, 2] > 0)]
    need = budget - dropped
    if need > 0:
        for c in rng.choice(len(cand), size=min(need, len(cand)), replace=False):
            p, j = cand[int(c)]
            out[p][j] = 0.0
    return keep, out


# Random streams of the label knobs: numpy.random.default_rng([seed, stream]); 2 is drop_labels'.
_STREAMS = {"occluded_unlabelled": 7, "missing_keypoint_rate": 8, "missing_person_rate": 9, "crowd_rate": 10}


@dataclass(frozen=True)
class LabelDefects:
    """What `generate_dataset` leaves out of (or marks in) the released labels; see the module doc.
    All rates are in [0, 1]; the default is complete labels. `truncation_rate` is not here: it
    changes the scenes, not the labels."""
    missing_label_rate: float = 0.0      # older mixed knob: joints budget, a quarter as whole people
    occluded_unlabelled: float = 0.0     # (b) hidden joints (v = 1) unlabelled; True = 1.0
    missing_keypoint_rate: float = 0.0   # (c) visible joints (v = 2) unlabelled
    missing_person_rate: float = 0.0     # (d) whole people left out, no ignore region
    crowd_rate: float = 0.0              # people released as crowd regions (iscrowd 1) instead

    def __post_init__(self) -> None:
        if isinstance(self.occluded_unlabelled, bool):     # True: every hidden joint
            object.__setattr__(self, "occluded_unlabelled", float(self.occluded_unlabelled))
        for name in ("missing_label_rate", "occluded_unlabelled", "missing_keypoint_rate",
                     "missing_person_rate", "crowd_rate"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise InputError(f"{name} must be a number in [0, 1], got {v!r}")

    @property
    def any(self) -> bool:
        return any(getattr(self, f) > 0 for f in ("missing_label_rate", "occluded_unlabelled",
                                                   "missing_keypoint_rate", "missing_person_rate", "crowd_rate"))


def _pick(n: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Exactly round(rate x n) distinct indices in [0, n), at random."""
    k = int(round(rate * n))
    return rng.choice(n, size=k, replace=False) if k > 0 else np.zeros(0, np.int64)


def release_labels(full: list[np.ndarray], defects: LabelDefects, seed: int) -> tuple[list[str], list[np.ndarray]]:
    """The released labels of people with full-truth keypoints `full` (per person [K, 3], v as COCO).
    Returns (status per person: "labelled", "removed" (left out, no ignore region) or "crowd",
    released keypoints per person, unlabelled joints (0, 0, 0)). Each knob picks from the full truth
    with its own random stream (module doc)."""
    if defects.missing_label_rate > 0:
        keep, out = drop_labels(full, defects.missing_label_rate, np.random.default_rng([seed, 2]))
    else:
        keep, out = [True] * len(full), [k.copy() for k in full]
    for knob, flag in (("occluded_unlabelled", 1), ("missing_keypoint_rate", 2)):
        rate = getattr(defects, knob)
        if rate > 0:
            cand = [(p, j) for p, k in enumerate(full) for j in np.flatnonzero(k[:, 2] == flag)]
            for c in _pick(len(cand), rate, np.random.default_rng([seed, _STREAMS[knob]])):
                p, j = cand[int(c)]
                out[p][j] = 0.0
    status = ["labelled" if k else "removed" for k in keep]
    for knob, mark in (("missing_person_rate", "removed"), ("crowd_rate", "crowd")):
        rate = getattr(defects, knob)
        for p in (_pick(len(full), rate, np.random.default_rng([seed, _STREAMS[knob]])) if rate > 0 else ()):
            if status[int(p)] == "labelled":
                status[int(p)] = mark
    return status, out


def crowd_index(kps: list[np.ndarray], boxes: list[Sequence[float]]) -> float:
    """CrowdPose crowd index: mean over people of (other people's labelled joints inside the
    person's box) / (own labelled joints)."""
    ratios = []
    for i, (k, (x, y, w, h)) in enumerate(zip(kps, boxes)):
        own = int((k[:, 2] > 0).sum())
        if own == 0:
            continue
        other = 0
        for j, kj in enumerate(kps):
            if j != i:
                lab = kj[kj[:, 2] > 0]
                other += int(((lab[:, 0] >= x) & (lab[:, 0] <= x + w) & (lab[:, 1] >= y) & (lab[:, 1] <= y + h)).sum())
        ratios.append(other / own)
    return float(np.mean(ratios)) if ratios else 0.0


def simulate_detections(rng: np.random.Generator, records: list[dict], image_id: int, size: tuple[int, int],
                        noise: DetectorNoise) -> list[dict]:
    """COCO-results boxes for one image from the true visible boxes."""
    w, h = size
    dets = []

    def clip_box(x, y, bw, bh):
        x0, y0 = min(max(x, 0.0), w - 1.0), min(max(y, 0.0), h - 1.0)
        x1, y1 = min(max(x + bw, x0 + 1.0), float(w)), min(max(y + bh, y0 + 1.0), float(h))
        return [_r2(x0), _r2(y0), _r2(x1 - x0), _r2(y1 - y0)]

    for rec in records:
        x, y, bw, bh = (float(v) for v in rec["bbox"])
        nvis = int((rec["points"][:R.NUM_COCO, 2] == 2).sum())
        p_miss = noise.miss_rate + (0.25 if bw * bh < 32 * 32 else 0.0) + 0.2 * max(0.0, 1 - nvis / 5)
        if rng.random() < p_miss:
            continue
        for dup in range(2 if rng.random() < noise.duplicate_rate else 1):
            k = 1.0 + 1.5 * dup
            dc = rng.normal(0, noise.jitter * k, 2)
            ds = np.exp(rng.normal(0, noise.size_jitter * k, 2))
            nw, nh = bw * ds[0], bh * ds[1]
            cx, cy = x + bw / 2 + dc[0] * bw, y + bh / 2 + dc[1] * bh
            err = float(np.abs(dc).sum() + np.abs(np.log(ds)).sum())
            score = float(np.clip(0.99 - 1.5 * err + rng.normal(0, 0.04), 0.05, 1.0)) * (0.5 if dup else 1.0)
            dets.append({"image_id": image_id, "category_id": 1, "bbox": clip_box(cx - nw / 2, cy - nh / 2, nw, nh),
                         "score": round(max(score, 0.01), 4)})
    for _ in range(int(rng.poisson(noise.false_positives))):
        bh = rng.uniform(0.05, 0.5) * h
        bw = bh * rng.uniform(0.3, 0.9)
        dets.append({"image_id": image_id, "category_id": 1,
                     "bbox": clip_box(rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh),
                     "score": round(float(rng.uniform(0.05, 0.6)), 4)})
    dets.sort(key=lambda d: -d["score"])
    return dets


def scene_config(difficulty: str, **overrides) -> R.SceneConfig:
    if difficulty not in R.DIFFICULTY:
        raise InputError(f"difficulty must be one of {sorted(R.DIFFICULTY)}, got {difficulty!r}")
    return replace(R.DIFFICULTY[difficulty], **overrides)


def texture_bank(seed: int) -> list[np.ndarray]:
    return R.make_texture_bank(np.random.default_rng([seed, 1]))


def render_image(seed: int, index: int, size: tuple[int, int], cfg: R.SceneConfig,
                 tiles: list[np.ndarray] | None = None) -> R.Scene:
    """Scene `index` of the dataset with this seed (what `generate_dataset` writes as image index+1)."""
    return R.render_scene(np.random.default_rng([seed, 0, index]), size, cfg,
                          texture_bank(seed) if tiles is None else tiles)


def _coco_annotation(rec: dict, kps: np.ndarray, fmt: str) -> dict:
    flat = []
    for x, y, v in kps:
        flat += [_r2(x), _r2(y), int(v)] if v > 0 else [0, 0, 0]
    ann = {"id": rec["id"], "image_id": rec["image_id"], "category_id": 1, "iscrowd": 0,
           "keypoints": flat, "num_keypoints": int((kps[:, 2] > 0).sum()),
           "bbox": [float(v) for v in rec["bbox"]], "area": float(rec["area"])}
    if rec["segmentation"] is not None:
        ann["segmentation"] = rec["segmentation"]
    return ann


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE of a bool [H, W] mask: run lengths over the column-major pixels,
    starting with a (possibly empty) run of zeros (what COCO crowd annotations hold)."""
    flat = mask.ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(edges).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def _crowd_annotation(rec: dict, k: int, size: tuple[int, int]) -> dict:
    """A person released as a COCO crowd region: its visible pixels (rasterised from the polygons,
    which are its mask's outer contours) as uncompressed RLE, no keypoints."""
    w, h = size
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(np.array(poly).reshape(-1, 2)).astype(np.int32) for poly in rec["segmentation"]], 1)
    return {"id": rec["id"], "image_id": rec["image_id"], "category_id": 1, "iscrowd": 1,
            "keypoints": [0] * (3 * k), "num_keypoints": 0, "bbox": [float(v) for v in rec["bbox"]],
            "area": float(rec["area"]), "segmentation": _uncompressed_rle(mask > 0)}


def _mpii_entry(rec: dict, kps: np.ndarray, file_name: str) -> dict:
    # MPII / HRNet JSON is 1-based (MATLAB): the HRNet loader subtracts 1 from joints and centre.
    x0, y0, x1, y1 = rec["amodal"]
    hb = rec["head_box"]
    return {"image": file_name, "center": [_r2((x0 + x1) / 2 + 1), _r2((y0 + y1) / 2 + 1)],
            "scale": round(max(x1 - x0, y1 - y0) / 200.0, 4),
            "joints": [[_r2(x + 1), _r2(y + 1)] if v > 0 else [-1.0, -1.0] for x, y, v in kps],
            "joints_vis": [int(v > 0) for v in kps[:, 2]],
            "head_box": [_r2(hb[0] + 1), _r2(hb[1] + 1), _r2(hb[2] + 1), _r2(hb[3] + 1)]}


def _categories(meta: KeypointMeta) -> list[dict]:
    return [{"id": 1, "name": "person", "supercategory": "person", "keypoints": list(meta.joints),
             "skeleton": [[a + 1, b + 1] for a, b in meta.skeleton]}]


def _check_arguments(fmt: str, num_images: int, size: tuple[int, int], missing_label_rate: float,
                     split: str) -> tuple[int, int]:
    """Validate `generate_dataset`'s arguments; returns the image (width, height) as ints."""
    if fmt not in FORMATS:
        raise InputError(f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
    if num_images < 1:
        raise InputError(f"num_images must be >= 1, got {num_images}")
    w, h = (int(v) for v in size)
    if w < 16 or h < 16:
        raise InputError(f"size must be at least 16x16 (width, height), got {size}")
    if not 0.0 <= missing_label_rate <= 1.0:
        raise InputError(f"missing_label_rate must be in [0, 1], got {missing_label_rate}")
    if not split or any(c in split for c in "/\\ "):
        raise InputError(f"split name must be non-empty without '/', '\\\\' or spaces, got {split!r}")
    return w, h


def _render_and_record(image_dir: Path, num_images: int, seed: int, fmt: str, size: tuple[int, int],
                       cfg: R.SceneConfig, tiles: list[np.ndarray], noise: DetectorNoise, segmentation: bool,
                       jpeg_quality: int, masks: dict[int, np.ndarray] | None,
                       progress: bool) -> tuple[list[dict], list[dict], list[dict]]:
    """Render and write every image; returns (COCO image entries, full-truth person records of every
    person with visible pixels, simulated detections (none for mpii)). Fills `masks` (annotation
    id -> visible mask) when it is not None."""
    w, h = size
    images, records, dets = [], [], []
    iterator = range(num_images)
    if progress:
        from tqdm import tqdm
        iterator = tqdm(iterator, desc="synth", unit="img")
    ann_id = 1
    for i in iterator:
        image_id = i + 1
        sc = render_image(seed, i, (w, h), cfg, tiles)
        file_name = f"{image_id:012d}.jpg" if fmt != "mpii" else f"{image_id:09d}.jpg"
        path = image_dir / file_name
        if not cv2.imwrite(str(path), sc.image, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]):
            raise OSError(f"could not write image {path}")
        images.append({"id": image_id, "file_name": file_name, "width": w, "height": h})
        own = sc.owner()
        recs = []
        for p in range(len(sc.persons)):
            m = own == p
            if not m.any():
                continue   # entirely hidden or outside the image: not annotated
            recs.append(_person_record(sc, p, m, ann_id, image_id, segmentation))
            if masks is not None:
                masks[ann_id] = m
            ann_id += 1
        records.extend(recs)
        if fmt != "mpii":
            dets.extend(simulate_detections(np.random.default_rng([seed, 3, i]), recs, image_id, (w, h), noise))
    return images, records, dets


def _write_annotation_file(path: Path, fmt: str, images: list[dict], records: list[dict],
                           kps_list: list[np.ndarray], status: list[str], full: list[np.ndarray],
                           info: dict, segmentation: bool, amodal: bool = False) -> None:
    """One annotation file: the people of `records` with keypoints `kps_list` (released or full
    truth) by `status` ("labelled", "crowd" or "removed", see `release_labels`). `full` is the full
    truth, which the CrowdPose crowd index is computed on. `amodal`: add each person's
    `amodal_keypoints` (the complete file). `segmentation`: keep the polygons of labelled people."""
    if fmt == "mpii":
        files = {im["id"]: im["file_name"] for im in images}
        _dump([_mpii_entry(r, k, files[r["image_id"]])
               for r, k, st in zip(records, kps_list, status) if st == "labelled"], path)
        return
    sizes = {im["id"]: (im["width"], im["height"]) for im in images}
    k = FORMATS[fmt].num_joints
    anns = []
    for r, kps, st in zip(records, kps_list, status):
        if st == "crowd":
            anns.append(_crowd_annotation(r, k, sizes[r["image_id"]]))
        elif st == "labelled":
            ann = _coco_annotation(r, kps, fmt)
            if not segmentation:
                ann.pop("segmentation", None)
            if amodal:
                ann["amodal_keypoints"] = [_r2(v) if i % 3 < 2 else int(v) for i, v in
                                           enumerate(format_keypoints(r["amodal_points"], fmt).ravel())]
            anns.append(ann)
    imgs = [dict(im) for im in images]
    if fmt == "crowdpose":
        by_image: dict[int, list[int]] = {}
        for k, r in enumerate(records):
            by_image.setdefault(r["image_id"], []).append(k)
        for im in imgs:   # crowd index is a property of the scene: computed on the full truth
            ks = by_image.get(im["id"], [])
            im["crowdIndex"] = _r2(crowd_index([full[k] for k in ks], [records[k]["bbox"] for k in ks]))
    _dump({"info": {"description": f"posedistill synthetic {fmt} data", **info, "version": "1"},
           "licenses": [], "images": imgs, "annotations": anns, "categories": _categories(FORMATS[fmt])}, path)


def _write_annotations(ann_dir: Path, split: str, fmt: str, images: list[dict], records: list[dict],
                       full: list[np.ndarray], defects: LabelDefects, truncation: bool, info: dict,
                       segmentation: bool) -> tuple[Path, Path | None]:
    """The released annotation file and, when a label defect is on, the complete one."""
    status, released = release_labels(full, defects, info["seed"])
    ann_file = ann_dir / (f"mpii_{split}.json" if fmt == "mpii" else f"person_keypoints_{split}.json")
    _write_annotation_file(ann_file, fmt, images, records, released, status, full, info, segmentation)
    complete_file = None
    if defects.any or truncation:
        complete_file = ann_dir / f"complete_keypoints_{split}.json"
        _write_annotation_file(complete_file, fmt, images, records, full, ["labelled"] * len(full), full, info,
                               segmentation, amodal=True)
    return ann_file, complete_file


def generate_dataset(out_dir: str | Path, num_images: int, seed: int = 0, fmt: str = "coco",
                     size: tuple[int, int] = (640, 480), difficulty: str = "medium",
                     missing_label_rate: float = 0.0, split: str = "train",
                     scene: R.SceneConfig | None = None, detector: DetectorNoise | None = None,
                     segmentation: bool = True, return_masks: bool = False, jpeg_quality: int = 92,
                     preview: str | Path | None = None, progress: bool = False, *,
                     truncation_rate: float | None = None, occluded_unlabelled: float | bool = 0.0,
                     missing_keypoint_rate: float = 0.0, missing_person_rate: float = 0.0,
                     crowd_rate: float = 0.0) -> SynthResult:
    """Write `num_images` synthetic images and their annotations under `out_dir` (layout in the
    module doc). `size` is (width, height). `scene` / `detector` override the difficulty presets.
    Files of the same names are overwritten; other files already in `out_dir` are left alone (the
    annotation file lists only the images written now). `return_masks` keeps every annotated
    person's visible-pixel mask and full-truth record in memory (for tests; memory grows with N).

    Label defects (module doc; all off by default): `truncation_rate` (a), `occluded_unlabelled`
    (b; True = 1.0), `missing_keypoint_rate` (c), `missing_person_rate` (d), `missing_label_rate`
    (older mix of (b)-(d)); `crowd_rate` releases people as crowd regions instead."""
    w, h = _check_arguments(fmt, num_images, size, missing_label_rate, split)
    defects = LabelDefects(missing_label_rate=missing_label_rate, occluded_unlabelled=occluded_unlabelled,
                           missing_keypoint_rate=missing_keypoint_rate, missing_person_rate=missing_person_rate,
                           crowd_rate=crowd_rate)
    if fmt == "mpii" and crowd_rate > 0:
        raise InputError("crowd_rate needs a COCO-style format (coco, crowdpose): MPII files have no crowd regions")
    cfg = scene if scene is not None else scene_config(difficulty)
    if truncation_rate is not None:
        if isinstance(truncation_rate, bool) or not 0.0 <= truncation_rate <= 1.0:
            raise InputError(f"truncation_rate must be a number in [0, 1], got {truncation_rate!r}")
        cfg = replace(cfg, truncation_prob=float(truncation_rate), keep_inside=True)
    noise = detector if detector is not None else DETECTOR.get(difficulty, DetectorNoise())
    out = Path(out_dir)
    image_dir, ann_dir = out / "images", out / "annotations"
    image_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    tiles = texture_bank(seed)

    masks = {} if return_masks else None
    images, records, dets = _render_and_record(image_dir, num_images, seed, fmt, (w, h), cfg, tiles, noise,
                                               segmentation or crowd_rate > 0, jpeg_quality, masks, progress)
    full = [format_keypoints(r["points"], fmt) for r in records]
    if fmt == "mpii":   # MPII annotates people with at least one labelled joint
        keep_idx = [k for k, kp in enumerate(full) if (kp[:, 2] > 0).any()]
        records, full = [records[k] for k in keep_idx], [full[k] for k in keep_idx]
    info = {"seed": seed, "difficulty": difficulty, "missing_label_rate": missing_label_rate}
    if replace(defects, missing_label_rate=0.0).any or truncation_rate is not None:   # else as older versions
        info.update(truncation_rate=truncation_rate, occluded_unlabelled=defects.occluded_unlabelled,
                    missing_keypoint_rate=missing_keypoint_rate, missing_person_rate=missing_person_rate,
                    crowd_rate=crowd_rate)
    ann_file, complete_file = _write_annotations(ann_dir, split, fmt, images, records, full, defects,
                                                 bool(truncation_rate), info, segmentation)
    det_file = None
    if fmt != "mpii":
        det_file = ann_dir / f"detections_{split}.json"
        _dump(dets, det_file)
    result = SynthResult(out_dir=out, image_dir=image_dir, ann_file=ann_file, det_file=det_file,
                         complete_ann_file=complete_file, num_images=num_images, num_people=len(records),
                         masks=masks, complete=records if return_masks else None)
    if preview is not None:
        result.preview = write_preview(result, fmt, Path(preview))
    return result


def write_preview(result: SynthResult, fmt: str, path: Path, num: int = 6, cols: int = 3) -> Path:
    """Grid of the first `num` images with their (released) annotations drawn."""
    meta = FORMATS[fmt]
    data = json.loads(result.ann_file.read_text())
    tiles = []
    if fmt == "mpii":
        names = sorted({e["image"] for e in data})[:num]
        for name in names:
            kps = [np.concatenate([np.array(e["joints"], float) - 1, np.array(e["joints_vis"], float)[:, None] * 2], 1)
                   for e in data if e["image"] == name]
            tiles.append(draw_poses(cv2.imread(str(result.image_dir / name)), np.array(kps), meta))
    else:
        for im in data["images"][:num]:
            anns = [a for a in data["annotations"] if a["image_id"] == im["id"]]
            kps = np.array([a["keypoints"] for a in anns], float).reshape(-1, meta.num_joints, 3)
            boxes = np.array([a["bbox"] for a in anns], float).reshape(-1, 4)
            tiles.append(draw_poses(cv2.imread(str(result.image_dir / im["file_name"])), kps, meta, boxes=boxes))
    save_grid(tiles, path, cols=min(cols, len(tiles)), cell_width=min(360, tiles[0].shape[1]))
    return path


# ---------------------------------------------------------------------------------------------
# Video


@dataclass
class VideoResult:
    path: Path               # the MP4, or the folder of JPEG frames when no MP4 writer could be opened
    kind: str                # "mp4" or "frames"
    keypoints: list[np.ndarray]   # per frame [n, 17, 3] COCO truth
    keypoints_file: Path


def _walk_pose(phase: float, amp: float) -> dict:
    s = math.sin(phase)
    pose = {"lean": 4.0, "head_yaw": 0.0, "head_pitch": 5.0, "roll": 0.0,
            "hip_flex": np.array([amp * s, -amp * s]), "hip_abd": np.array([3.0, 3.0]),
            "knee": np.array([5 + 40 * max(0.0, math.sin(phase + 1.9)), 5 + 40 * max(0.0, -math.sin(phase + 1.9))]),
            "arm_elev": np.array([abs(0.7 * amp * s), abs(0.7 * amp * s)]) + 5,
            "arm_az": np.array([-90.0 if s > 0 else 90.0, 90.0 if s > 0 else -90.0]),
            "elbow": np.array([20.0, 20.0]), "twist": np.zeros(2)}
    return pose


def _wave_pose(phase: float) -> dict:
    pose = _walk_pose(0.0, 0.0)
    pose["arm_elev"] = np.array([150.0 + 15 * math.sin(phase), 20.0])
    pose["arm_az"] = np.array([10.0, 10.0])
    pose["elbow"] = np.array([30 + 30 * math.sin(2 * phase), 15.0])
    pose["hip_abd"] = np.array([8.0, 8.0])
    return pose


def generate_video(out_path: str | Path, num_frames: int = 60, seed: int = 0, size: tuple[int, int] = (640, 480),
                   fps: float = 15.0, num_people: int = 3) -> VideoResult:
    """A clip of people walking across a fixed background (and one waving), with per-frame COCO
    truth written to `<out_path stem>_keypoints.json`. MP4 ('mp4v') when OpenCV can open the
    writer, otherwise JPEG frames in the folder `<out_path without suffix>_frames/`."""
    if num_frames < 1:
        raise InputError(f"num_frames must be >= 1, got {num_frames}")
    if not 1 <= num_people <= 6:
        raise InputError(f"num_people must be in 1..6, got {num_people}")
    w, h = (int(v) for v in size)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 4])
    tiles = texture_bank(seed)
    cfg = replace(R.DIFFICULTY["easy"], occluder_prob=0.0)
    background = R.draw_background(rng, w, h, tiles, clutter=8, distractors=0)
    actors = []
    for k in range(num_people):
        height = rng.uniform(0.35, 0.75) * h
        ground = rng.uniform(0.75, 0.97) * h
        waving = k == num_people - 1 and num_people > 1
        direction = float(rng.choice([-1, 1]))
        start = rng.uniform(-0.1, 0.4) if direction > 0 else rng.uniform(0.6, 1.1)   # walk into the frame
        actors.append({
            "height": height, "ground": ground, "waving": waving, "dir": direction,
            "x0": (rng.uniform(0.3, 0.7) if waving else start) * w,
            "speed": rng.uniform(0.02, 0.035) * height * direction, "phase0": rng.uniform(0, 2 * np.pi),
            "yaw": rng.uniform(-20, 20) if waving else 90.0 * direction + rng.uniform(-15, 15),
            "amp": rng.uniform(20, 32), "colors": R.sample_colors(rng), "props": R.PROPORTIONS,
        })
    writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    kind = "mp4" if writer.isOpened() else "frames"
    frame_dir = out_path.with_suffix("").parent / (out_path.stem + "_frames")
    if kind == "frames":
        frame_dir.mkdir(parents=True, exist_ok=True)
    all_kps = []
    try:
        for t in range(num_frames):
            persons = []
            for a in actors:
                phase = a["phase0"] + 2 * np.pi * t / max(fps * 0.9, 1.0)
                pose = _wave_pose(phase) if a["waving"] else _walk_pose(phase, a["amp"])
                pelvis_y = a["ground"] - 0.53 * a["height"]
                x = a["x0"] + (0.0 if a["waving"] else a["speed"] * t)
                p = R.pose_person(pose, a["yaw"], a["height"], (x, pelvis_y), a["props"], anchor_pelvis=True)
                p.colors, p.z = a["colors"], -a["ground"]
                persons.append(p)
            scene = R.render_scene(np.random.default_rng([seed, 5, t]), (w, h), cfg, tiles, persons=persons,
                                   background=background, occluders=False)
            all_kps.append(scene.keypoints)
            if kind == "mp4":
                writer.write(scene.image)
            elif not cv2.imwrite(str(frame_dir / f"frame_{t:05d}.jpg"), scene.image):
                raise OSError(f"could not write frame {frame_dir / f'frame_{t:05d}.jpg'}")
    finally:
        writer.release()
    kp_file = out_path.with_suffix("").parent / (out_path.stem + "_keypoints.json")
    _dump({"fps": fps, "width": w, "height": h, "keypoint_names": list(COCO.joints),
           "frames": [[[_r2(v) for v in person.ravel()] for person in f] for f in all_kps]}, kp_file)
    return VideoResult(path=out_path if kind == "mp4" else frame_dir, kind=kind, keypoints=all_kps,
                       keypoints_file=kp_file)
