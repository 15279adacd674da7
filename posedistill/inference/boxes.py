"""Where person boxes come from when a top-down pose model runs on your own images or video.

A top-down model only sees the crop around one person, so something else has to say where the
people are. Four sources, all giving the same thing: an `np.ndarray [N, 5] float32` of rows
(x, y, w, h, score) in ORIGINAL image pixels (COCO's xywh):

- `read_detections(path)`: boxes computed earlier, in COCO detection-results JSON (what MMDetection
  writes and what the official HRNet code evaluates with, `COCO_val2017_detections_AP_H_56_person.json`).
- `whole_image_box(w, h)`: the whole image as one person, MMPose's inferencer fallback when there is
  no detector or it finds nobody (mmpose/apis/inferencers/pose2d_inferencer.py: bbox [0, 0, w, h],
  score 1). Right for images cropped around one person already.
- `OnnxDetector(path)`: a person detector you exported to ONNX yourself (YOLOX or RTMDet; see
  docs/person_detectors.md), run with ONNX Runtime on the CPU. Nothing is downloaded.
- `BoxTracker(detect)`: for video; runs the detector every few frames only and carries each person's
  box forward from their pose in between, with track ids.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import onnxruntime as ort

from posedistill.data.coco import MAX_VALUE, AnnotationError, is_number, read_json, show
from posedistill.errors import InputError, MissingFileError


def _empty_boxes() -> np.ndarray:
    return np.zeros((0, 5), dtype=np.float32)


def _sorted_boxes(rows: list) -> np.ndarray:
    """[N, 5] float32 boxes from rows of 5 numbers, best score first."""
    boxes = np.asarray(rows, dtype=np.float32).reshape(-1, 5)
    return boxes[np.argsort(-boxes[:, 4], kind="stable")]


def whole_image_box(width: int, height: int) -> np.ndarray:
    """[1, 5] box covering the whole image with score 1: the person source when there is no
    detector (MMPose's inferencer does the same, see the module docstring)."""
    return np.array([[0.0, 0.0, float(width), float(height), 1.0]], dtype=np.float32)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of `a` [N, 4+] with every box of `b` [M, 4+], both xywh (extra columns,
    e.g. a score, are ignored). Returns [N, M] float32; boxes of zero area give IoU 0."""
    a = np.atleast_2d(np.asarray(a, dtype=np.float32))[:, :4]
    b = np.atleast_2d(np.asarray(b, dtype=np.float32))[:, :4]
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, 0, None], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, 1, None], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0).astype(np.float32)


def _nms(boxes: np.ndarray, iou_thr: float) -> np.ndarray:
    """Greedy NMS of [N, 5] xywh+score boxes: indices kept, best score first. A box is dropped when
    its IoU with a better kept box is above `iou_thr` (the rule of mmcv's / YOLOX's nms)."""
    order = np.argsort(-boxes[:, 4], kind="stable")
    keep = []
    while order.size:
        best, order = order[0], order[1:]
        keep.append(best)
        if order.size:
            order = order[box_iou(boxes[best:best + 1], boxes[order])[0] <= iou_thr]
    return np.asarray(keep, dtype=np.int64)


# ---------------------------------------------------------------- detection files

class DetectionFile:
    """Person boxes of a COCO detection-results file, looked up per image (see `read_detections`).

    Attributes: `path`, `num_boxes` (kept), `num_dropped` (other category or below the score
    threshold); `len()` is the number of images with at least one kept box."""

    def __init__(self, path: str, rows: list[tuple[str | None, object, list[float]]], num_dropped: int):
        """`rows`: (file basename or None, image id or None, [x, y, w, h, score]) per kept entry."""
        self.path = path
        self.num_boxes = len(rows)
        self.num_dropped = num_dropped
        by_name: dict[str, list] = {}
        by_id: dict[object, list] = {}
        for name, image_id, box in rows:
            if name is not None:
                by_name.setdefault(name, []).append(box)
            if image_id is not None:
                by_id.setdefault(image_id, []).append(box)
        self._by_file_name = {k: _sorted_boxes(v) for k, v in by_name.items()}
        self._by_image_id = {k: _sorted_boxes(v) for k, v in by_id.items()}
        # An image is its file name where the entries give one, else its id.
        self._num_images = len({name if name is not None else ("id", image_id) for name, image_id, _ in rows})

    def __len__(self) -> int:
        return self._num_images

    def __repr__(self) -> str:
        return (f"DetectionFile({self.path!r}: {self.num_boxes} boxes on {len(self)} images, "
                f"{self.num_dropped} dropped)")

    def boxes_for(self, image_path: str, image_id: int | str | None = None) -> np.ndarray:
        """[N, 5] boxes of one image, best score first; [0, 5] when the file has none for it.

        Found by the entries' "file_name" (basename match, so "val2017/x.jpg" finds "x.jpg"), else by
        image id: `image_id` when given, otherwise the file's stem read as a number, as COCO names its
        images (000000397133.jpg -> 397133), or the stem itself for string ids."""
        name = os.path.basename(str(image_path))
        if name in self._by_file_name:
            return self._by_file_name[name].copy()
        if image_id is not None:
            candidates = [image_id]
        else:
            stem = Path(name).stem
            candidates = [int(stem), stem] if stem.isascii() and stem.isdigit() else [stem]
        for key in candidates:
            if key in self._by_image_id:
                return self._by_image_id[key].copy()
        return _empty_boxes()


def _check_detection(det) -> str | None:
    """What is wrong with one detection entry, or None when it is well formed."""
    if not isinstance(det, dict):
        return f"must be a JSON object, got {type(det).__name__}"
    if "image_id" not in det and "file_name" not in det:
        return "field 'image_id' is missing (or give 'file_name')"
    if "image_id" in det and not (isinstance(det["image_id"], str) or
                                  (isinstance(det["image_id"], int) and not isinstance(det["image_id"], bool))):
        return f"field 'image_id' must be an integer or a string, got {det['image_id']!r}"
    if "file_name" in det and not isinstance(det["file_name"], str):
        return f"field 'file_name' must be a string, got {det['file_name']!r}"
    if "category_id" not in det:
        return "field 'category_id' is missing"
    box = det.get("bbox")
    if not (isinstance(box, list) and len(box) == 4 and all(is_number(v) for v in box)):
        return f"field 'bbox' must be 4 finite numbers [x, y, w, h] (|v| <= {MAX_VALUE:g}), got {show(box)}"
    if box[2] <= 0 or box[3] <= 0:
        return f"field 'bbox' has width or height <= 0: {box!r}"
    if "score" not in det:
        return "field 'score' is missing"
    if not is_number(det["score"]):
        return f"field 'score' must be a finite number (|v| <= {MAX_VALUE:g}), got {show(det['score'])}"
    return None


def read_detections(path: str | os.PathLike, score_thr: float = 0.0, category_id: int = 1) -> DetectionFile:
    """Read a COCO detection-results JSON: a list of {"image_id", "category_id", "bbox": [x, y, w, h],
    "score"} (optionally "file_name"), boxes in image pixels.

    Entries of another category than `category_id` (1 = person in COCO) or scoring below `score_thr`
    are dropped (HRNet's IMAGE_THRE defaults to 0, hence the default). Every entry is checked first:
    a malformed one raises `AnnotationError` naming the file, the entry index and the field."""
    path = str(path)
    data = read_json(path, "detection")
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a JSON list of detections [{{image_id, category_id, bbox, "
                              f"score}}] (COCO results format), got {type(data).__name__}")
    rows: list[tuple[str | None, object, list[float]]] = []
    dropped = 0
    for i, det in enumerate(data):
        problem = _check_detection(det)
        if problem:
            raise AnnotationError(f"{path}: entry [{i}]: {problem}")
        if det["category_id"] != category_id or det["score"] < score_thr:
            dropped += 1
            continue
        name = os.path.basename(det["file_name"]) if "file_name" in det else None
        rows.append((name, det.get("image_id"), [float(v) for v in det["bbox"]] + [float(det["score"])]))
    return DetectionFile(path, rows, dropped)


# ---------------------------------------------------------------- ONNX detector

# Letterbox padding value: YOLOX pads with 114 (yolox/data/data_augment.py `preproc`), and MMDetection's
# RTMDet / YOLOX test pipelines `Pad(..., pad_val=114)` after a keep-ratio `Resize`, image at the top-left.
PAD_VALUE = 114
# Strides of YOLOX's three output levels (a P6 model adds 64): the grid that `decode_grid` undoes,
# as YOLOX's demo_postprocess (yolox/utils/demo_utils.py).
YOLOX_STRIDES = (8, 16, 32)
LAYOUTS_HELP = ("expected one of two layouts: 'end2end' (MMDeploy export of RTMDet / YOLOX: outputs "
                "dets [1, N, 5] (x1, y1, x2, y2, score) and labels [1, N]) or 'yolox' (YOLOX tools/export_onnx.py: "
                "one output [1, A, 5 + C] rows (cx, cy, w, h, objectness, C class scores)); see "
                "docs/person_detectors.md")


def _fits(shape: Sequence, pattern: Sequence) -> bool:
    """Does an ONNX shape (ints, or strings / None for symbolic dims) fit `pattern` (None = any)?"""
    return len(shape) == len(pattern) and all(p is None or not isinstance(d, int) or d == p
                                              for d, p in zip(shape, pattern))


def _find_layout(outputs: list[tuple[str, list]]) -> tuple[str, int, int] | None:
    """('end2end', dets index, labels index) or ('yolox', output index, -1) from the outputs' names
    and shapes; None when neither fits."""
    if len(outputs) == 2:
        names = [n for n, _ in outputs]
        if set(names) == {"dets", "labels"}:
            dets, labels = names.index("dets"), names.index("labels")
        else:   # other names: the [1, N, 5] one is dets
            dets = 0 if len(outputs[0][1]) == 3 else 1
            labels = 1 - dets
        if _fits(outputs[dets][1], (None, None, 5)) and _fits(outputs[labels][1], (None, None)):
            return "end2end", dets, labels
    if len(outputs) == 1:
        shape = outputs[0][1]
        if len(shape) == 3 and (not isinstance(shape[2], int) or shape[2] >= 6):
            return "yolox", 0, -1
    return None


class OnnxDetector:
    """A person detector exported to ONNX (YOLOX or RTMDet), run with ONNX Runtime on the CPU.

    `detector(image_bgr)` takes an `np.uint8 [H, W, 3]` BGR image (as cv2.imread gives) and returns
    `[N, 5]` (x, y, w, h, score) person boxes in the ORIGINAL image's pixels, best first.

    Input: one float32 tensor [1, 3, in_h, in_w], BGR, NCHW. The image is letterboxed: resized by
    scale = min(in_h / H, in_w / W) (bilinear, aspect kept), placed at the top-left, the rest filled
    with 114 (YOLOX's `preproc` and MMDetection's RTMDet / YOLOX test pipelines agree on this, up to
    the rounding of the resized size: one pixel at most). Then `(pixel - mean) / std` per BGR channel when given; by default none, raw 0..255 as
    YOLOX and MMDetection's YOLOX expect. RTMDet (MMDetection configs/rtmdet/*.py,
    `bgr_to_rgb=False`) needs mean=RTMDET_MEAN, std=RTMDET_STD. The input size is the model's
    static input shape, or `input_size=(width, height)` for a dynamic-shape export.

    Outputs, one of two layouts, recognised from the output names and shapes:
      (a) "end2end" (MMDeploy `tools/deploy.py` with configs/mmdet/detection/detection_onnxruntime_*.py,
          NMS inside the graph): `dets` [1, N, 5] rows (x1, y1, x2, y2, score) in input pixels and
          `labels` [1, N] class indices. Kept: label == person_class and score >= score_thr.
      (b) "yolox" (YOLOX `tools/export_onnx.py`): one output [1, A, 5 + C] rows (cx, cy, w, h,
          objectness, C class scores) in input pixels when exported with `--decode_in_inference`.
          Exported without it (the script's default), the rows hold grid offsets and log sizes:
          pass `decode_grid=True` to decode them as YOLOX's demo does (strides 8, 16, 32 [, 64]).
          Score = objectness * score of person_class; kept when >= score_thr, then NMS at nms_thr.
    Boxes are then mapped back through the letterbox, clipped to the image, and boxes under one
    pixel wide or high dropped. Any other layout is refused when the file is opened.

    Defaults: score_thr 0.3 (YOLOX demo's `-s`), nms_thr 0.65 (MMDetection's RTMDet / YOLOX test_cfg
    iou_threshold). `threads` > 0 sets ONNX Runtime's intra-op threads (0 = its default)."""

    RTMDET_MEAN = (103.53, 116.28, 123.675)   # BGR; MMDetection configs/rtmdet/rtmdet_l_8xb32-300e_coco.py
    RTMDET_STD = (57.375, 57.12, 58.395)

    def __init__(self, path: str | os.PathLike, *, score_thr: float = 0.3, nms_thr: float = 0.65,
                 input_size: tuple[int, int] | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, person_class: int = 0, threads: int = 0,
                 decode_grid: bool = False):
        self.path = str(path)
        if not Path(self.path).is_file():
            raise MissingFileError(f"detector file not found: {self.path}")
        self.score_thr, self.nms_thr = float(score_thr), float(nms_thr)
        self.person_class, self.decode_grid = int(person_class), bool(decode_grid)
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float32).reshape(3)
        self.std = None if std is None else np.asarray(std, dtype=np.float32).reshape(3)
        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(self.path, sess_options=options, providers=["CPUExecutionProvider"])
        self.input_name, self.input_size = self._check_input(input_size)
        outputs = [(o.name, list(o.shape)) for o in self.session.get_outputs()]
        found = _find_layout(outputs)
        if found is None:
            raise InputError(f"{self.path}: unknown detector outputs {outputs}; {LAYOUTS_HELP}")
        self.layout, self._first, self._second = found

    def __repr__(self) -> str:
        return (f"OnnxDetector({self.path!r}, layout={self.layout}, input {self.input_size[0]}x{self.input_size[1]}, "
                f"score_thr={self.score_thr}, nms_thr={self.nms_thr})")

    def _check_input(self, input_size) -> tuple[str, tuple[int, int]]:
        """(input name, (width, height)) from the model's one image input."""
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            found = [(i.name, list(i.shape)) for i in inputs]
            raise InputError(f"{self.path}: expected one image input [1, 3, height, width], found {found}")
        if inputs[0].type != "tensor(float)":
            raise InputError(f"{self.path}: input {inputs[0].name!r} is {inputs[0].type}, expected tensor(float)")
        h, w = inputs[0].shape[2:]
        if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
            if input_size is not None and tuple(input_size) != (w, h):
                raise InputError(f"{self.path}: input_size={tuple(input_size)} (width, height) but the model's "
                                 f"input is fixed at {w}x{h}")
            return inputs[0].name, (w, h)
        if input_size is None:
            raise InputError(f"{self.path}: the model's input size is dynamic ({inputs[0].shape}); pass "
                             f"input_size=(width, height), the size it was trained at (e.g. 640, 640)")
        return inputs[0].name, (int(input_size[0]), int(input_size[1]))

    def preprocess(self, image_bgr: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
        """(blob [1, 3, in_h, in_w] float32, (sx, sy)): the letterboxed, normalised image and the
        scale factors from image to input pixels (x_input = x_image * sx)."""
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise InputError(f"expected a BGR image [H, W, 3], got shape {image_bgr.shape}")
        in_w, in_h = self.input_size
        h, w = image_bgr.shape[:2]
        scale = min(in_h / h, in_w / w)
        # Rounded as mmcv's keep-ratio resize; YOLOX truncates, at most one pixel at the far edge.
        new_w, new_h = max(1, min(in_w, int(w * scale + 0.5))), max(1, min(in_h, int(h * scale + 0.5)))
        canvas = np.full((in_h, in_w, 3), PAD_VALUE, dtype=np.float32)
        canvas[:new_h, :new_w] = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        if self.mean is not None:
            canvas -= self.mean
        if self.std is not None:
            canvas /= self.std
        return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None]), (new_w / w, new_h / h)

    def __call__(self, image_bgr: np.ndarray) -> np.ndarray:
        blob, (sx, sy) = self.preprocess(image_bgr)
        outputs = self.session.run(None, {self.input_name: blob})
        if self.layout == "end2end":
            xyxy_scores = self._end2end(outputs)
        else:
            xyxy_scores = self._yolox(outputs[self._first])
        boxes = xyxy_scores.astype(np.float32).copy()
        boxes[:, [0, 2]] /= sx
        boxes[:, [1, 3]] /= sy
        h, w = image_bgr.shape[:2]
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        boxes[:, 2:4] -= boxes[:, 0:2]          # xyxy -> xywh
        boxes = boxes[(boxes[:, 2] >= 1) & (boxes[:, 3] >= 1)]
        return boxes[np.argsort(-boxes[:, 4], kind="stable")]

    def _end2end(self, outputs: list[np.ndarray]) -> np.ndarray:
        """[N, 5] xyxy + score in input pixels from MMDeploy's dets / labels."""
        dets, labels = np.asarray(outputs[self._first]), np.asarray(outputs[self._second])
        if dets.ndim != 3 or dets.shape[0] != 1 or dets.shape[2] != 5 or labels.shape != dets.shape[:2]:
            raise InputError(f"{self.path}: end2end outputs have shapes dets {list(dets.shape)}, labels "
                             f"{list(labels.shape)}; expected [1, N, 5] and [1, N]")
        dets, labels = dets[0], labels[0]
        keep = (labels.astype(np.int64) == self.person_class) & (dets[:, 4] >= self.score_thr)
        return dets[keep]

    def _yolox(self, output: np.ndarray) -> np.ndarray:
        """[N, 5] xyxy + score in input pixels from YOLOX's [1, A, 5 + C] rows, after NMS."""
        out = np.asarray(output, dtype=np.float32)
        if out.ndim != 3 or out.shape[0] != 1 or out.shape[2] < 6:
            raise InputError(f"{self.path}: yolox output has shape {list(out.shape)}; expected [1, A, 5 + C]")
        rows = out[0].copy()
        num_classes = rows.shape[1] - 5
        if not 0 <= self.person_class < num_classes:
            raise InputError(f"{self.path}: person_class={self.person_class} but the model has {num_classes} classes")
        if self.decode_grid:
            rows = self._decode_grid(rows)
        elif rows.size and rows[:, 2:4].min() < 0:
            raise InputError(f"{self.path}: yolox output has negative box sizes, so its rows look undecoded "
                             f"(exported without --decode_in_inference); pass decode_grid=True")
        scores = rows[:, 4] * rows[:, 5 + self.person_class]
        keep = scores >= self.score_thr
        rows, scores = rows[keep], scores[keep]
        xywh = np.concatenate([rows[:, 0:2] - rows[:, 2:4] / 2, rows[:, 2:4], scores[:, None]], axis=1)
        xywh = xywh[_nms(xywh, self.nms_thr)]
        return np.concatenate([xywh[:, 0:2], xywh[:, 0:2] + xywh[:, 2:4], xywh[:, 4:5]], axis=1)

    def _decode_grid(self, rows: np.ndarray) -> np.ndarray:
        """YOLOX rows exported without decoding: (x, y) offsets of a grid cell and log (w, h), in
        units of the level's stride, levels in stride order, cells row-major (YOLOX demo_postprocess)."""
        in_w, in_h = self.input_size
        for strides in (YOLOX_STRIDES, YOLOX_STRIDES + (64,)):
            sizes = [(in_h // s, in_w // s) for s in strides]
            if sum(gh * gw for gh, gw in sizes) == len(rows):
                break
        else:
            raise InputError(f"{self.path}: {len(rows)} yolox rows do not match the grids of strides "
                             f"{YOLOX_STRIDES} (or with 64) at input {in_w}x{in_h}")
        cells, steps = [], []
        for (gh, gw), s in zip(sizes, strides):
            gy, gx = np.mgrid[0:gh, 0:gw]
            cells.append(np.stack([gx.ravel(), gy.ravel()], axis=1))
            steps.append(np.full((gh * gw, 1), s))
        cell, step = np.concatenate(cells).astype(np.float32), np.concatenate(steps).astype(np.float32)
        rows[:, 0:2] = (rows[:, 0:2] + cell) * step
        rows[:, 2:4] = np.exp(rows[:, 2:4]) * step
        return rows


# ---------------------------------------------------------------- video

class BoxTracker:
    """Person boxes for video without running the detector on every frame.

    `tracker(frame) -> (boxes [N, 5], track_ids [N])`. On frame 0 and every `every` frames after it
    the detector runs; new boxes take the id of the carried track they overlap most (greedy, best
    IoU first, IoU >= iou_thr), the others new ids, and unmatched tracks end. On the frames between,
    each track's box comes from that person's pose on the previous frame: call
    `tracker.update(keypoints)` after the pose model with one [K, 3] (x, y, score) array per returned
    box, in the same order. Its box becomes the bounding box of the keypoints scoring > 0.3, enlarged
    `pad` times about its centre (joints lie inside the body outline); with fewer than 3 such
    keypoints the old box is kept. So the pose model runs every frame, the detector every `every`th.

    The schedule, the IoU threshold 0.3 and pad 1.25 follow rtmlib's PoseTracker (det_frequency,
    tracking_thr, pose_to_bbox expansion). `detector_calls` counts the detector runs."""

    KEYPOINT_SCORE_THR = 0.3
    MIN_KEYPOINTS = 3

    def __init__(self, detect: Callable[[np.ndarray], np.ndarray], every: int = 5, iou_thr: float = 0.3,
                 pad: float = 1.25):
        if every < 1:
            raise InputError(f"every must be >= 1 (detect on every n-th frame), got {every}")
        self.detect, self.every, self.iou_thr, self.pad = detect, int(every), float(iou_thr), float(pad)
        self.detector_calls = 0
        self.frame_index = 0
        self._boxes = _empty_boxes()
        self._ids = np.zeros(0, dtype=np.int64)
        self._next_id = 0
        self._frame_size = (0, 0)   # (width, height) of the last frame, to clip pose boxes

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._frame_size = (frame.shape[1], frame.shape[0])
        if self.frame_index % self.every == 0:
            detections = np.asarray(self.detect(frame), dtype=np.float32).reshape(-1, 5)
            self.detector_calls += 1
            self._ids = self._match(detections)
            self._boxes = detections.copy()
        self.frame_index += 1
        return self._boxes.copy(), self._ids.copy()

    def _match(self, detections: np.ndarray) -> np.ndarray:
        """Track ids for `detections`: greedy best-IoU matching against the carried boxes."""
        ids = np.full(len(detections), -1, dtype=np.int64)
        if len(detections) and len(self._boxes):
            iou = box_iou(detections, self._boxes)
            track_taken = np.zeros(len(self._boxes), dtype=bool)
            for flat in np.argsort(-iou, axis=None, kind="stable"):
                d, t = np.unravel_index(flat, iou.shape)
                if iou[d, t] < self.iou_thr:
                    break
                if ids[d] < 0 and not track_taken[t]:
                    ids[d], track_taken[t] = self._ids[t], True
        for d in np.flatnonzero(ids < 0):
            ids[d] = self._next_id
            self._next_id += 1
        return ids

    def update(self, keypoints: Sequence[np.ndarray]) -> None:
        """Move each carried box to its person's pose on the frame just returned (see the class)."""
        if len(keypoints) != len(self._boxes):
            raise InputError(f"update() got {len(keypoints)} keypoint arrays for {len(self._boxes)} boxes; "
                             f"pass one [K, 3] array per box returned by the last call, in order")
        w, h = self._frame_size
        for i, kps in enumerate(keypoints):
            kps = np.asarray(kps, dtype=np.float32).reshape(-1, 3)
            good = kps[kps[:, 2] > self.KEYPOINT_SCORE_THR, :2]
            if len(good) < self.MIN_KEYPOINTS:
                continue
            (x1, y1), (x2, y2) = good.min(axis=0), good.max(axis=0)
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            half_w, half_h = (x2 - x1) * self.pad / 2, (y2 - y1) * self.pad / 2
            x1, x2 = np.clip([cx - half_w, cx + half_w], 0, w)
            y1, y2 = np.clip([cy - half_h, cy + half_h], 0, h)
            if x2 - x1 >= 1 and y2 - y1 >= 1:
                self._boxes[i, :4] = (x1, y1, x2 - x1, y2 - y1)
