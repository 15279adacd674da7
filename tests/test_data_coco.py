import json
import os

import numpy as np
import pytest

from posedistill.data.coco import AnnotationError, CocoKeypoints, load_coco_instances
from posedistill.keypoints import COCO, CROWDPOSE, MPII


def test_coco_ground_truth_filters_crowd_and_empty(data_dir):
    ds = CocoKeypoints(data_dir / "coco/test_coco.json", data_dir / "coco", meta=COCO)
    inst = ds.gt_instances()
    raw = json.loads((data_dir / "coco/test_coco.json").read_text())["annotations"]
    expected = [a["id"] for a in raw if not a["iscrowd"] and max(a["keypoints"][2::3]) > 0]
    assert [i.ann_id for i in inst] == expected and len(inst) == 12     # two zero-keypoint annotations dropped
    first = inst[0]
    assert first.keypoints.shape == (17, 3) and first.keypoints.dtype == np.float32
    assert os.path.isfile(first.image_path) and first.score == 1.0 and first.ann_id == 442619
    # HRNet clean_bbox: x2 = x1 + (w - 1), clipped to the image
    np.testing.assert_allclose(first.bbox, [280.79, 44.73, 217.7, 345.68], atol=1e-3)
    for i in inst:
        img = ds.images[i.image_id]
        assert i.bbox[0] >= 0 and i.bbox[0] + i.bbox[2] <= img["width"] - 1 + 1e-3
        assert i.area == pytest.approx(i.bbox[2] * i.bbox[3], rel=1e-5)
    assert ds.coco.getImgIds() and len(ds.coco.getAnnIds()) == len(raw)


def test_coco_detections(data_dir):
    inst = load_coco_instances(data_dir / "coco/test_coco.json", data_dir / "coco", meta=COCO,
                               detections=data_dir / "coco/test_coco_det_AP_H_56.json")
    assert len(inst) == 118 and all(i.ann_id == -1 for i in inst)
    assert all(not i.keypoints.any() for i in inst) and inst[0].score == pytest.approx(0.99997, abs=1e-4)
    kept = load_coco_instances(data_dir / "coco/test_coco.json", data_dir / "coco", meta=COCO,
                               detections=data_dir / "coco/test_coco_det_AP_H_56.json", det_score_thr=0.5)
    assert 0 < len(kept) < 118 and min(i.score for i in kept) >= 0.5


def test_crowdpose_gt_and_detections(data_dir):
    ds = CocoKeypoints(data_dir / "crowdpose/test_crowdpose.json", data_dir / "crowdpose", meta=CROWDPOSE)
    assert ds.num_joints == 14 and ds.is_crowdpose
    gt = ds.gt_instances()
    assert len(gt) == 4 and gt[0].keypoints.shape == (14, 3)
    dets = ds.detection_instances(data_dir / "crowdpose/test_crowdpose_det_AP_40.json")
    assert len(dets) == 6
    assert type(ds.coco).__module__.startswith("xtcocotools")      # CrowdPose AP is xtcocotools' keypoints_crowd


def test_ochuman_loads(data_dir):
    inst = load_coco_instances(data_dir / "ochuman/test_ochuman.json", data_dir / "ochuman", meta=COCO)
    assert len(inst) == 5 and all(os.path.isfile(i.image_path) for i in inst)


def _write(tmp_path, data, name="bad.json"):
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return p


def _coco_copy(data_dir):
    return json.loads((data_dir / "coco/test_coco.json").read_text())


def test_wrong_length_keypoints_names_file_and_annotation(data_dir, tmp_path):
    data = _coco_copy(data_dir)
    data["annotations"][2]["keypoints"] = data["annotations"][2]["keypoints"][:-3]
    bad_id = data["annotations"][2]["id"]
    p = _write(tmp_path, data)
    with pytest.raises(AnnotationError) as e:
        load_coco_instances(p, data_dir / "coco", meta=COCO)
    msg = str(e.value)
    assert str(p) in msg and f"annotation id {bad_id}" in msg and "48" in msg and "51" in msg
    # non-strict: skipped, counted and warned, the rest still loads
    with pytest.warns(UserWarning, match=f"annotation id {bad_id}"):
        ds = CocoKeypoints(p, data_dir / "coco", meta=COCO, strict=False)
    assert len(ds.skipped) == 1 and ds.skipped[0][0] == bad_id
    assert bad_id not in [i.ann_id for i in ds.gt_instances()] and len(ds.gt_instances()) == 11


def test_missing_field_and_unknown_image(data_dir, tmp_path):
    data = _coco_copy(data_dir)
    del data["annotations"][0]["bbox"]
    p = _write(tmp_path, data)
    with pytest.raises(AnnotationError, match=r"annotation id 442619: missing field\(s\) \['bbox'\]") as e:
        load_coco_instances(p, data_dir / "coco", meta=COCO)
    assert str(p) in str(e.value)

    data = _coco_copy(data_dir)
    data["annotations"][1]["image_id"] = 12345
    p = _write(tmp_path, data, "unknown.json")
    with pytest.raises(AnnotationError, match="annotation id 198196: image_id 12345 is not in 'images'"):
        load_coco_instances(p, data_dir / "coco", meta=COCO)

    data = _coco_copy(data_dir)
    del data["categories"]
    p = _write(tmp_path, data, "nocat.json")
    with pytest.raises(AnnotationError, match="missing top-level key 'categories'"):
        load_coco_instances(p, data_dir / "coco")


def test_joint_count_must_match_meta(data_dir):
    with pytest.raises(AnnotationError, match="17 joints but the keypoint set 'mpii' has 16"):
        load_coco_instances(data_dir / "coco/test_coco.json", data_dir / "coco", meta=MPII)


def test_bad_detection_file(data_dir, tmp_path):
    dets = json.loads((data_dir / "coco/test_coco_det_AP_H_56.json").read_text())
    del dets[3]["score"]
    p = _write(tmp_path, dets, "dets.json")
    with pytest.raises(AnnotationError, match=r"detection \[3\]: missing field\(s\) \['score'\]"):
        load_coco_instances(data_dir / "coco/test_coco.json", data_dir / "coco", detections=p)
    dets = json.loads((data_dir / "coco/test_coco_det_AP_H_56.json").read_text())
    dets[0]["image_id"] = 999
    p = _write(tmp_path, dets, "dets2.json")
    with pytest.warns(UserWarning, match="skipped 1 detection"):
        inst = load_coco_instances(data_dir / "coco/test_coco.json", data_dir / "coco", detections=p)
    assert len(inst) == 117


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_coco_instances(tmp_path / "nope.json", tmp_path)
