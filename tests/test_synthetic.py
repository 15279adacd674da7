"""Synthetic data: formats load in the field's tools, keypoints sit on the drawn figures,
determinism, missing-label rate, visibility flags, CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from posedistill.cli import main as cli_main
from posedistill.data import synth_render as R
from posedistill.commands.data import main
from posedistill.data.synthetic import FORMAT_POINTS, generate_dataset, generate_video, render_image, scene_config
from posedistill.keypoints import COCO, CROWDPOSE, MPII

SIZE = (200, 150)


@pytest.fixture(scope="module")
def coco_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("coco")
    return generate_dataset(out, num_images=8, seed=3, size=SIZE, return_masks=True)


def test_coco_json_loads_in_pycocotools(coco_set):
    from pycocotools.coco import COCO as CocoApi

    api = CocoApi(str(coco_set.ann_file))
    assert len(api.getImgIds()) == 8
    assert len(api.getAnnIds()) == coco_set.num_people > 0
    cat = api.loadCats(1)[0]
    assert cat["keypoints"] == list(COCO.joints)
    assert [tuple(e) for e in cat["skeleton"]] == [(a + 1, b + 1) for a, b in COCO.skeleton]
    dets = api.loadRes(str(coco_set.det_file))
    assert len(dets.getAnnIds()) > 0
    for d in json.loads(coco_set.det_file.read_text()):
        assert d["category_id"] == 1 and 0 < d["score"] <= 1 and d["bbox"][2] > 0 and d["bbox"][3] > 0
    # polygons rasterise to (nearly) the recorded visible area
    ann = max(api.loadAnns(api.getAnnIds()), key=lambda a: a["area"])
    assert abs(api.annToMask(ann).sum() - ann["area"]) < 0.35 * ann["area"]


def _gt_as_results(anns):
    return [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
            for a in anns if a["num_keypoints"] > 0]


def test_ground_truth_scores_perfect_oks_ap(coco_set, tmp_path):
    """The files are evaluation-ready: the truth scored against itself gives AP 1 in COCOeval."""
    from pycocotools.coco import COCO as CocoApi
    from pycocotools.cocoeval import COCOeval

    api = CocoApi(str(coco_set.ann_file))
    res = tmp_path / "res.json"
    res.write_text(json.dumps(_gt_as_results(api.loadAnns(api.getAnnIds()))))
    ev = COCOeval(api, api.loadRes(str(res)), "keypoints")
    ev.evaluate(); ev.accumulate(); ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_visible_joints_lie_on_their_person(coco_set):
    anns = json.loads(coco_set.ann_file.read_text())["annotations"]
    w, h = SIZE
    n_vis = n_lab = 0
    for a in anns:
        kps = np.array(a["keypoints"], float).reshape(17, 3)
        mask = coco_set.masks[a["id"]]
        assert a["num_keypoints"] == int((kps[:, 2] > 0).sum())
        ys, xs = np.nonzero(mask)
        assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert a["area"] == mask.sum() and a["iscrowd"] == 0
        for x, y, v in kps:
            if v == 0:
                assert x == 0 and y == 0
                continue
            n_lab += 1
            px, py = math.floor(x + 0.5), math.floor(y + 0.5)
            assert 0 <= px < w and 0 <= py < h, "labelled joint outside the image"
            if v == 2:
                n_vis += 1
                assert mask[py, px], f"visible joint of annotation {a['id']} not on its mask"
    assert n_lab > 50 and n_vis > 0.5 * n_lab


def test_visibility_flags_follow_coco():
    cfg = scene_config("hard")
    outside = inside_unlabelled = 0
    for i in range(4):
        sc = render_image(11, i, SIZE, cfg)
        for p, person in enumerate(sc.persons):
            for j in range(17):
                x, y = person.points[j]
                v = sc.points[p, j, 2]
                if not (0 <= math.floor(x + 0.5) < SIZE[0] and 0 <= math.floor(y + 0.5) < SIZE[1]):
                    outside += 1
                    assert v == 0
                elif v == 0:
                    # inside the image only eyes / nose of a head turned away may be unlabelled
                    inside_unlabelled += 1
                    assert j in (0, 1, 2) and R.face_facing(person, j) <= R.FACE_THRESH[j]
    assert outside > 0   # hard scenes truncate people at the border


def test_left_right_and_front_back_geometry():
    pose = R.sample_pose(np.random.default_rng(0), "standing")
    front = R.pose_person(pose, 0.0, 200.0, (100, 100))
    back = R.pose_person(pose, 180.0, 200.0, (100, 100))
    # facing the camera a person's left side is on the image right; from behind it is on the left
    assert front.points[R.L_SHO, 0] > front.points[R.R_SHO, 0]
    assert back.points[R.L_SHO, 0] < back.points[R.R_SHO, 0]
    assert R.face_facing(front, R.NOSE) > 0.9 and R.face_facing(back, R.NOSE) < -0.9
    # bone lengths follow the body proportions (upper arm / thigh in units of standing height)
    pts3, _ = R.build_skeleton(pose, R.PROPORTIONS)
    assert np.isclose(np.linalg.norm(pts3[R.L_ELB] - pts3[R.L_SHO]), R.PROPORTIONS["upper_arm"])
    assert np.isclose(np.linalg.norm(pts3[R.R_KNE] - pts3[R.R_HIP]), R.PROPORTIONS["thigh"])
    for kind in R.POSE_KINDS:
        p = R.sample_pose(np.random.default_rng(1), kind)
        lo, hi = R.LIMITS["elbow"]
        assert np.all((p["elbow"] >= lo) & (p["elbow"] <= hi))


def test_same_seed_is_byte_identical(tmp_path, coco_set):
    again = generate_dataset(tmp_path / "again", num_images=8, seed=3, size=SIZE)
    assert again.ann_file.read_bytes() == coco_set.ann_file.read_bytes()
    assert again.det_file.read_bytes() == coco_set.det_file.read_bytes()
    names = sorted(p.name for p in coco_set.image_dir.iterdir())
    assert names == sorted(p.name for p in again.image_dir.iterdir())
    assert all((again.image_dir / n).read_bytes() == (coco_set.image_dir / n).read_bytes() for n in names)
    other = generate_dataset(tmp_path / "other", num_images=2, seed=4, size=SIZE)
    assert (other.image_dir / names[0]).read_bytes() != (coco_set.image_dir / names[0]).read_bytes()


def test_missing_label_rate_is_honoured(tmp_path):
    rate = 0.3
    res = generate_dataset(tmp_path / "m", num_images=30, seed=5, size=(96, 72), missing_label_rate=rate,
                           segmentation=False)
    released = json.loads(res.ann_file.read_text())["annotations"]
    complete = json.loads(res.complete_ann_file.read_text())["annotations"]
    n_full = sum(a["num_keypoints"] for a in complete)
    n_left = sum(a["num_keypoints"] for a in released)
    assert n_full > 200
    assert abs((1 - n_left / n_full) - rate) < 0.03
    assert len(released) < len(complete)     # some whole people dropped ...
    full_by_id = {a["id"]: a for a in complete}
    for a in released:                      # ... and the rest only lose labels, never gain or move them
        k, f = np.array(a["keypoints"]).reshape(17, 3), np.array(full_by_id[a["id"]]["keypoints"]).reshape(17, 3)
        kept = k[:, 2] > 0
        assert np.array_equal(k[kept], f[kept])
    clean = generate_dataset(tmp_path / "c", num_images=3, seed=5, size=(96, 72), segmentation=False)
    name = sorted(p.name for p in clean.image_dir.iterdir())[0]
    assert (clean.image_dir / name).read_bytes() == (res.image_dir / name).read_bytes()   # images unchanged


def test_crowdpose_format(tmp_path):
    from xtcocotools.coco import COCO as XtCoco

    res = generate_dataset(tmp_path / "cp", num_images=4, seed=2, size=SIZE, fmt="crowdpose", return_masks=True)
    from xtcocotools.cocoeval import COCOeval as XtEval

    api = XtCoco(str(res.ann_file))
    assert api.loadCats(1)[0]["keypoints"] == list(CROWDPOSE.joints)
    out = tmp_path / "res.json"
    out.write_text(json.dumps(_gt_as_results(api.loadAnns(api.getAnnIds()))))
    ev = XtEval(api, api.loadRes(str(out)), "keypoints_crowd", np.array(CROWDPOSE.sigmas), use_area=False)
    ev.evaluate(); ev.accumulate(); ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)
    data = json.loads(res.ann_file.read_text())
    assert all("crowdIndex" in im and im["crowdIndex"] >= 0 for im in data["images"])
    for a, rec in zip(data["annotations"], res.complete):
        kps = np.array(a["keypoints"], float).reshape(14, 3)
        if kps[0, 2] and kps[1, 2] and kps[13, 2]:    # neck = shoulder midpoint
            assert np.allclose(kps[13, :2], (kps[0, :2] + kps[1, :2]) / 2, atol=0.02)
        for (x, y, v) in kps:
            if v == 2:
                assert res.masks[a["id"]][math.floor(y + 0.5), math.floor(x + 0.5)]


def test_mpii_format(tmp_path):
    res = generate_dataset(tmp_path / "mp", num_images=4, seed=2, size=SIZE, fmt="mpii")
    assert res.det_file is None and res.ann_file.name == "mpii_train.json"
    entries = json.loads(res.ann_file.read_text())
    assert entries and set(entries[0]) == {"image", "center", "scale", "joints", "joints_vis", "head_box"}
    for e in entries:
        assert (res.image_dir / e["image"]).is_file()
        joints, vis = np.array(e["joints"]), np.array(e["joints_vis"])
        assert joints.shape == (16, 2) and vis.shape == (16,) and vis.sum() > 0
        assert np.all(joints[vis == 0] == -1)
        x1, y1, x2, y2 = e["head_box"]
        assert x2 > x1 and y2 > y1 and e["scale"] > 0
        hips = [MPII.index("left_hip"), MPII.index("right_hip")]
        if vis[hips].all() and vis[MPII.index("pelvis")]:
            assert np.allclose(joints[MPII.index("pelvis")], joints[hips].mean(0), atol=0.02)
    assert FORMAT_POINTS["mpii"][MPII.index("thorax")] == R.NECK


def test_cli_synth_and_video(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["synth", "--out", str(out), "--images", "2", "--seed", "1", "--size", "96x72",
                 "--split-name", "val", "--difficulty", "easy", "--preview", str(tmp_path / "p.png")]) == 0
    assert (out / "annotations" / "person_keypoints_val.json").is_file()
    assert (out / "annotations" / "detections_val.json").is_file()
    assert (tmp_path / "p.png").is_file()
    assert len(list((out / "images").glob("*.jpg"))) == 2
    assert cli_main(["data", "synth", "--out", str(out), "--images", "0"]) == 2
    assert "num_images" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["synth", "--out", str(out), "--images", "1", "--size", "big"])
    with pytest.raises(ValueError, match="format must be one of"):
        generate_dataset(out, 1, fmt="h36m")
    v = generate_video(tmp_path / "clip.mp4", num_frames=4, seed=0, size=(96, 72), num_people=2)
    assert v.kind in ("mp4", "frames") and v.path.exists() and len(v.keypoints) == 4
    assert v.keypoints[0].shape == (2, 17, 3)
    assert main(["video", "--out", str(tmp_path / "c2.mp4"), "--frames", "2", "--size", "96x72"]) == 0
