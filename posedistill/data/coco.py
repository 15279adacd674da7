"""COCO-format keypoint files -> `PersonInstance` lists.

Reads any file in the COCO keypoint layout: COCO, CrowdPose (14 joints, `crowdIndex` per image),
OCHuman, and custom sets whose `categories[].keypoints` name their joints. The number of joints K
comes from the person category's `keypoints` list; every annotation's `keypoints` must hold 3*K
numbers.

Person boxes come either from the ground truth (as the official HRNet `lib/dataset/coco.py`:
crowd annotations and annotations without any labelled keypoint are dropped, boxes are clipped to
the image and annotations whose clipped box is empty or whose area is 0 are dropped), or from a
person-detection file in COCO results format (`[{"image_id", "category_id", "bbox", "score"}]`,
only category 1, boxes scoring below `det_score_thr` dropped; HRNet's IMAGE_THRE defaults to 0).

The file is checked before use: a missing field, a `keypoints` list of the wrong length, a bad box
or an annotation pointing at an unknown image raises `AnnotationError` naming the file, the
annotation id and what was expected; with `strict=False` such annotations are skipped instead,
counted in `.skipped` and reported in one warning.

Evaluation: `CocoKeypoints.coco` is the pycocotools COCO object of the file. CrowdPose AP needs
xtcocotools (`iou_type="keypoints_crowd"`, AP easy/medium/hard by `crowdIndex`);
`CocoKeypoints.is_crowdpose` tells when, and `make_coco(...)` builds either kind.
"""
from __future__ import annotations

import json
import math
import os
import reprlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posedistill.errors import InputError
from posedistill.keypoints import KeypointMeta


class AnnotationError(InputError):
    """A keypoint annotation file does not have the expected content."""


@dataclass
class PersonInstance:
    """One person to crop: a box in image pixels and, for ground truth, its keypoints.

    bbox: (x, y, w, h) float32 in image pixels (unpadded; the dataset pads by 1.25).
    keypoints: [K, 3] float32 (x, y, v) in image pixels, v as COCO (all zero for detections).
    score: 1 for ground-truth boxes, the detector score otherwise.
    area: box area in image pixels (w * h).
    head_size: MPII PCKh normaliser, 0 where not applicable."""
    image_path: str
    image_id: int
    ann_id: int
    bbox: np.ndarray
    keypoints: np.ndarray
    score: float = 1.0
    area: float = 0.0
    head_size: float = 0.0

    @property
    def num_labelled(self) -> int:
        return int((self.keypoints[:, 2] > 0).sum())


# Coordinates, sizes and scores larger than this are not pixels: rejected, so that boxes, areas and
# keypoints stay finite in float32 (|v| <= 3.4e38) through the arithmetic of the data pipeline.
MAX_VALUE = 1e9

_short = reprlib.Repr()       # values quoted in error messages: one short line, whatever the file holds
_short.maxstring = _short.maxother = 60
_short.maxlist = _short.maxdict = 6


def show(value) -> str:
    """repr() of a value from a file, shortened to one readable line (for error messages)."""
    return _short.repr(value)


def is_number(v) -> bool:
    """A finite JSON number (not a bool) with |v| <= MAX_VALUE: larger ones overflow float32 boxes."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and abs(v) <= MAX_VALUE


def _is_id(v) -> bool:
    """An integer id that fits the int64 of the dataset's samples (image_id, ann_id)."""
    return isinstance(v, int) and not isinstance(v, bool) and -2**63 <= v < 2**63


def read_json(path: str | os.PathLike, what: str = "annotation"):
    """A JSON file's content; a missing file, text that is not UTF-8 or not JSON (nesting too deep,
    an integer of more than 4300 digits included) is an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{path}: not UTF-8 text ({e})") from None
    except (ValueError, RecursionError) as e:       # JSONDecodeError is a ValueError
        raise AnnotationError(f"{path}: not valid JSON ({e})") from None


def make_coco(dataset: dict, crowdpose: bool = False):
    """pycocotools COCO (or xtcocotools COCO when `crowdpose`) built from an already loaded dict."""
    if crowdpose:
        from xtcocotools.coco import COCO
    else:
        from pycocotools.coco import COCO
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):   # createIndex prints progress lines
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
    return coco


class CocoKeypoints:
    """A checked COCO-format keypoint file.

    Attributes: `path`, `image_dir`, `num_joints`, `joint_names`, `images` (id -> image record),
    `is_crowdpose`, `skipped` (list of (annotation id or detection index, reason)), `coco` (lazy
    pycocotools COCO of the file, for evaluation)."""

    def __init__(self, ann_file: str | os.PathLike, image_dir: str | os.PathLike,
                 meta: KeypointMeta | None = None, strict: bool = True):
        self.path = str(ann_file)
        self.image_dir = str(image_dir)
        self.strict = strict
        self.skipped: list[tuple[int, str]] = []
        self._coco = None
        data = read_json(ann_file, "annotation")
        if not isinstance(data, dict):
            raise AnnotationError(f"{self.path}: expected a JSON object with images / annotations / categories, "
                                  f"got {type(data).__name__}")
        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise AnnotationError(f"{self.path}: missing top-level key {key!r} "
                                      f"(COCO keypoint files have images, annotations, categories)")
            if not isinstance(data[key], list):
                raise AnnotationError(f"{self.path}: {key!r} must be a list, got {type(data[key]).__name__}")
        self.dataset = data
        self.category_id, self.joint_names = self._person_category(data["categories"])
        self.num_joints = len(self.joint_names)
        if meta is not None and meta.num_joints != self.num_joints:
            raise AnnotationError(f"{self.path}: categories[].keypoints lists {self.num_joints} joints but the "
                                  f"keypoint set {meta.name!r} has {meta.num_joints}")
        self.images: dict[int, dict] = {}
        for i, img in enumerate(data["images"]):
            self._check_image(i, img)
            self.images[img["id"]] = img
        self.is_crowdpose = any("crowdIndex" in img for img in data["images"])
        self.annotations = self._check_annotations(data["annotations"])
        self._warn_skipped()

    # ---------------------------------------------------------------- checks

    def _check_image(self, i: int, img) -> None:
        if not isinstance(img, dict):
            raise AnnotationError(f"{self.path}: images[{i}] must be an object")
        for key in ("id", "file_name"):
            if key not in img:
                raise AnnotationError(f"{self.path}: images[{i}] is missing field {key!r}")
        if not _is_id(img["id"]):
            raise AnnotationError(f"{self.path}: images[{i}]: 'id' must be an integer, got {show(img['id'])}")
        if not isinstance(img["file_name"], str):
            raise AnnotationError(f"{self.path}: images[{i}]: 'file_name' must be a string, "
                                  f"got {show(img['file_name'])}")
        for key in ("width", "height"):
            if key in img and not is_number(img[key]):
                raise AnnotationError(f"{self.path}: images[{i}]: {key!r} must be a number, got {show(img[key])}")

    def _person_category(self, categories: list) -> tuple[int, tuple[str, ...]]:
        for i, c in enumerate(categories):    # pycocotools indexes every category by its id
            if not (isinstance(c, dict) and _is_id(c.get("id"))):
                raise AnnotationError(f"{self.path}: categories[{i}] must be an object with an integer 'id', "
                                      f"got {show(c)}")
        with_kps = [c for c in categories if isinstance(c, dict) and isinstance(c.get("keypoints"), list)]
        if not with_kps:
            raise AnnotationError(f"{self.path}: no category has a 'keypoints' list (expected the person "
                                  f"category to name its joints, e.g. categories[0].keypoints)")
        person = [c for c in with_kps if c.get("id") == 1] or with_kps
        cat = person[0]
        if "id" not in cat:
            raise AnnotationError(f"{self.path}: the keypoint category has no 'id'")
        return cat["id"], tuple(str(n) for n in cat["keypoints"])

    def _problem(self, ann_id, reason: str) -> None:
        if self.strict:
            raise AnnotationError(f"{self.path}: annotation id {ann_id}: {reason}")
        self.skipped.append((ann_id, reason))

    def _check_annotations(self, annotations: list) -> list[dict]:
        k3 = 3 * self.num_joints
        good = []
        for i, ann in enumerate(annotations):
            if not isinstance(ann, dict):
                self._problem(f"<annotations[{i}]>", "must be a JSON object")
                continue
            ann_id = ann.get("id", f"<annotations[{i}] without 'id'>")
            if "id" in ann and not _is_id(ann_id):
                ann_id = f"{show(ann_id)} (annotations[{i}])"
            missing = [k for k in ("id", "image_id", "category_id", "bbox", "keypoints") if k not in ann]
            if missing:
                self._problem(ann_id, f"missing field(s) {missing} (COCO keypoint annotations need id, image_id, "
                                      f"category_id, bbox, keypoints)")
                continue
            bad_id = next((k for k in ("id", "image_id", "category_id") if not _is_id(ann[k])), None)
            if bad_id:
                self._problem(ann_id, f"{bad_id!r} must be an integer, got {show(ann[bad_id])}")
                continue
            if ann["image_id"] not in self.images:
                self._problem(ann_id, f"image_id {ann['image_id']!r} is not in 'images'")
                continue
            box = ann["bbox"]
            if not (isinstance(box, list) and len(box) == 4 and all(is_number(v) for v in box)):
                self._problem(ann_id, f"'bbox' must be 4 numbers [x, y, w, h] (|v| <= {MAX_VALUE:g}), "
                                      f"got {show(box)}")
                continue
            if "area" in ann and not is_number(ann["area"]):
                self._problem(ann_id, f"'area' must be a number, got {show(ann['area'])}")
                continue
            kps = ann["keypoints"]
            if not isinstance(kps, list) or len(kps) != k3:
                n = len(kps) if isinstance(kps, list) else type(kps).__name__
                self._problem(ann_id, f"'keypoints' has {n} values, expected {k3} (3 x {self.num_joints} joints "
                                      f"from categories[].keypoints)")
                continue
            if not all(is_number(v) for v in kps):
                self._problem(ann_id, f"'keypoints' must hold numbers only (|v| <= {MAX_VALUE:g})")
                continue
            good.append(ann)
        return good

    def _warn_skipped(self) -> None:
        if self.skipped:
            first = "; ".join(f"annotation id {a}: {r}" for a, r in self.skipped[:3])
            warnings.warn(f"{self.path}: skipped {len(self.skipped)} bad annotation(s) ({first}"
                          f"{' ...' if len(self.skipped) > 3 else ''})", stacklevel=3)

    # ---------------------------------------------------------------- instances

    def image_path(self, image_id: int) -> str:
        return os.path.join(self.image_dir, self.images[image_id]["file_name"])

    def gt_instances(self) -> list[PersonInstance]:
        """Ground-truth people: not crowd, category = the person category, at least one labelled
        keypoint, positive area, non-empty box after clipping to the image (HRNet's clean_bbox)."""
        out = []
        k = self.num_joints
        for ann in self.annotations:
            if ann.get("iscrowd", 0) or ann["category_id"] != self.category_id:
                continue
            kps = np.asarray(ann["keypoints"], dtype=np.float32).reshape(k, 3)
            if not (kps[:, 2] > 0).any():
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            img = self.images[ann["image_id"]]
            x1, y1 = max(0.0, x), max(0.0, y)
            x2, y2 = x1 + max(0.0, w - 1.0), y1 + max(0.0, h - 1.0)
            if "width" in img and "height" in img:
                x2, y2 = min(float(img["width"]) - 1.0, x2), min(float(img["height"]) - 1.0, y2)
            area = float(ann.get("area", w * h))
            if area <= 0 or x2 < x1 or y2 < y1 or (x2 == x1 and y2 == y1):   # last: no size to crop
                continue
            box = np.array([x1, y1, x2 - x1, y2 - y1], dtype=np.float32)
            kps[kps[:, 2] <= 0] = 0.0
            out.append(PersonInstance(image_path=self.image_path(ann["image_id"]), image_id=int(ann["image_id"]),
                                      ann_id=int(ann["id"]), bbox=box, keypoints=kps, score=1.0,
                                      area=float(box[2] * box[3])))
        return out

    def detection_instances(self, det_file: str | os.PathLike, score_thr: float = 0.0) -> list[PersonInstance]:
        """People from a COCO results-format detection file (category 1 only, score >= score_thr).

        A detection on an image that is not in the annotation file is skipped and counted in
        `.skipped` (detection files often cover a larger image set); a detection with a missing or
        malformed field raises (or is skipped with strict=False)."""
        dets = read_json(det_file, "detection")
        if not isinstance(dets, list):
            raise AnnotationError(f"{det_file}: expected a JSON list of detections "
                                  f"[{{image_id, category_id, bbox, score}}], got {type(dets).__name__}")
        out, unknown = [], 0
        zeros = np.zeros((self.num_joints, 3), dtype=np.float32)
        for i, det in enumerate(dets):
            if not isinstance(det, dict):
                raise AnnotationError(f"{det_file}: detection [{i}] must be a JSON object")
            missing = [k for k in ("image_id", "category_id", "bbox", "score") if k not in det]
            box = det.get("bbox")
            bad = None
            if missing:
                bad = f"missing field(s) {missing} (COCO results format needs image_id, category_id, bbox, score)"
            elif not (isinstance(box, list) and len(box) == 4 and all(is_number(v) for v in box)):
                bad = f"'bbox' must be 4 numbers [x, y, w, h] (|v| <= {MAX_VALUE:g}), got {show(box)}"
            elif not is_number(det["score"]):
                bad = f"'score' must be a number, got {show(det['score'])}"
            if bad:
                if self.strict:
                    raise AnnotationError(f"{det_file}: detection [{i}]: {bad}")
                self.skipped.append((i, bad))
                continue
            if det["category_id"] != 1 or det["score"] < score_thr:
                continue
            if not _is_id(det["image_id"]) or det["image_id"] not in self.images:     # ids of images are ints
                unknown += 1
                self.skipped.append((i, f"image_id {show(det['image_id'])} not in {self.path}"))
                continue
            x, y, w, h = (float(v) for v in box)
            if w <= 0 or h <= 0:
                continue
            out.append(PersonInstance(image_path=self.image_path(det["image_id"]), image_id=int(det["image_id"]),
                                      ann_id=-1, bbox=np.array([x, y, w, h], dtype=np.float32),
                                      keypoints=zeros.copy(), score=float(det["score"]), area=w * h))
        if unknown:
            warnings.warn(f"{det_file}: skipped {unknown} detection(s) on images not listed in {self.path}",
                          stacklevel=2)
        return out

    # ---------------------------------------------------------------- evaluation

    @property
    def coco(self):
        """pycocotools COCO object of this file (built on first use; xtcocotools for CrowdPose)."""
        if self._coco is None:
            self._coco = make_coco(self.dataset, crowdpose=self.is_crowdpose)
        return self._coco


def load_coco_instances(ann_file: str | os.PathLike, image_dir: str | os.PathLike,
                        meta: KeypointMeta | None = None, detections: str | os.PathLike | None = None,
                        det_score_thr: float = 0.0, strict: bool = True) -> list[PersonInstance]:
    """PersonInstance list of a COCO-format keypoint file: ground-truth boxes, or the boxes of
    `detections` (COCO results format) when given. See `CocoKeypoints` for the checks."""
    ds = CocoKeypoints(ann_file, image_dir, meta=meta, strict=strict)
    if detections is not None:
        return ds.detection_instances(detections, score_thr=det_score_thr)
    return ds.gt_instances()
