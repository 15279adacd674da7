"""`posedistill predict` as a user runs it: a tiny trained checkpoint (which records its model card, so no
recipe is needed) on the sample COCO images with each box source, on a folder holding a corrupt file, on a
short synthetic video; and a custom 5-keypoint COCO-format set that trains, evaluates and predicts."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from posedistill.cli import main as cli_main
from posedistill.commands.demo import generate_data
from posedistill.commands.eval import main as main_eval
from posedistill.commands.export import main as main_export
from posedistill.commands.predict import main as main_predict
from posedistill.data.synthetic import generate_video
from posedistill.engine.checkpoint import read_checkpoint
from posedistill.engine.config import load_config
from posedistill.engine.loop import train
from posedistill.inference.pipeline import build_pipeline
from posedistill.inference.predictor import load_model
from helpers import tiny_run
from test_inference_boxes import End2End, _export  # the tiny ONNX detector of the documented layout

COCO_IMAGES = Path(__file__).parent / "data" / "coco"     # four val2017 images and their detections


def _overrides(synth, out_dir, *extra) -> list[str]:
    return tiny_run(synth, out_dir, *extra)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return generate_data(tmp_path_factory.mktemp("synth"), n_train=6, n_val=2, seed=0)


@pytest.fixture(scope="module")
def checkpoint(synth, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    train(load_config(None, _overrides(synth, out)))
    return out / "last.pth"


def _predict(tmp_path, *args) -> tuple[int, list[dict]]:
    out = tmp_path / "pred"
    code = main_predict([*map(str, args), "--out", str(out)])
    results = json.loads((out / "predictions.json").read_text()) if code == 0 else []
    return code, results


def test_checkpoint_card_rebuilds_the_model_without_a_recipe(checkpoint):
    state = read_checkpoint(checkpoint)
    card = state["card"]
    assert card["model"]["name"] == "elpn_v1" and card["input_size"] == [64, 64]
    assert card["keypoints"]["name"] == "coco" and card["head_type"] == "heatmap"
    loaded = load_model(checkpoint)
    x = torch.randn(2, 3, 64, 64)
    assert loaded.meta.num_joints == 17 and loaded.input_size == (64, 64)
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, state["model"][name]), name
    assert loaded.model(x).shape == (2, 17, 16, 16)


def test_predict_whole_image_boxes_on_sample_images(checkpoint, tmp_path, capsys):
    code, results = _predict(tmp_path, COCO_IMAGES, "--checkpoint", checkpoint)
    n_images = len(list(COCO_IMAGES.glob("*.jpg")))
    assert code == 0 and len(results) == n_images          # one whole-image box per image
    for r in results:
        image = cv2.imread(str(COCO_IMAGES / r["file_name"]))
        kps = np.asarray(r["keypoints"]).reshape(17, 3)
        assert r["bbox"] == [0.0, 0.0, float(image.shape[1]), float(image.shape[0])]
        assert r["image_id"] == int(Path(r["file_name"]).stem) and r["category_id"] == 1
        # joints land inside the (padded) box around the image
        assert (kps[:, 0] > -0.2 * image.shape[1]).all() and (kps[:, 0] < 1.2 * image.shape[1]).all()
    assert len(list((tmp_path / "pred" / "vis").glob("*.jpg"))) == n_images
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"{n_images} images" in summary and f"{n_images} people" in summary and "images/s" in summary


def test_predict_with_detections_file_and_flip_heatmaps(checkpoint, tmp_path):
    """The official HRNet person detections of the sample images: every box above the threshold is used
    (matched by image_id = numeric file name), none below."""
    det_file = COCO_IMAGES / "test_coco_det_AP_H_56.json"
    dets = [d for d in json.loads(det_file.read_text()) if d["category_id"] == 1 and d["score"] >= 0.5]
    code, results = _predict(tmp_path, COCO_IMAGES, "-c", checkpoint, "--boxes", det_file, "--det-score-thr",
                             "0.5", "--flip", "--show-heatmaps")
    assert code == 0 and len(results) == len(dets)
    got = sorted((r["image_id"], *r["bbox"]) for r in results)
    want = sorted((d["image_id"], *d["bbox"]) for d in dets)
    np.testing.assert_allclose(got, want, atol=0.01)          # JSON keeps 2 decimals
    assert len(list((tmp_path / "pred" / "vis").glob("*.jpg"))) == 4


def test_predict_with_onnx_detector_and_corrupt_image(checkpoint, tmp_path, capsys):
    detector = _export(End2End(), tmp_path / "det.onnx", (256, 320), "input", ["dets", "labels"], dynamic=True)
    folder = tmp_path / "imgs"
    folder.mkdir()
    image = np.full((480, 640, 3), 60, dtype=np.uint8)
    image[120:400, 200:360] = 255                       # the tiny detector finds this bright rectangle
    cv2.imwrite(str(folder / "a.png"), image)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.warns(UserWarning, match="broken.jpg"):
        code, results = _predict(tmp_path, folder, "-c", checkpoint, "--detector", detector,
                                 "--det-input", "320x256")
    assert code == 0 and len(results) == 1
    x, y, w, h = results[0]["bbox"]
    assert abs(x - 200) <= 2 and abs(y - 120) <= 2 and abs(w - 160) <= 2 and abs(h - 280) <= 2
    summary = capsys.readouterr().out
    assert "1 images (1 skipped" in summary and "broken.jpg" in summary


def _moving_box_video(path: Path, frames: int) -> Path:
    """A 320x240 clip of a bright 'person' rectangle moving right 3 px per frame (mp4v)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (320, 240))
    for t in range(frames):
        image = np.full((240, 320, 3), 60, dtype=np.uint8)
        image[40:200, 60 + 3 * t:140 + 3 * t] = 255
        writer.write(image)
    writer.release()
    return path


def test_predict_video_keeps_every_frame_and_detects_every_n(checkpoint, tmp_path, capsys):
    clip = _moving_box_video(tmp_path / "clip.mp4", 10)
    detector = _export(End2End(), tmp_path / "det.onnx", (256, 320), "input", ["dets", "labels"], dynamic=True)
    out = tmp_path / "pred"
    assert cli_main(["predict", str(clip), "-c", str(checkpoint), "--detector", str(detector), "--det-input", "320x256",
                         "--detect-every", "4", "--out", str(out)]) == 0
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    assert frames == 10
    results = json.loads((out / "predictions.json").read_text())
    assert [r["frame"] for r in results] == list(range(10))          # one person on every frame
    assert {r["track_id"] for r in results} == {0}                    # tracked as one person
    assert "detector ran on 3 of 10 frames" in capsys.readouterr().out   # frames 0, 4, 8


def test_predict_on_a_generated_walking_video(checkpoint, tmp_path):
    """`posedistill data video` output through predict with whole-frame boxes: frame count preserved."""
    clip = generate_video(tmp_path / "walk.mp4", num_frames=6, seed=1, size=(160, 120), num_people=1)
    out = tmp_path / "pred"
    assert cli_main(["predict", str(clip.path), "-c", str(checkpoint), "--out", str(out)]) == 0
    cap = cv2.VideoCapture(str(out / "walk.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    cap.release()
    assert len(json.loads((out / "predictions.json").read_text())) == 6


def test_predict_errors_are_one_line(checkpoint, tmp_path, capsys):
    assert cli_main(["predict", str(tmp_path / "nothing_here"), "-c", str(checkpoint)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing_here" in err
    assert cli_main(["predict", str(COCO_IMAGES), "-c", str(checkpoint), "--backend", "onnxruntime"]) == 2
    assert "posedistill export" in capsys.readouterr().err


def _custom_set(synth, root: Path) -> dict:
    """The synthetic set rewritten as a 5-keypoint 'creature' (new names, own skeleton)."""
    keep = [0, 5, 6, 11, 12]          # nose, shoulders, hips of the synthetic people
    names = ["snout", "left_fin", "right_fin", "left_tail", "right_tail"]
    paths = {}
    for split, (ann_file, images) in synth.items():
        data = json.loads(Path(ann_file).read_text())
        data["categories"] = [{"id": 1, "name": "creature", "keypoints": names,
                               "skeleton": [[1, 2], [1, 3], [2, 4], [3, 5], [4, 5]]}]
        for a in data["annotations"]:
            kps = np.asarray(a["keypoints"], dtype=float).reshape(-1, 3)[keep]
            a["keypoints"] = kps.reshape(-1).tolist()
            a["num_keypoints"] = int((kps[:, 2] > 0).sum())
        path = root / f"{split}.json"
        path.write_text(json.dumps(data))
        paths[split] = (str(path), images)
    return paths


def test_custom_keypoint_set_trains_evaluates_and_predicts(synth, tmp_path, capsys):
    custom = _custom_set(synth, tmp_path)
    sigmas = "data.keypoint_sigmas=[0.03, 0.08, 0.08, 0.1, 0.1]"
    base = _overrides(custom, tmp_path / "run", "data.dataset=custom")
    with pytest.raises(ValueError, match="data.keypoint_sigmas"):
        train(load_config(None, base))                       # OKS evaluation needs the set's sigmas
    cfg = load_config(None, base + [sigmas])
    result = train(cfg)
    card = read_checkpoint(result["last_checkpoint"])["card"]
    assert card["keypoints"]["joints"][1] == "left_fin" and card["keypoints"]["flip_pairs"] == [[1, 2], [3, 4]]
    recipe = tmp_path / "recipe.yaml"
    shutil.copy(Path(result["out_dir"]) / "config.yaml", recipe)
    assert main_eval([str(recipe), "--checkpoint", str(result["last_checkpoint"])]) == 0
    assert "AP" in capsys.readouterr().out
    code, results = _predict(tmp_path, synth["val"][1], "-c", result["last_checkpoint"])
    assert code == 0 and results and all(len(r["keypoints"]) == 5 * 3 for r in results)
    pipeline, loaded = build_pipeline(str(result["last_checkpoint"]))
    assert loaded.meta.joints[0] == "snout" and loaded.meta.sigmas == (0.03, 0.08, 0.08, 0.1, 0.1)


def test_export_then_predict_with_onnxruntime_matches_pytorch(checkpoint, tmp_path, capsys):
    """The exported file carries the model card: predict decodes it with no recipe, and its people match
    the PyTorch checkpoint's (same boxes; joints within 0.05 px, allowing a few argmax ties of this barely
    trained model's flat heatmaps to fall on another pixel)."""
    onnx_file = tmp_path / "model.onnx"
    assert main_export([str(checkpoint), "--out", str(onnx_file)]) == 0
    assert "parity" in capsys.readouterr().out
    _, eager = _predict(tmp_path / "eager", COCO_IMAGES, "-c", checkpoint, "--flip")
    code, ort = _predict(tmp_path / "ort", COCO_IMAGES, "-c", onnx_file, "--flip")
    assert code == 0 and len(ort) == len(eager) == 4
    for a, b in zip(eager, ort):
        assert a["file_name"] == b["file_name"] and a["bbox"] == b["bbox"]
    joints = [np.reshape(r["keypoints"], (-1, 3))[:, :2] for r in (*eager, *ort)]
    close = np.abs(np.stack(joints[:4]) - np.stack(joints[4:])).max(-1) <= 0.05
    assert close.mean() >= 0.9, close
