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
from posedistill.data.synthetic import (FORMAT_POINTS, LabelDefects, drop_labels, format_keypoints, generate_dataset,
                                        generate_video, release_labels, render_image, scene_config)
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


# ---------------------------------------------------------------------------------------------
# Label defects of seed 004 (Kato et al., section 3.1): (a) truncation, (b) occluded joints left
# unlabelled, (c) visible joints left unlabelled, (d) people left out without an ignore region.

DEFECT_SIZE = (96, 72)


def _kps(ann, k=17):
    return np.array(ann["keypoints"], float).reshape(k, 3)


def _outside(xy, size=DEFECT_SIZE):
    px, py = np.floor(xy[:, 0] + 0.5), np.floor(xy[:, 1] + 0.5)
    return (px < 0) | (px >= size[0]) | (py < 0) | (py >= size[1])


@pytest.fixture(scope="module")
def clean_set(tmp_path_factory):
    """All knobs off: the released labels are the full truth."""
    return generate_dataset(tmp_path_factory.mktemp("clean"), num_images=24, seed=5, size=DEFECT_SIZE,
                            segmentation=False, return_masks=True)


@pytest.fixture(scope="module")
def defect_set(tmp_path_factory):
    """Every label knob on at once (the scenes are those of `clean_set`: no truncation knob)."""
    return generate_dataset(tmp_path_factory.mktemp("defects"), num_images=24, seed=5, size=DEFECT_SIZE,
                            return_masks=True, occluded_unlabelled=0.5, missing_keypoint_rate=0.3,
                            missing_person_rate=0.2, crowd_rate=0.2)


def _full_truth(res):
    return {rec["id"]: format_keypoints(rec["points"], "coco") for rec in res.complete}


def test_defects_absent_when_off(clean_set):
    data = json.loads(clean_set.ann_file.read_text())
    assert clean_set.complete_ann_file is None
    assert not (clean_set.ann_file.parent / "complete_keypoints_train.json").exists()
    full = _full_truth(clean_set)
    assert len(data["annotations"]) == len(full) == clean_set.num_people
    assert not any(a["iscrowd"] for a in data["annotations"])
    for a in data["annotations"]:           # every joint of every person, as in the full truth
        f = full[a["id"]]
        assert np.array_equal(_kps(a)[:, 2], f[:, 2])
        assert np.allclose(_kps(a)[:, :2], f[:, :2], atol=0.006)
    assert set(data["info"]) == {"description", "seed", "difficulty", "missing_label_rate", "version"}


def test_complete_file_holds_every_person_and_joint(defect_set):
    complete = json.loads(defect_set.complete_ann_file.read_text())
    full = _full_truth(defect_set)
    assert len(complete["annotations"]) == len(full) == defect_set.num_people
    for a in complete["annotations"]:
        assert a["iscrowd"] == 0 and np.array_equal(_kps(a)[:, 2], full[a["id"]][:, 2])
        amodal = np.array(a["amodal_keypoints"], float).reshape(17, 3)
        labelled = _kps(a)[:, 2] > 0
        assert np.array_equal(amodal[labelled], _kps(a)[labelled])     # amodal adds, never changes
    info = json.loads(defect_set.ann_file.read_text())["info"]
    assert info["occluded_unlabelled"] == 0.5 and info["crowd_rate"] == 0.2


def test_occluded_and_visible_joints_left_unlabelled_at_their_rates(tmp_path, clean_set):
    full = list(_full_truth(clean_set).values())
    n_hidden = sum(int((f[:, 2] == 1).sum()) for f in full)
    n_visible = sum(int((f[:, 2] == 2).sum()) for f in full)
    assert n_hidden > 60 and n_visible > 300
    for knob, flag, other, rate in (("occluded_unlabelled", 1, 2, 0.5), ("missing_keypoint_rate", 2, 1, 0.3)):
        status, out = release_labels(full, LabelDefects(**{knob: rate}), seed=5)
        assert status == ["labelled"] * len(full)
        gone = sum(int(((f[:, 2] == flag) & (o[:, 2] == 0)).sum()) for f, o in zip(full, out))
        assert gone == round(rate * (n_hidden if flag == 1 else n_visible)), knob
        for f, o in zip(full, out):      # the other kind untouched, removed joints zeroed
            assert np.array_equal(o[f[:, 2] == other], f[f[:, 2] == other])
            assert not o[(f[:, 2] > 0) & (o[:, 2] == 0)].any()
    _, every = release_labels(full, LabelDefects(occluded_unlabelled=True), seed=5)
    assert not any((o[:, 2] == 1).any() for o in every)
    # each knob has its own random stream: adding (c) does not change what (b) picks
    _, b = release_labels(full, LabelDefects(occluded_unlabelled=0.5), seed=5)
    _, bc = release_labels(full, LabelDefects(occluded_unlabelled=0.5, missing_keypoint_rate=0.3), seed=5)
    assert all(np.array_equal((x[:, 2] == 0) & (f[:, 2] == 1), (y[:, 2] == 0) & (f[:, 2] == 1))
               for f, x, y in zip(full, b, bc))
    with pytest.raises(ValueError, match="missing_keypoint_rate must be a number in"):
        LabelDefects(missing_keypoint_rate=1.5)


def test_defect_files_match_their_rates(defect_set):
    """End to end: (b), (c) and (d) and the crowd regions in the released file."""
    data = json.loads(defect_set.ann_file.read_text())
    full = _full_truth(defect_set)
    n = len(full)
    people = [a for a in data["annotations"] if not a["iscrowd"]]
    crowd = [a for a in data["annotations"] if a["iscrowd"]]
    removed = n - len(people) - len(crowd)
    assert removed == round(0.2 * n)                              # (d): left out ...
    assert abs(len(crowd) - 0.2 * (n - removed)) <= 0.1 * n        # ... crowd chosen among the others
    hidden = sum(int((full[a["id"]][:, 2] == 1).sum()) for a in people)
    hidden_gone = sum(int(((full[a["id"]][:, 2] == 1) & (_kps(a)[:, 2] == 0)).sum()) for a in people)
    visible = sum(int((full[a["id"]][:, 2] == 2).sum()) for a in people)
    visible_gone = sum(int(((full[a["id"]][:, 2] == 2) & (_kps(a)[:, 2] == 0)).sum()) for a in people)
    assert abs(hidden_gone / hidden - 0.5) < 0.12 and abs(visible_gone / visible - 0.3) < 0.08
    for a in people:
        assert a["num_keypoints"] == int((_kps(a)[:, 2] > 0).sum())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")   # pycocotools decode under numpy 2
def test_missing_people_have_no_ignore_region_and_crowds_do(defect_set):
    from pycocotools.coco import COCO as CocoApi

    api = CocoApi(str(defect_set.ann_file))
    released = set(api.getAnnIds())
    missing = [i for i in defect_set.masks if i not in released]
    assert missing
    for ann in api.loadAnns(api.getAnnIds(iscrowd=True)):
        assert ann["num_keypoints"] == 0 and not any(ann["keypoints"])
        assert isinstance(ann["segmentation"]["counts"], list)          # uncompressed RLE, COCO's crowd form
        m, truth = api.annToMask(ann) > 0, defect_set.masks[ann["id"]]
        assert (m & truth).sum() >= 0.95 * truth.sum()      # covers the person (holes of its outline filled)
    image_of = {rec["id"]: rec["image_id"] for rec in defect_set.complete}
    for i in missing:        # (d): no crowd region over a left-out person
        covered = np.zeros(DEFECT_SIZE[::-1], bool)
        for ann in api.loadAnns(api.getAnnIds(imgIds=[image_of[i]], iscrowd=True)):
            covered |= api.annToMask(ann) > 0
        assert not (covered & defect_set.masks[i]).any()


def test_truncation_rate(tmp_path):
    res = generate_dataset(tmp_path / "t", num_images=24, seed=5, size=DEFECT_SIZE, truncation_rate=0.5,
                           segmentation=False)
    released = {a["id"]: a for a in json.loads(res.ann_file.read_text())["annotations"]}
    complete = json.loads(res.complete_ann_file.read_text())["annotations"]
    cut = 0
    for a in complete:
        amodal = np.array(a["amodal_keypoints"], float).reshape(17, 3)
        out = _outside(amodal[:, :2]) & (amodal[:, 2] > 0)
        cut += bool(out.any())
        assert not _kps(a)[out].any() and not _kps(released[a["id"]])[out].any()   # COCO: v = 0, x = y = 0
    assert 0.3 < cut / len(complete) < 0.65           # about half the people leave the image partly
    off = generate_dataset(tmp_path / "o", num_images=24, seed=5, size=DEFECT_SIZE, truncation_rate=0.0,
                           segmentation=False, return_masks=True)
    assert off.complete_ann_file is None
    for rec in off.complete:     # nobody crosses the border (the presets let ~5% do by placement)
        amodal = format_keypoints(rec["amodal_points"], "coco")
        assert not (_outside(amodal[:, :2]) & (amodal[:, 2] > 0)).any()


def test_missing_label_rate_composes_with_new_knobs(tmp_path, clean_set):
    full = list(_full_truth(clean_set).values())
    status, out = release_labels(full, LabelDefects(missing_label_rate=0.3), seed=5)
    keep, legacy = drop_labels(full, 0.3, np.random.default_rng([5, 2]))
    assert status == ["labelled" if k else "removed" for k in keep]
    assert all(np.array_equal(a, b) for a, b in zip(out, legacy))
    with pytest.raises(ValueError, match="crowd_rate needs a COCO-style format"):
        generate_dataset(tmp_path / "mp", 1, fmt="mpii", size=DEFECT_SIZE, crowd_rate=0.5)


def test_cli_defect_flags(tmp_path):
    out = tmp_path / "cli"
    assert main(["synth", "--out", str(out), "--images", "3", "--size", "96x72", "--truncation-rate", "0.3",
                 "--occluded-unlabelled", "--missing-keypoint-rate", "0.1", "--missing-person-rate", "0.1",
                 "--crowd-rate", "0.1"]) == 0
    info = json.loads((out / "annotations" / "person_keypoints_train.json").read_text())["info"]
    assert info["occluded_unlabelled"] == 1.0 and info["truncation_rate"] == 0.3
    assert info["missing_keypoint_rate"] == 0.1 and info["crowd_rate"] == 0.1
    assert (out / "annotations" / "complete_keypoints_train.json").is_file()
    with pytest.raises(SystemExit):
        main(["synth", "--out", str(out), "--images", "1", "--missing-person-rate", "2"])


def test_cli_people_and_person_height(tmp_path):
    """--people and --person-height replace the preset's ranges: 2 people per image, each ~0.9 of the
    image tall (the box of a standing person spans most of its height)."""
    out = tmp_path / "big"
    assert main(["synth", "--out", str(out), "--images", "4", "--size", "96x96", "--difficulty", "easy",
                 "--people", "2", "2", "--person-height", "0.9", "0.9", "--truncation-rate", "0"]) == 0
    data = json.loads((out / "annotations" / "person_keypoints_train.json").read_text())
    per_image = {}
    for ann in data["annotations"]:
        per_image.setdefault(ann["image_id"], []).append(ann["bbox"][3])
    assert sorted(len(v) for v in per_image.values()) == [2, 2, 2, 2]
    assert max(h for v in per_image.values() for h in v) > 0.6 * 96
    assert cli_main(["data", "synth", "--out", str(out), "--images", "1", "--people", "3", "1"]) == 2
