import json
import math

import numpy as np
import pytest
from scipy.io import savemat

from posedistill.evaluation import GROUPS, evaluate_pckh, format_pckh_table, pckh


def _mpii(data_dir):
    entries = json.loads((data_dir / "mpii" / "test_mpii.json").read_text())
    gt = np.array([e["joints"] for e in entries], dtype=np.float64) - 1.0     # 0-based image pixels
    vis = np.array([e["joints_vis"] for e in entries]) > 0
    return entries, gt, vis


def test_ground_truth_gives_100(data_dir):
    entries, gt, vis = _mpii(data_dir)
    preds = [{"ann_id": i, "keypoints": np.concatenate([gt[i], np.ones((16, 1))], 1)} for i in range(len(gt))]
    m = evaluate_pckh(preds, data_dir / "mpii" / "test_mpii.json")
    for key in list(GROUPS) + ["Mean", "Mean@0.1"]:
        assert m[key] == 100.0, key
    assert m["people_skipped"] == 0


def test_perturbed_case_by_hand():
    # two people, head size 10 -> correct if error <= 5 px (PCKh@0.5)
    gt = np.zeros((2, 16, 2))
    vis = np.ones((2, 16), bool)
    vis[1, 15] = False                              # person 1's left wrist unlabelled
    pred = gt.copy()
    pred[0, 9, 0] = 6.0                             # head_top of person 0 wrong
    pred[1, 9, 0] = 5.0                             # on the threshold: correct (<=)
    pred[0, 10, 1] = 7.0                            # right wrist of person 0 wrong
    pred[1, 15, 1] = 50.0                           # unlabelled: ignored
    pred[0, 6, 0] = pred[1, 7, 0] = 40.0            # pelvis / thorax wrong: not in any number below
    pred[0, 8, 0] = 1.5                             # upper neck: wrong at 0.1 (> 1 px), right at 0.5
    m = pckh(pred, gt, vis, np.array([10.0, 10.0]))
    assert m["Head"] == 50.0
    # right wrist 1/2 correct = 50, left wrist 1/1 = 100 -> mean of the two
    assert m["Wrist"] == 75.0
    assert m["Shoulder"] == m["Elbow"] == m["Hip"] == m["Knee"] == m["Ankle"] == 100.0
    # mean over the 14 joints that count: 28 - 1 unlabelled = 27 labelled, 2 wrong
    assert m["Mean"] == pytest.approx(100 * 25 / 27)
    # at 0.1 (1 px): head tops of both, right wrist, upper neck of person 0 wrong
    assert m["Mean@0.1"] == pytest.approx(100 * 23 / 27)
    table = format_pckh_table(m, "toy")
    assert "| toy | 50.00 |" in table and "92.59" in table


def test_people_without_head_size_are_skipped():
    gt = np.zeros((2, 16, 2))
    pred = gt + 100.0
    pred[0] = 0.0
    m = pckh(pred, gt, np.ones((2, 16)), np.array([10.0, 0.0]))
    assert m["Mean"] == 100.0 and m["people_skipped"] == 1.0


def test_official_mat_file_is_used(data_dir, tmp_path):
    entries, gt, vis = _mpii(data_dir)
    n = len(entries)
    # a mpii_gt_val.mat-style file: 1-based joints [16, 2, N], jnt_missing [16, N], head boxes [2, 2, N]
    heads = np.zeros((2, 2, n))
    heads[1] = 20.0 / 0.6 / math.sqrt(2)            # head size 0.6 x diagonal = 20 px for everybody
    savemat(tmp_path / "gt.mat", {"pos_gt_src": np.transpose(gt + 1.0, (1, 2, 0)),
                                  "jnt_missing": (~vis).T.astype(np.float64), "headboxes_src": heads})
    pred = gt.copy()
    pred[:, 12, 0] += 9.0                           # right shoulder 9 px off: within 0.5 x 20
    pred[:, 13, 0] += 11.0                          # left shoulder 11 px off: outside
    preds = [{"ann_id": i, "keypoints": pred[i]} for i in range(n)]
    m = evaluate_pckh(preds, data_dir / "mpii" / "test_mpii.json", head_boxes=tmp_path / "gt.mat")
    assert m["head_size_from_mat"] == 1.0
    assert m["Shoulder"] == pytest.approx(50.0)
    assert m["Head"] == 100.0


def test_bad_input_is_named(data_dir):
    ann = data_dir / "mpii" / "test_mpii.json"
    with pytest.raises(ValueError, match=r"gt must be \[N, 16, 2\]"):
        pckh(np.zeros((2, 17, 2)), np.zeros((2, 17, 2)), np.ones((2, 17)), np.ones(2))
    with pytest.raises(ValueError, match="head_size must have 2 entries"):
        pckh(np.zeros((2, 16, 2)), np.zeros((2, 16, 2)), np.ones((2, 16)), np.ones(3))
    with pytest.raises(ValueError, match="have no prediction"):
        evaluate_pckh([{"ann_id": 0, "keypoints": np.zeros((16, 3))}], ann)
    with pytest.raises(ValueError, match="ann_id 7"):
        evaluate_pckh([{"ann_id": 7, "keypoints": np.zeros((16, 3))}], ann)
    with pytest.raises(ValueError, match=r"shape \(17, 3\)"):
        evaluate_pckh([{"ann_id": 0, "keypoints": np.zeros((17, 3))}], ann)
