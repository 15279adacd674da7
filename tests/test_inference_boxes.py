"""Person box sources (posedistill/inference/boxes.py): detection files, the whole-image box, ONNX
detectors in the two documented output layouts (tiny models built and exported here), and the
video box tracker."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from posedistill.data.coco import AnnotationError
from posedistill.inference.boxes import (BoxTracker, OnnxDetector, box_iou, read_detections,
                                         whole_image_box)

# ---------------------------------------------------------------- detection files


def _write(tmp_path, entries, name="dets.json"):
    path = tmp_path / name
    path.write_text(json.dumps(entries))
    return path


def test_detections_filter_by_category_and_score_and_sort(tmp_path):
    path = _write(tmp_path, [
        {"image_id": 397133, "category_id": 1, "bbox": [10, 20, 30, 40], "score": 0.5},
        {"image_id": 397133, "category_id": 1, "bbox": [50, 60, 70, 80], "score": 0.9},
        {"image_id": 397133, "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.05},    # below thr
        {"image_id": 397133, "category_id": 3, "bbox": [1, 1, 5, 5], "score": 0.99},    # a car
        {"image_id": 7, "category_id": 1, "bbox": [0, 0, 8, 9], "score": 0.4},
    ])
    dets = read_detections(path, score_thr=0.1)
    assert len(dets) == 2 and dets.num_boxes == 3 and dets.num_dropped == 2
    boxes = dets.boxes_for("/data/val2017/000000397133.jpg")       # id from the numeric stem
    assert boxes.dtype == np.float32 and boxes.shape == (2, 5)
    np.testing.assert_allclose(boxes, [[50, 60, 70, 80, 0.9], [10, 20, 30, 40, 0.5]], rtol=1e-6)
    np.testing.assert_allclose(dets.boxes_for("frame.png", image_id=7), [[0, 0, 8, 9, 0.4]], rtol=1e-6)
    assert dets.boxes_for("000000000001.jpg").shape == (0, 5)
    # another category id keeps only that category
    cars = read_detections(path, category_id=3).boxes_for("x.jpg", image_id=397133)
    np.testing.assert_allclose(cars, [[1, 1, 5, 5, 0.99]], rtol=1e-6)


def test_detections_lookup_by_file_name_first(tmp_path):
    path = _write(tmp_path, [
        {"file_name": "clips/walk_0001.jpg", "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.8},
        {"file_name": "walk_0002.jpg", "category_id": 1, "bbox": [5, 6, 7, 8], "score": 0.7},
        {"image_id": 1, "category_id": 1, "bbox": [9, 9, 9, 9], "score": 0.6},
    ])
    dets = read_detections(path)
    assert len(dets) == 3
    np.testing.assert_allclose(dets.boxes_for("/elsewhere/walk_0001.jpg"), [[1, 2, 3, 4, 0.8]], rtol=1e-6)
    np.testing.assert_allclose(dets.boxes_for("walk_0002.jpg", image_id=1), [[5, 6, 7, 8, 0.7]], rtol=1e-6)
    # by id: the entries of image 1, with or without a file name
    assert dets.boxes_for("other.jpg", image_id=1).shape == (2, 5)


@pytest.mark.parametrize("entry, field", [
    (["not", "a", "dict"], "JSON object"),
    ({"image_id": 1, "category_id": 1, "bbox": [1, 2, 3], "score": 0.5}, "'bbox'"),
    ({"image_id": 1, "category_id": 1, "bbox": [1, 2, float("nan"), 4], "score": 0.5}, "'bbox'"),
    ({"image_id": 1, "category_id": 1, "bbox": [1, 2, 0, 4], "score": 0.5}, "'bbox'"),
    ({"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}, "'score'"),
    ({"category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}, "'image_id'"),
])
def test_malformed_detection_names_file_index_and_field(tmp_path, entry, field):
    good = {"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}
    path = _write(tmp_path, [good, good, entry])
    with pytest.raises(AnnotationError) as err:
        read_detections(path)
    message = str(err.value)
    assert str(path) in message and "entry [2]" in message and field in message and "\n" not in message


def test_detections_not_a_list(tmp_path):
    with pytest.raises(AnnotationError, match="JSON list"):
        read_detections(_write(tmp_path, {"annotations": []}))


def test_whole_image_box_and_iou():
    np.testing.assert_array_equal(whole_image_box(640, 480), [[0, 0, 640, 480, 1]])
    iou = box_iou(np.array([[0, 0, 10, 10, 0.9], [100, 100, 1, 1, 0.1]]), np.array([[5, 0, 10, 10], [0, 0, 10, 10]]))
    np.testing.assert_allclose(iou, [[50 / 150, 1.0], [0.0, 0.0]], rtol=1e-6)


# ---------------------------------------------------------------- ONNX detectors

def _bright_box(x: torch.Tensor) -> torch.Tensor:
    """(x1, y1, x2, y2) in input pixels of the region whose channel mean is above 200."""
    mask = (x[0].mean(0) > 200).float()                               # [H, W]
    rows, cols = mask.amax(1), mask.amax(0)
    iy = torch.arange(x.shape[2], dtype=torch.float32)
    ix = torch.arange(x.shape[3], dtype=torch.float32)
    big = torch.full_like(iy, 1e6)
    y1, y2 = torch.where(rows > 0, iy, big).amin(), torch.where(rows > 0, iy, -big).amax() + 1
    big = torch.full_like(ix, 1e6)
    x1, x2 = torch.where(cols > 0, ix, big).amin(), torch.where(cols > 0, ix, -big).amax() + 1
    return torch.stack([x1, y1, x2, y2])


class End2End(torch.nn.Module):
    """MMDeploy's end2end layout: dets [1, 3, 5] (x1, y1, x2, y2, score), labels [1, 3]. Row 0 is the
    bright region (person, 0.9); row 1 the same box labelled class 2 (0.95); row 2 a person at 0.1."""

    def forward(self, x):
        box = _bright_box(x)
        one = torch.ones(1)
        dets = torch.stack([torch.cat([box, 0.9 * one]), torch.cat([box, 0.95 * one]),
                            torch.cat([box + 4, 0.1 * one])])[None]
        labels = torch.tensor([[0, 2, 0]], dtype=torch.int64)
        return dets, labels


class YoloxDecoded(torch.nn.Module):
    """YOLOX --decode_in_inference layout: [1, 4, 5 + 2] rows (cx, cy, w, h, obj, person, other)."""

    def forward(self, x):
        x1, y1, x2, y2 = _bright_box(x)
        cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        t = torch.stack
        rows = t([t([cx, cy, w, h, 0.9 + 0 * cx, 0.9 + 0 * cx, 0.1 + 0 * cx]),      # the person: 0.81
                  t([cx + 2, cy + 1, w, h, 0.8 + 0 * cx, 0.9 + 0 * cx, 0 * cx]),      # duplicate: 0.72
                  t([cx, cy, w, h, 0.9 + 0 * cx, 0.1 + 0 * cx, 0.95 + 0 * cx]),       # other class
                  t([30 + 0 * cx, 30 + 0 * cx, 20 + 0 * cx, 20 + 0 * cx, 0.9 + 0 * cx, 0.6 + 0 * cx, 0 * cx])])
        return rows[None]


class YoloxGrid(torch.nn.Module):
    """YOLOX exported without decoding, input 64 x 64: 8*8 + 4*4 + 2*2 = 84 rows of grid offsets and
    log sizes. One person at stride 16, cell (x 1, y 2): centre (24, 40), size 32 x 48."""

    def forward(self, x):
        rows = torch.zeros(84, 6)
        rows[:, 2:4] = -1.0                                          # log sizes: negative is normal
        rows[64 + 2 * 4 + 1] = torch.tensor([0.5, 0.5, math.log(2.0), math.log(3.0), 1.0, 0.9])
        return (rows + 0 * x.mean())[None]


class Unknown(torch.nn.Module):
    def forward(self, x):
        return x.mean((2, 3))


def _export(module, path, size_hw, input_name, output_names, dynamic=False):
    dummy = torch.zeros(1, 3, *size_hw)
    axes = {input_name: {2: "height", 3: "width"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # torch 2.13: the TorchScript exporter (dynamo=False) needs no onnxscript
        torch.onnx.export(module, dummy, str(path), input_names=[input_name], output_names=output_names,
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    return path


def _image_with_person():
    """640 x 480 grey image with a white person-sized rectangle x 200..360, y 120..400."""
    image = np.full((480, 640, 3), 60, dtype=np.uint8)
    image[120:400, 200:360] = 255
    return image


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("detectors")
    return {
        "end2end": _export(End2End(), d / "end2end.onnx", (256, 320), "input", ["dets", "labels"], dynamic=True),
        "yolox": _export(YoloxDecoded(), d / "yolox.onnx", (320, 320), "images", ["output"]),
        "grid": _export(YoloxGrid(), d / "grid.onnx", (64, 64), "images", ["output"]),
        "unknown": _export(Unknown(), d / "unknown.onnx", (32, 32), "input", ["feat"]),
    }


def test_end2end_layout_maps_letterboxed_boxes_to_image_pixels(models):
    with pytest.raises(ValueError, match="input_size"):
        OnnxDetector(models["end2end"])                            # dynamic input needs a size
    det = OnnxDetector(models["end2end"], input_size=(320, 256), threads=1)   # (width, height)
    assert det.layout == "end2end"
    boxes = det(_image_with_person())      # scale 0.4: 256 x 192 in a 320 x 256 input
    assert boxes.shape == (1, 5) and boxes.dtype == np.float32
    np.testing.assert_allclose(boxes[0, :4], [200, 120, 160, 280], atol=2)
    assert boxes[0, 4] == pytest.approx(0.9)


def test_yolox_layout_scores_filters_nms_and_maps_back(models):
    det = OnnxDetector(models["yolox"], score_thr=0.3, nms_thr=0.65)
    assert det.layout == "yolox" and det.input_size == (320, 320)
    boxes = det(_image_with_person())      # scale 0.5
    assert boxes.shape == (2, 5)           # duplicate removed by NMS, other class dropped
    np.testing.assert_allclose(boxes[0, :4], [200, 120, 160, 280], atol=2)
    np.testing.assert_allclose(boxes[1, :4], [40, 40, 40, 40], atol=1e-3)    # (20..40 input px) / 0.5
    np.testing.assert_allclose(boxes[:, 4], [0.81, 0.54], atol=1e-5)
    # without NMS the duplicate stays; a high threshold keeps only the best
    assert len(OnnxDetector(models["yolox"], nms_thr=1.0)(_image_with_person())) == 3
    assert len(OnnxDetector(models["yolox"], score_thr=0.8)(_image_with_person())) == 1


def test_yolox_grid_decode(models):
    image = np.zeros((128, 128, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="decode_grid=True"):
        OnnxDetector(models["grid"])(image)
    boxes = OnnxDetector(models["grid"], decode_grid=True)(image)   # scale 0.5
    np.testing.assert_allclose(boxes, [[16, 32, 64, 96, 0.9]], atol=1e-4)


def test_preprocess_letterbox_and_normalisation(models):
    det = OnnxDetector(models["yolox"], mean=OnnxDetector.RTMDET_MEAN, std=OnnxDetector.RTMDET_STD)
    blob, (sx, sy) = det.preprocess(_image_with_person())
    assert blob.shape == (1, 3, 320, 320) and blob.dtype == np.float32 and (sx, sy) == (0.5, 0.5)
    mean, std = np.array(OnnxDetector.RTMDET_MEAN), np.array(OnnxDetector.RTMDET_STD)
    np.testing.assert_allclose(blob[0, :, 300, 10], (114 - mean) / std, rtol=1e-5)    # padding below
    np.testing.assert_allclose(blob[0, :, 100, 150], (255 - mean) / std, rtol=1e-5)   # inside the person
    np.testing.assert_allclose(blob[0, :, 10, 10], (60 - mean) / std, rtol=1e-5)      # image, top-left


def test_unknown_layout_is_refused_with_what_was_found(models):
    with pytest.raises(ValueError) as err:
        OnnxDetector(models["unknown"])
    message = str(err.value)
    assert "feat" in message and "[1, 3]" in message and "end2end" in message and "yolox" in message


# ---------------------------------------------------------------- tracker

def _person_box(t: int, start_x: float, speed: float = 3.0) -> list[float]:
    return [start_x + speed * t, 100.0, 80.0, 200.0]


def _keypoints_for(box, pad=1.25):
    """17 confident joints whose bounding box, enlarged `pad` times, is `box` (plus 2 unsure ones)."""
    x, y, w, h = box
    cx, cy, iw, ih = x + w / 2, y + h / 2, w / pad, h / pad
    u = np.linspace(0, 1, 17)
    kps = np.stack([cx - iw / 2 + iw * u, cy - ih / 2 + ih * u[::-1], np.full(17, 0.9)], axis=1)
    unsure = np.array([[0, 0, 0.1], [639, 479, 0.2]])
    return np.concatenate([kps, unsure]).astype(np.float32)


def test_box_tracker_schedule_ids_and_pose_updates():
    """Person A walks right 3 px a frame; B appears at frame 10; A is gone at frame 15."""
    calls = []

    def truth(t):
        people = []
        if t < 15:
            people.append(_person_box(t, 100))
        if t >= 10:
            people.append(_person_box(t, 400, speed=-1))
        return people

    def detect(frame):
        t = int(frame[0, 0, 0])
        calls.append(t)
        return np.array([b + [0.9] for b in truth(t)], dtype=np.float32).reshape(-1, 5)

    tracker = BoxTracker(detect, every=5)
    for t in range(18):
        boxes, ids = tracker(np.full((480, 640, 3), t, dtype=np.uint8))
        assert boxes.shape == (len(ids), 5)
        if t % 5 == 0:
            np.testing.assert_allclose(boxes[:, :4], truth(t), atol=1e-4)
        else:   # boxes follow the pose seen on the previous frame
            np.testing.assert_allclose(boxes[:, :4], truth(t - 1), atol=1e-3)
        expected_ids = {0: [0], 5: [0], 10: [0, 1], 15: [1]}
        if t in expected_ids:
            assert ids.tolist() == expected_ids[t], t
        tracker.update([_keypoints_for(b) for b in truth(t)])    # the pose model's output on frame t
    assert calls == [0, 5, 10, 15] and tracker.detector_calls == 4


def test_box_tracker_keeps_box_without_enough_keypoints_and_checks_count():
    tracker = BoxTracker(lambda frame: np.array([[10, 10, 50, 100, 0.8]], dtype=np.float32), every=3)
    frame = np.zeros((200, 200, 3), dtype=np.uint8)
    tracker(frame)
    few = np.array([[0, 0, 0.9], [5, 5, 0.9], [9, 9, 0.1]], dtype=np.float32)   # 2 confident joints
    tracker.update([few])
    boxes, ids = tracker(frame)
    np.testing.assert_allclose(boxes, [[10, 10, 50, 100, 0.8]])
    assert ids.tolist() == [0]
    with pytest.raises(ValueError, match="one \\[K, 3\\] array per box"):
        tracker.update([])
