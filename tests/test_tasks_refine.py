"""Seed 002 stage 2 through the loop: the student stays frozen, the refiner learns, and the result is one
model that eval / predict / export treat as any other."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import data_overrides
from posedistill.cli import main as cli_main
from posedistill.data.synthetic import generate_dataset
from posedistill.engine import build
from posedistill.engine.checkpoint import read_checkpoint
from posedistill.engine.config import load_config
from posedistill.engine.loop import train
from posedistill.errors import InputError


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("crowdpose")
    out = {}
    for split, n, seed in (("train", 6, 0), ("val", 3, 1)):
        res = generate_dataset(root / split, n, seed=seed, fmt="crowdpose", size=(160, 120), difficulty="easy",
                               split=split, segmentation=False)
        out[split] = (str(res.ann_file), str(res.image_dir))
    return out


def _quick(splits, out) -> list[str]:
    return [*data_overrides(splits), "optim.epochs=2", "optim.milestones=[]", "train.max_iters_per_epoch=3",
            "train.batch_size=4", "train.workers=0", "train.eval_interval=0", "train.progress=false",
            "eval.flip_test=false", f"train.out_dir={out}"]


def _stage1(splits, out, seed: int):
    train(load_config("configs/seed002_synth_base.yaml", _quick(splits, out) + [f"train.seed={seed}"]))
    return out / "last.pth"


@pytest.fixture(scope="module")
def stage1(splits, tmp_path_factory):
    return _stage1(splits, tmp_path_factory.mktemp("stage1"), 0)


@pytest.fixture(scope="module")
def teacher(splits, tmp_path_factory):
    """Another stage-1 run (seed 1) as the teacher: any SimCC model with the same joints will do."""
    return _stage1(splits, tmp_path_factory.mktemp("teacher"), 1)


def _stage2(splits, stage1, teacher, out, *extra):
    return load_config("configs/refine_seed002_synth.yaml", [
        *_quick(splits, out), f"refine.student={stage1}", "distill.teacher.model=simcc_hrnet_w16_small",
        f"distill.teacher.checkpoint={teacher}", "model.kwargs.hidden=16", *extra])


@pytest.mark.parametrize("target", ["teacher", "gt"])
def test_stage2_leaves_the_student_bit_identical_and_trains_the_refiner(splits, stage1, teacher, tmp_path, target):
    extra = ["refine.target=gt", "distill.teacher.model="] if target == "gt" else []
    result = train(_stage2(splits, stage1, teacher, tmp_path / "s2", *extra))
    before = read_checkpoint(stage1)["model"]
    after = read_checkpoint(result["last_checkpoint"])["model"]
    for key, value in before.items():                    # parameters and buffers (BN statistics) alike
        assert torch.equal(after[f"student.{key}"], value), key
    assert any(after[k].abs().sum() > 0 for k in after if k.endswith("pose.weight"))   # zero-initialised heads moved
    assert {"train_block1", "train_block2", "train_block3", "train_stage1"} <= set(result["history"][-1])


def test_refined_checkpoint_evaluates_predicts_and_exports(splits, stage1, teacher, tmp_path):
    ckpt = train(_stage2(splits, stage1, teacher, tmp_path / "s2"))["last_checkpoint"]
    assert cli_main(["eval", "configs/refine_seed002_synth.yaml", "--checkpoint", ckpt, *data_overrides(splits),
                     "model.kwargs.hidden=16", "eval.flip_test=true"]) == 0
    image = sorted(Path(splits["val"][1]).glob("*.jpg"))[0]
    assert cli_main(["predict", str(image), "-c", ckpt, "--out", str(tmp_path / "pred"), "--flip"]) == 0
    assert cli_main(["export", ckpt, "--out", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "pred" / "predictions.json").is_file() and (tmp_path / "m.onnx").is_file()


def test_stage2_without_a_student_checkpoint_says_so(splits, teacher, tmp_path):
    with pytest.raises(InputError, match="refine.student must name the stage-1 checkpoint"):
        train(_stage2(splits, "", teacher, tmp_path / "s2"))


def test_refine_recipe_checks(tmp_path):
    with pytest.raises(InputError, match="refine.target: expected teacher | gt"):
        load_config("configs/refine_seed002_synth.yaml", ["refine.target=student"])
    with pytest.raises(InputError, match="distill.teacher.model is empty"):
        load_config("configs/refine_seed002_synth.yaml", ["refine.student=x.pth", "distill.teacher.model="])


@pytest.mark.parametrize("recipe, joints", [("refine_seed002_coco_256x192", 17), ("refine_seed002_crowdpose_256x192", 14)])
def test_paper_stage2_recipes_build_the_paper_model(recipe, joints):
    """HRNet-W32 SimCC student at 256x192 + IGP-GCN over the dataset's skeleton, stride-16/8/4 taps."""
    cfg = load_config(f"configs/{recipe}.yaml")
    meta = build.keypoint_meta(cfg.data)
    model = build.model_from_config(cfg, meta, with_init_weights=False)
    assert model.student.input_size == (192, 256) and model.refiner.num_joints == joints == meta.num_joints
    assert [b.gc1.conv.weight.shape[1] - 128 for b in model.refiner.blocks] == [128, 64, 32]   # W32 branches
    assert cfg.refine.block_weights == [0.3, 0.5, 1.0] and cfg.optim.epochs == 30 and cfg.optim.lr == 1e-3
