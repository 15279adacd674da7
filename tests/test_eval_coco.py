import json
import math

import numpy as np
import pytest

from posedistill.evaluation import (COCO_METRICS, CROWDPOSE_METRICS, coco_results, evaluate_coco, oks_iou,
                                    oks_nms, rescore, soft_oks_nms)
from posedistill.keypoints import COCO, CROWDPOSE, MPII


def _gt_predictions(ann_file):
    """Every non-crowd annotated person as a prediction: its own keypoints, joint score 1 where labelled."""
    data = json.loads(ann_file.read_text())
    preds = []
    for a in data["annotations"]:
        if a.get("iscrowd", 0) or a["num_keypoints"] == 0:
            continue
        kp = np.asarray(a["keypoints"], dtype=np.float64).reshape(-1, 3)
        kp[:, 2] = (kp[:, 2] > 0).astype(float)
        x, y, w, h = a["bbox"]
        preds.append({"image_id": a["image_id"], "keypoints": kp, "area": w * h, "bbox_score": 1.0,
                      "center": np.array([x + w / 2, y + h / 2]), "scale": np.array([w, h])})
    return preds


def test_ground_truth_scores_ap_1_on_coco(data_dir, tmp_path):
    ann = data_dir / "coco" / "test_coco.json"
    preds = _gt_predictions(ann)
    metrics = evaluate_coco(preds, ann, meta=COCO, out_dir=tmp_path)
    assert tuple(metrics) == COCO_METRICS
    assert metrics["AP"] == 1.0 and metrics["AR"] == 1.0 and metrics["AP50"] == 1.0
    written = json.loads((tmp_path / "keypoint_results.json").read_text())
    assert len(written) == len(preds)
    assert set(written[0]) == {"image_id", "category_id", "keypoints", "score", "center", "scale"}
    assert len(written[0]["keypoints"]) == 17 * 3


def test_perturbed_predictions_score_below_1(data_dir):
    ann = data_dir / "coco" / "test_coco.json"
    preds = _gt_predictions(ann)
    rng = np.random.default_rng(0)
    for p in preds:
        p["keypoints"][:, :2] += rng.normal(0, 8, (17, 2))
    metrics = evaluate_coco(preds, ann)
    assert 0.0 < metrics["AP"] < 1.0


def test_ground_truth_scores_ap_1_on_crowdpose_and_ochuman(data_dir):
    cp = data_dir / "crowdpose" / "test_crowdpose.json"
    metrics = evaluate_coco(_gt_predictions(cp), cp, meta=CROWDPOSE)
    assert tuple(metrics) == CROWDPOSE_METRICS
    assert metrics["AP"] == 1.0 and metrics["AR"] == 1.0
    # both sample images have crowdIndex in [0.2, 0.8): only the medium level has people
    assert metrics["AP(M)"] == 1.0 and metrics["AP(E)"] == -1.0 and metrics["AP(H)"] == -1.0
    oc = data_dir / "ochuman" / "test_ochuman.json"
    metrics = evaluate_coco(_gt_predictions(oc), oc)        # meta from the 17 joints of the file
    assert metrics["AP"] == 1.0 and metrics["AR"] == 1.0


def test_oks_iou_by_hand():
    sig = np.array([0.1, 0.2])
    g = np.array([[0.0, 0.0, 1.0], [10.0, 0.0, 1.0]])
    d = np.array([[[3.0, 4.0, 1.0], [10.0, 0.0, 0.1]]])
    # joint 0: d^2 = 25, var = (2 * 0.1)^2 = 0.04, mean area 100 -> exp(-25 / 0.04 / 100 / 2); joint 1: exp(0)
    expected = (math.exp(-25 / 0.04 / 100 / 2) + 1.0) / 2
    assert oks_iou(g, d, 100.0, np.array([100.0]), sig)[0] == pytest.approx(expected)
    # with a score threshold only joint 0 (scored in both) counts
    assert oks_iou(g, d, 100.0, np.array([100.0]), sig, vis_thr=0.2)[0] == pytest.approx(math.exp(-25 / 8))


def test_nms_and_rescoring():
    sig = COCO.sigmas
    base = np.zeros((17, 3))
    base[:, 0], base[:, 1], base[:, 2] = np.linspace(0, 160, 17), np.linspace(0, 300, 17), 0.9
    near = base.copy()
    near[:, :2] += 0.5                                  # a duplicate of the same person
    far = base.copy()
    far[:, 0] += 400
    kps = np.stack([near, base, far])
    scores, areas = np.array([0.5, 0.8, 0.7]), np.full(3, 160.0 * 300)
    assert oks_nms(kps, scores, areas, 0.9, sig) == [1, 2]
    assert soft_oks_nms(kps, scores, areas, 0.9, sig) == [1, 2, 0]       # duplicate decays to last
    # rescoring: box score x mean of joint scores above 0.2 (0 when none)
    kp = np.zeros((17, 3))
    kp[:3, 2] = [0.9, 0.5, 0.1]
    assert rescore(kp, 0.8) == pytest.approx(0.8 * 0.7)
    assert rescore(np.zeros((17, 3)), 1.0) == 0.0
    preds = [{"image_id": 1, "keypoints": k, "area": a, "bbox_score": s} for k, a, s in zip(kps, areas, scores)]
    res = coco_results(preds, sig)
    assert [r["score"] for r in res] == pytest.approx([0.8 * 0.9, 0.7 * 0.9])


def test_bad_input_is_named(data_dir, tmp_path):
    ann = data_dir / "coco" / "test_coco.json"
    preds = _gt_predictions(ann)
    bad = [dict(preds[0], keypoints=np.zeros((16, 3)))]
    with pytest.raises(ValueError, match=r"shape \(16, 3\), expected \(17, 3\)"):
        evaluate_coco(bad, ann)
    with pytest.raises(ValueError, match="image_id 123456789"):
        evaluate_coco([dict(preds[0], image_id=123456789)], ann)
    with pytest.raises(ValueError, match="no 'area'"):
        evaluate_coco([{k: v for k, v in preds[0].items() if k != "area"}], ann)
    with pytest.raises(ValueError, match="17 keypoints but meta 'mpii' has 16"):
        evaluate_coco(preds, ann, meta=MPII)
    with pytest.raises(ValueError, match="no predictions"):
        evaluate_coco([], ann)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        evaluate_coco(preds, tmp_path / "missing.json")
