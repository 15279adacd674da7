"""Bottom-up (seed 004) through the loop: a PAF network trains on whole images, evaluates to COCO AP with
no boxes, and learns from a teacher by KD (eq. 5) and label correction (eq. 2-4)."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import pytest
import torch

from helpers import data_overrides, tiny_bottomup_splits
from posedistill.cli import main as cli_main
from posedistill.engine import build
from posedistill.engine.config import load_config
from posedistill.engine.evaluate import evaluate
from posedistill.inference.pipeline import box_source
from posedistill.engine.loop import train
from posedistill.losses.paf import MultiStagePafLoss
from posedistill.tasks import BottomUpTask


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("bottomup")
    return tiny_bottomup_splits(root)


def _quick(splits, out, *extra) -> list[str]:
    return [*data_overrides(splits), "model.name=cmu_pose_tiny", "data.input_size=[64, 64]", "optim.epochs=1",
            "optim.milestones=[]", "train.max_iters_per_epoch=2", "train.batch_size=2", "train.workers=0",
            "train.eval_interval=1", "train.progress=false", f"train.out_dir={out}", *extra]


@pytest.fixture(scope="module")
def baseline(splits, tmp_path_factory):
    out = tmp_path_factory.mktemp("baseline")
    result = train(load_config("configs/small_paf_net_coco_368.yaml", _quick(splits, out)))
    return result


def test_bottomup_run_trains_and_evaluates_with_no_boxes(baseline, splits, capsys):
    assert {"AP", "AR"} <= set(baseline["last_metrics"]) and baseline["history"][-1]["train_labels"] > 0
    ckpt = baseline["last_checkpoint"]
    assert cli_main(["eval", "configs/small_paf_net_coco_368.yaml", "--checkpoint", ckpt,
                     *data_overrides(splits), "model.name=cmu_pose_tiny", "data.input_size=[64, 64]",
                     "train.workers=0", "eval.flip_test=true"]) == 0
    assert "AP" in capsys.readouterr().out


@pytest.mark.parametrize("extra", [["distill.label_correction=both"], ["distill.kd_lambda=0.5"],
                                   ["distill.label_correction=pafs", "distill.kd_lambda=0.5"]])
def test_teacher_kd_and_label_correction_runs(baseline, splits, tmp_path, extra):
    result = train(load_config("configs/lc_small_paf_net_coco_368.yaml", _quick(
        splits, tmp_path, "distill.teacher.model=cmu_pose_tiny", f"distill.teacher.checkpoint={baseline['last_checkpoint']}",
        *extra)))
    assert math.isfinite(result["history"][-1]["train_loss"])


class _Fixed(torch.nn.Module):
    """A 'network' whose one stage is a fixed pair of maps (for hand-worked task values)."""
    head_type = "paf"

    def __init__(self, value: float):
        super().__init__()
        self.value = torch.nn.Parameter(torch.tensor(value))

    def forward(self, x):
        b = x.shape[0]
        return [(self.value * torch.ones(b, 2, 1, 1), self.value * torch.ones(b, 2, 1, 1))]


def test_kd_mixes_the_two_losses_by_lambda_eq5():
    batch = {"image": torch.zeros(1, 3, 8, 8), "confidence_maps": torch.zeros(1, 2, 1, 1), "pafs": torch.zeros(1, 2, 1, 1),
             "mask": torch.ones(1, 1, 1, 1)}
    teacher = _Fixed(1.0).eval()
    task = BottomUpTask(_Fixed(0.5), MultiStagePafLoss(), teacher, kd_lambda=0.25)
    out = task(batch)
    # labels: (0.5 - 0)^2 per branch, 2 branches -> 0.5; teacher: (0.5 - 1)^2 x 2 -> 0.5; 0.75 x 0.5 + 0.25 x 0.5
    assert float(out["labels"]) == pytest.approx(0.5) and float(out["teacher"]) == pytest.approx(0.5)
    assert float(out["loss"].detach()) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="need a teacher"):
        BottomUpTask(_Fixed(0.5), MultiStagePafLoss(), None, correct="both")


class _Oracle(torch.nn.Module):
    """Returns the ground-truth maps of the loader's images, in loader order (no network)."""
    head_type = "paf"

    def __init__(self, targets):
        super().__init__()
        self.targets, self.at = targets, 0

    def forward(self, x):
        maps, pafs = self.targets[self.at]
        self.at += 1
        return [(maps, pafs)]


def test_ground_truth_maps_through_the_evaluation_path_score_ap_1(splits):
    """Whole-image resize, grouping, inverse affine and OKS scoring on exact maps."""
    cfg = load_config("configs/small_paf_net_coco_368.yaml", [*data_overrides(splits), "data.input_size=[256, 256]"])
    meta = build.keypoint_meta(cfg.data)
    codec = build.build_codec(cfg.codec, (256, 256), 8, "paf", meta)
    val = build.build_dataset(cfg.data, codec, meta, train=False)
    loader = torch.utils.data.DataLoader(val, batch_size=1, shuffle=False)
    oracle = _Oracle([(b["confidence_maps"], b["pafs"]) for b in loader])
    metrics = evaluate(oracle, loader, codec, meta, torch.device("cpu"), data_format="coco", ann_file=cfg.data.val_ann)
    # Not exactly 1: people the dataset leaves out of the targets (< 5 keypoints or < 32 x 32 pixels, the
    # CMU rule) are still in the annotation file, unmatched. A wrong inverse affine would score ~0.
    assert metrics["AP"] > 0.8 and metrics["AR"] > 0.8 and metrics["instances"] > 0


def test_predict_and_export_a_bottomup_checkpoint_and_use_it_as_a_box_source(baseline, splits, tmp_path, capsys):
    """`predict` with a bottom-up model needs no boxes; its people can be the boxes of a top-down model."""
    ckpt = baseline["last_checkpoint"]
    image = sorted(Path(splits["val"][1]).glob("*.jpg"))[0]
    assert cli_main(["predict", str(image), "-c", ckpt, "--out", str(tmp_path / "p"), "--flip"]) == 0
    assert "no --boxes" not in capsys.readouterr().err
    assert (tmp_path / "p" / "predictions.json").is_file() and (tmp_path / "p" / "vis" / image.name).is_file()
    assert cli_main(["predict", str(image), "-c", ckpt, "--boxes", "whole.json"]) == 2
    assert "finds the people itself" in capsys.readouterr().err
    assert cli_main(["export", ckpt, "--out", str(tmp_path / "bu.onnx")]) == 0
    assert cli_main(["predict", str(image), "-c", str(tmp_path / "bu.onnx"), "--out", str(tmp_path / "o")]) == 0
    boxes = box_source(f"bottomup:{ckpt}", score_thr=0.0)(cv2.imread(str(image)), str(image))
    assert boxes.shape[1] == 5                                   # (x, y, w, h, score) per person found
    assert cli_main(["predict", str(image), "-c", ckpt, "--boxes", f"bottomup:{image}"]) == 2


def test_distill_rounds_make_each_student_the_next_teacher(baseline, splits, tmp_path):
    """`--rounds 2` (seed 004's LC x 2): round 2 learns from round 1's student."""
    args = ["distill", "configs/lc_small_paf_net_coco_368.yaml", *_quick(splits, tmp_path),
            "distill.teacher.model=cmu_pose_tiny", f"distill.teacher.checkpoint={baseline['last_checkpoint']}",
            "train.eval_interval=0", "--rounds", "2"]
    assert cli_main(args) == 0
    second = load_config(str(tmp_path / "round_2" / "config.yaml"))
    assert second.distill.teacher.model == "cmu_pose_tiny" and second.distill.label_correction == "both"
    assert second.distill.teacher.checkpoint == str(tmp_path / "round_1" / "last.pth")
    assert (tmp_path / "round_2" / "last.pth").is_file()


def test_bottomup_bad_settings_are_one_line(splits, tmp_path, capsys):
    base = ["train", "configs/small_paf_net_coco_368.yaml", *_quick(splits, tmp_path)]
    assert cli_main([*base, "data.bottomup_scale=[1.1, 0.5]"]) == 2
    assert "data.bottomup_scale: expected [min, max]" in capsys.readouterr().err
    assert cli_main([*base, "data.bottomup_min_area=-1"]) == 2
    assert "data.bottomup_min_keypoints / data.bottomup_min_area: expected >= 0" in capsys.readouterr().err
    assert cli_main([*base, "data.format=mpii"]) == 2
    assert "bottom-up models read COCO-format" in capsys.readouterr().err
    assert cli_main(["distill", "configs/lc_small_paf_net_coco_368.yaml", *_quick(splits, tmp_path),
                     f"distill.teacher.checkpoint={tmp_path / 'missing.pth'}"]) == 2
    assert "missing.pth: no such file" in capsys.readouterr().err
    assert cli_main(["distill", "configs/lc_small_paf_net_coco_368.yaml", "--rounds", "0"]) == 2
    assert "--rounds must be >= 1" in capsys.readouterr().err
