"""MPII annotations in the JSON of the HRNet / SimpleBaseline code -> `PersonInstance` lists.

Each entry: `image` (file name), `center` [x, y] and `scale` (person size / 200 px) in MATLAB
1-based pixels, `joints` [16][2] (1-based), `joints_vis` [16] (1 = labelled); optionally
`head_box` [x1, y1, x2, y2] (1-based, as written by `posedistill data synth --format mpii`).

Box conversion (what the HRNet loader does, in our pixel convention): the centre moves down by
15 * scale pixels (to avoid cutting off the feet), both are shifted to 0-based pixels, and the
person box becomes a square of side 200 * scale. The dataset then pads it by 1.25 like every
other box, so the crop covers 200 * scale * 1.25 pixels: exactly HRNet's `s * 1.25` (x 200) crop.
Labelled joints get v = 2 (COCO "visible": MPII JSON has no occlusion flag), unlabelled ones
(0, 0, 0).

`ann_id` is the entry's position in the JSON (0-based); the official `mpii_gt_val.mat` is in the same
order, which is how PCKh evaluation pairs them. `image_id` is the file name's number (MPII names
are numeric) or, for other names, the image's position among the file's distinct images.

PCKh head size (`head_size`), first available source wins, reported as `source`:
1. "mat": the official `mpii_gt_val.mat` (`headboxes_src` [2, 2, N]; `pos_gt_src` is checked
   against the JSON joints to catch a file in another order); head size = 0.6 x the head-box
   diagonal (the `SC_BIAS` of the MPII evaluation script);
2. "json": the entry's `head_box`, same formula;
3. "approx": 0.6 x sqrt(2) x |head_top - upper_neck|, i.e. the head box taken as a square whose side
   is the head segment. An approximation: PCKh numbers from it are not the official ones.
   Entries without both joints get 0.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from posedistill.data.coco import MAX_VALUE, AnnotationError, PersonInstance, read_json, show
from posedistill.keypoints import MPII, KeypointMeta

SC_BIAS = 0.6           # head size = SC_BIAS x head-box diagonal (MPII evaluation)
CENTER_SHIFT = 15.0     # HRNet moves the centre down by 15 x scale pixels
PIXEL_STD = 200.0       # MPII / HRNet scale unit


def _num(v) -> bool:
    """A finite number of pixel size (|v| <= MAX_VALUE: boxes and areas stay finite in float32)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and abs(v) <= MAX_VALUE


def _check_entry(path: str, i: int, a, k: int) -> None:
    def bad(msg):
        raise AnnotationError(f"{path}: entry {i} (annotation id {i}): {msg}")

    if not isinstance(a, dict):
        bad("must be a JSON object")
    missing = [f for f in ("image", "center", "scale", "joints", "joints_vis") if f not in a]
    if missing:
        bad(f"missing field(s) {missing} (HRNet MPII JSON needs image, center, scale, joints, joints_vis)")
    if not (isinstance(a["image"], str) and a["image"]):
        bad(f"'image' must be a file name, got {show(a['image'])}")
    c = a["center"]
    if not (isinstance(c, list) and len(c) == 2 and all(_num(v) for v in c)):
        bad(f"'center' must be [x, y], got {show(c)}")
    if not (_num(a["scale"]) and 0 < a["scale"] <= MAX_VALUE / PIXEL_STD):
        bad(f"'scale' must be a positive number (person size / 200 px), got {show(a['scale'])}")
    j = a["joints"]
    if not (isinstance(j, list) and len(j) == k and all(isinstance(p, list) and len(p) == 2
                                                          and all(_num(v) for v in p) for p in j)):
        bad(f"'joints' must be {k} [x, y] pairs, got {len(j) if isinstance(j, list) else type(j).__name__} entries")
    jv = a["joints_vis"]
    if not (isinstance(jv, list) and len(jv) == k and all(_num(v) for v in jv)):
        bad(f"'joints_vis' must be {k} numbers, got {show(jv)}")
    hb = a.get("head_box")
    if hb is not None and not (isinstance(hb, list) and len(hb) == 4 and all(_num(v) for v in hb)):
        bad(f"'head_box' must be [x1, y1, x2, y2], got {show(hb)}")


def read_head_boxes_mat(mat_file: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(headboxes_src [2, 2, N], pos_gt_src [K, 2, N], jnt_missing [K, N]) of `mpii_gt_val.mat`."""
    from scipy.io import loadmat

    if not Path(mat_file).is_file():
        raise FileNotFoundError(f"MPII head-box file not found: {mat_file}")
    gt = loadmat(str(mat_file))
    for key in ("headboxes_src", "pos_gt_src", "jnt_missing"):
        if key not in gt:
            raise AnnotationError(f"{mat_file}: missing variable {key!r} (expected the official mpii_gt_val.mat "
                                  f"with headboxes_src, pos_gt_src, jnt_missing)")
    return (np.asarray(gt["headboxes_src"], dtype=np.float64), np.asarray(gt["pos_gt_src"], dtype=np.float64),
            np.asarray(gt["jnt_missing"]))


def head_size_from_box(box_xyxy) -> float:
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    return SC_BIAS * math.hypot(x2 - x1, y2 - y1)


def load_mpii(ann_file: str | os.PathLike, image_dir: str | os.PathLike, meta: KeypointMeta | None = None,
              head_boxes: str | os.PathLike | None = None) -> tuple[list[PersonInstance], str]:
    """(instances, head-size source "mat" | "json" | "approx") of an HRNet MPII JSON file."""
    meta = meta or MPII
    path = str(ann_file)
    entries = read_json(path)
    if not isinstance(entries, list):
        raise AnnotationError(f"{path}: expected a JSON list of MPII entries, got {type(entries).__name__}")
    k = meta.num_joints
    for i, a in enumerate(entries):
        _check_entry(path, i, a, k)

    names = [a["image"] for a in entries]
    # numeric: ASCII digits only (str.isdigit() also accepts e.g. "²", which int() does not), and ids
    # that fit the int64 of the samples' image_id
    numeric = all(Path(n).stem.isascii() and Path(n).stem.isdigit() and len(Path(n).stem) <= 18 for n in names)
    first_seen: dict[str, int] = {}
    for n in names:
        first_seen.setdefault(n, len(first_seen))

    if head_boxes:
        boxes, pos_gt, missing = read_head_boxes_mat(head_boxes)
        if boxes.shape[:2] != (2, 2) or boxes.shape[2] != len(entries):
            raise AnnotationError(f"{head_boxes}: headboxes_src has shape {boxes.shape}, expected (2, 2, "
                                  f"{len(entries)}) for the {len(entries)} entries of {path}")
        sizes = SC_BIAS * np.linalg.norm(boxes[1] - boxes[0], axis=0)
        source = "mat"
    elif all("head_box" in a for a in entries):
        sizes = np.array([head_size_from_box(a["head_box"]) for a in entries])
        source = "json"
    else:
        top, neck = meta.index("head_top"), meta.index("upper_neck")
        sizes = np.zeros(len(entries))
        for i, a in enumerate(entries):
            if a["joints_vis"][top] > 0 and a["joints_vis"][neck] > 0:
                (xt, yt), (xn, yn) = a["joints"][top], a["joints"][neck]
                sizes[i] = SC_BIAS * math.sqrt(2.0) * math.hypot(xt - xn, yt - yn)
        source = "approx"

    instances = []
    for i, a in enumerate(entries):
        s = float(a["scale"])
        cx, cy = float(a["center"][0]), float(a["center"][1])
        if cx != -1:                       # HRNet: -1 marks "no centre"; only real centres move
            cy += CENTER_SHIFT * s
        cx, cy = cx - 1.0, cy - 1.0        # MATLAB 1-based -> 0-based
        side = PIXEL_STD * s
        box = np.array([cx - 0.5 * side, cy - 0.5 * side, side, side], dtype=np.float32)
        joints = np.asarray(a["joints"], dtype=np.float32)
        vis = np.asarray(a["joints_vis"], dtype=np.float32) > 0
        kps = np.zeros((k, 3), dtype=np.float32)
        kps[vis, :2] = joints[vis] - 1.0
        kps[vis, 2] = 2.0
        if source == "mat":
            labelled = vis & (missing[:, i] == 0)
            gt = pos_gt[:, :, i]
            if labelled.any() and np.abs(gt[labelled] - joints[labelled]).max() > 1.0:
                raise AnnotationError(f"{head_boxes}: joints of column {i} do not match entry {i} of {path} "
                                      f"(is the .mat from the same split and order?)")
        name = a["image"]
        image_id = int(Path(name).stem) if numeric else first_seen[name]
        instances.append(PersonInstance(image_path=os.path.join(str(image_dir), name), image_id=image_id,
                                        ann_id=i, bbox=box, keypoints=kps, score=1.0,
                                        area=float(side * side), head_size=float(sizes[i])))
    return instances, source


def load_mpii_instances(ann_file: str | os.PathLike, image_dir: str | os.PathLike,
                        meta: KeypointMeta | None = None, head_boxes: str | os.PathLike | None = None
                        ) -> list[PersonInstance]:
    """PersonInstance list of an HRNet MPII JSON file (see `load_mpii` and the module docstring)."""
    return load_mpii(ann_file, image_dir, meta=meta, head_boxes=head_boxes)[0]
