import json
import math

import numpy as np
import pytest
from scipy.io import savemat

from posedistill.data.coco import AnnotationError
from posedistill.data.mpii import load_mpii, load_mpii_instances
from posedistill.keypoints import MPII


def _entries(data_dir):
    return json.loads((data_dir / "mpii/test_mpii.json").read_text())


def test_mpii_loads_with_hrnet_box_convention(data_dir):
    inst, source = load_mpii(data_dir / "mpii/test_mpii.json", data_dir / "mpii", meta=MPII)
    raw = _entries(data_dir)
    assert len(inst) == 5 and source == "approx"
    a, first = raw[0], inst[0]
    s = a["scale"]
    # centre moved down 15*scale, 1-based -> 0-based, square box of 200*scale (the dataset pads by 1.25)
    cx, cy = a["center"][0] - 1, a["center"][1] + 15 * s - 1
    np.testing.assert_allclose(first.bbox, [cx - 100 * s, cy - 100 * s, 200 * s, 200 * s], rtol=1e-5)
    np.testing.assert_allclose(first.keypoints[:, :2], np.array(a["joints"]) - 1, atol=1e-4)
    assert first.image_id == int(a["image"].split(".")[0]) and first.ann_id == 0
    # entry 2 has unlabelled ankles
    assert raw[2]["joints_vis"][0] == 0 and inst[2].keypoints[0].tolist() == [0, 0, 0]
    assert set(np.unique(inst[2].keypoints[:, 2])) == {0.0, 2.0}
    # approximate head size: 0.6 * sqrt(2) * |head_top - upper_neck|
    top, neck = np.array(a["joints"][9]), np.array(a["joints"][8])
    assert first.head_size == pytest.approx(0.6 * math.sqrt(2) * np.linalg.norm(top - neck), rel=1e-6)


def test_mpii_head_box_field(data_dir, tmp_path):
    raw = _entries(data_dir)
    for a in raw:
        a["head_box"] = [10, 20, 40, 60]
    p = tmp_path / "hb.json"
    p.write_text(json.dumps(raw))
    inst, source = load_mpii(p, data_dir / "mpii")
    assert source == "json" and inst[0].head_size == pytest.approx(0.6 * 50.0)


def test_mpii_official_mat(data_dir, tmp_path):
    raw = _entries(data_dir)
    n = len(raw)
    boxes = np.zeros((2, 2, n))
    boxes[0] = [[100.0] * n, [50.0] * n]
    boxes[1] = [130.0 + np.arange(n), [90.0] * n]                                   # diagonal (30 + i, 40)
    pos = np.stack([np.array(a["joints"], dtype=np.float64) for a in raw], -1)        # [16, 2, N], 1-based
    missing = np.stack([1 - np.array(a["joints_vis"]) for a in raw], -1)
    mat = tmp_path / "mpii_gt_val.mat"
    savemat(mat, {"headboxes_src": boxes, "pos_gt_src": pos, "jnt_missing": missing})
    inst, source = load_mpii(data_dir / "mpii/test_mpii.json", data_dir / "mpii", head_boxes=mat)
    assert source == "mat"
    for i, it in enumerate(inst):
        assert it.head_size == pytest.approx(0.6 * math.hypot(30.0 + i, 40.0))
    # a .mat in another order is refused
    savemat(mat, {"headboxes_src": boxes, "pos_gt_src": pos[:, :, ::-1], "jnt_missing": missing[:, ::-1]})
    with pytest.raises(AnnotationError, match="do not match entry 0"):
        load_mpii(data_dir / "mpii/test_mpii.json", data_dir / "mpii", head_boxes=mat)
    savemat(mat, {"headboxes_src": boxes[:, :, :3], "pos_gt_src": pos, "jnt_missing": missing})
    with pytest.raises(AnnotationError, match=r"expected \(2, 2, 5\)"):
        load_mpii(data_dir / "mpii/test_mpii.json", data_dir / "mpii", head_boxes=mat)


def test_mpii_bad_entries_name_file_and_entry(data_dir, tmp_path):
    raw = _entries(data_dir)
    del raw[3]["scale"]
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(raw))
    with pytest.raises(AnnotationError, match=r"entry 3 \(annotation id 3\): missing field\(s\) \['scale'\]") as e:
        load_mpii_instances(p, data_dir / "mpii")
    assert str(p) in str(e.value)
    raw = _entries(data_dir)
    raw[1]["joints"] = raw[1]["joints"][:15]
    p.write_text(json.dumps(raw))
    with pytest.raises(AnnotationError, match=r"entry 1 .*'joints' must be 16 \[x, y\] pairs, got 15"):
        load_mpii_instances(p, data_dir / "mpii")
