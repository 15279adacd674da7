"""Every COCO / MPII recipe of seeds 000 (IKD), 001 (ELPN + MAPD) and 003 (FR-SBN), teachers included,
trains two iterations and evaluates once on the tiny real samples of tests/data, with the recipe's own
networks at full width (only the input shrinks, to 64x64: ResNet and HRNet need multiples of 32), its
own codec, augmentation, optimiser and distillation terms. What is changed is listed in
`smoke_overrides`; the ImageNet files the recipes start from are not in the repository, so the models
start from random weights, and a distillation recipe's teacher is a randomly initialised network saved
into tmp_path (the teacher loader requires a file). Also: the MAPD Table 6 plan's four rows."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from helpers import data_overrides
from posedistill.commands import ablate
from posedistill.commands.ablate import load_plan
from posedistill.distill.config import auto_gt_weight
from posedistill.engine.build import keypoint_meta
from posedistill.engine.checkpoint import read_checkpoint
from posedistill.engine.config import load_config
from posedistill.engine.evaluate import primary_metric
from posedistill.engine.loop import train
from posedistill.models import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# recipe -> (student, teacher or ""): the networks each recipe is documented to build
RECIPES = {
    # seed 000, IKD: ResNet-50 teacher, Student-18, the ResNet-18 baseline; COCO and MPII
    "simplebaseline_r50_coco_256x192.yaml": ("simplebaseline_r50", ""),
    "simplebaseline_r18_coco_256x192.yaml": ("simplebaseline_r18", ""),
    "distill_ikd_r50_r18_coco_256x192.yaml": ("ikd_student18", "simplebaseline_r50"),
    "simplebaseline_r50_mpii_256x256.yaml": ("simplebaseline_r50", ""),
    "simplebaseline_r18_mpii_256x256.yaml": ("simplebaseline_r18", ""),
    # seed 001, ELPN + MAPD: HRNet-W32 teacher, ELPN-V1 / V2, HRNet-W48 (Table 1's comparison); COCO and MPII
    "hrnet_w32_coco_256x192.yaml": ("hrnet_w32", ""),
    "hrnet_w48_coco_256x192.yaml": ("hrnet_w48", ""),
    "elpn_v1_coco_256x192.yaml": ("elpn_v1", ""),
    "elpn_v2_coco_256x192.yaml": ("elpn_v2", ""),
    "distill_mapd_hrnet_w32_elpn_v1_coco_256x192.yaml": ("elpn_v1", "hrnet_w32"),
    "hrnet_w32_mpii_256x256.yaml": ("hrnet_w32", ""),
    "elpn_v1_mpii_256x256.yaml": ("elpn_v1", ""),
    "distill_mapd_hrnet_w32_elpn_v1_mpii_256x256.yaml": ("elpn_v1", "hrnet_w32"),
    # seed 003, FR-SBN
    "fr_sbn_r50_coco_256x192.yaml": ("fr_sbn_r50", ""),
}

# the tests/data sample of each keypoint set: (annotation file, image folder, COCO detections or "gt")
SAMPLES = {
    "coco": ("coco/test_coco.json", "coco", "coco/test_coco_det_AP_H_56.json"),
    "mpii": ("mpii/test_mpii.json", "mpii", "gt"),
}
JOINTS = {"coco": 17, "mpii": 16}


def smoke_overrides(cfg, data_dir: Path, out_dir: Path, teacher_file: Path | None) -> list[str]:
    """What a smoke run changes in a recipe: the data (tests/data), a 64x64 input, random initial weights,
    one epoch of two iterations of two images each, one evaluation, CPU, no workers."""
    ann, images, boxes = SAMPLES[cfg.data.dataset]
    pair = (str(data_dir / ann), str(data_dir / images))
    out = [*data_overrides({"train": pair, "val": pair}), "data.input_size=[64, 64]", "model.checkpoint=",
           "optim.epochs=1", "optim.milestones=[]", "train.max_iters_per_epoch=2", "train.batch_size=2",
           "train.workers=0", "train.eval_interval=1", "train.progress=false", "train.device=cpu",
           f"train.out_dir={out_dir}"]
    if boxes != "gt":
        # the detection file has 118 boxes; two keep the evaluation short and still go through
        # box loading, OKS-NMS and COCO AP
        out += [f"data.val_boxes={data_dir / boxes}", "data.max_val_instances=2"]
    if cfg.data.format == "mpii":
        # no mpii_gt_val.mat here, and the sample JSON has no head_box: PCKh takes its approximate head
        # sizes (head top to neck). PCKh needs a prediction for every entry, so all five people are evaluated
        out.append("data.val_head_boxes=")
    if teacher_file is not None:
        out.append(f"distill.teacher.checkpoint={teacher_file}")
    return out


def random_teacher(cfg, path: Path) -> Path:
    """A randomly initialised teacher of the recipe's architecture, saved as a plain state dict."""
    torch.manual_seed(0)
    teacher = create_model(cfg.distill.teacher.model, num_joints=keypoint_meta(cfg.data).num_joints,
                           **cfg.distill.teacher.model_kwargs)
    torch.save(teacher.state_dict(), path)
    return path


@pytest.fixture
def drop_weight_files(tmp_path):
    """Deletes the test's .pth files afterwards: pytest keeps the tmp_path of its last three sessions, and
    the checkpoints of these full-size networks (last.pth with Adam state, best.pth, the teacher) add up
    to about 5 GB a session."""
    yield
    for path in tmp_path.rglob("*.pth"):
        path.unlink()


def test_every_seed_000_001_003_recipe_has_a_smoke_run():
    """A new top-down heatmap recipe on COCO / MPII / CrowdPose (the seeds 000 / 001 / 003 family; seed
    002's SimCC and refiner recipes have other codecs) must be added to RECIPES."""
    found = set()
    for pattern in ("*_coco_256x192.yaml", "*_mpii_256x256.yaml", "*crowdpose*.yaml"):
        for path in CONFIGS.glob(pattern):
            if load_config(path).codec.type == "heatmap":
                found.add(path.name)
    assert found == set(RECIPES)


@pytest.mark.parametrize("name", sorted(RECIPES))
@pytest.mark.usefixtures("drop_weight_files")
def test_recipe_trains_two_iterations_and_evaluates(name, data_dir, tmp_path):
    student, teacher = RECIPES[name]
    cfg = load_config(CONFIGS / name)
    assert (cfg.model.name, cfg.distill.teacher.model) == (student, teacher)
    teacher_file = random_teacher(cfg, tmp_path / "teacher.pth") if teacher else None
    out_dir = tmp_path / "run"
    run_cfg = load_config(CONFIGS / name, smoke_overrides(cfg, data_dir, out_dir, teacher_file))
    # everything the smoke run does not change is the recipe's
    assert run_cfg.distill.terms == cfg.distill.terms and run_cfg.model.kwargs == cfg.model.kwargs
    assert run_cfg.codec == cfg.codec and run_cfg.eval == cfg.eval

    result = train(run_cfg)

    assert result["iteration"] == 2 and len(result["history"]) == 1
    row = result["history"][0]
    assert math.isfinite(row["train_loss"]) and row["train_loss"] > 0
    # each distillation term of the recipe was computed and logged (a supervised recipe logs none)
    logged = {k[len("train_"):] for k in row if k.startswith("train_")}
    assert set(cfg.distill.terms) <= logged
    for term in ["supervised", *cfg.distill.terms]:
        assert math.isfinite(row[f"train_{term}"]), (term, row)
    # the evaluation ran with the dataset's metric (COCO AP or MPII PCKh mean) and logged it
    key, value = primary_metric(result["last_metrics"])
    assert key == ("Mean" if cfg.data.format == "mpii" else "AP") and math.isfinite(value)
    assert row[f"val_{key}"] == value
    # last.pth holds the recipe's student with its model card; log.json has the row
    state = read_checkpoint(out_dir / "last.pth")
    assert state["card"]["model"]["name"] == student
    assert state["card"]["num_joints"] == JOINTS[cfg.data.dataset]
    assert (out_dir / "log.json").is_file()


def test_mapd_mpii_table6_plan_rows():
    """student / MSET / KLT / both: the teacher parts and the ground-truth share of eq. 3 per row (the
    plan file says why the removed part's weight goes to the ground truth)."""
    recipe = CONFIGS / "distill_mapd_hrnet_w32_elpn_v1_mpii_256x256.yaml"
    cfg = load_config(recipe)
    variants, refine, reference = load_plan(str(CONFIGS / "plans" / "mapd_mpii_table6.yaml"), cfg.distill.terms)
    assert [v.name for v in variants] == ["student", "mse-only", "kl-only", "both"]
    assert refine is None and reference == "student"
    assert variants[0].terms == {} and all(v.terms == {"mapd": 1.0} for v in variants[1:])
    rows = {}
    for v in variants[1:]:
        d = load_config(recipe, list(v.overrides)).distill
        rows[v.name] = (d.mapd_alpha, d.mapd_beta, auto_gt_weight(d))
    assert rows["mse-only"] == pytest.approx((0.15, 0.0, 0.85))
    assert rows["kl-only"] == pytest.approx((0.0, 0.075, 0.925))
    assert rows["both"] == pytest.approx((0.15, 0.075, 0.775))


def test_mapd_mpii_table6_plan_tabulates_pckh(tmp_path, monkeypatch):
    """The Table 6 plan through `posedistill ablate` with training replaced by a stub that reports MPII
    metrics as evaluate_pckh does (percent): every row and the PCKh mean reach ablation.md."""
    def fake_train(cfg, resume=None):
        Path(cfg.train.out_dir).mkdir(parents=True, exist_ok=True)
        mean = 78.2 + 100 * cfg.distill.mapd_alpha + 50 * cfg.distill.mapd_beta if cfg.distill.terms else 78.2
        return {"last_metrics": {"Head": 95.0, "Mean": mean, "Mean@0.1": 30.0}, "best_metric": mean}

    monkeypatch.setattr(ablate, "train", fake_train)
    monkeypatch.setattr(ablate, "evaluate_checkpoint", lambda cfg, ckpt, out_dir=None: {"Head": 97.0, "Mean": 90.3})
    out = tmp_path / "table6"
    assert ablate.main([str(CONFIGS / "distill_mapd_hrnet_w32_elpn_v1_mpii_256x256.yaml"),
                        "--plan", str(CONFIGS / "plans" / "mapd_mpii_table6.yaml"), "--seeds", "0", "1",
                        "--out", str(out), f"distill.teacher.checkpoint={tmp_path / 'teacher.pth'}"]) == 0
    md = (out / "ablation.md").read_text()
    assert "Mean" in md and "PCKh@0.5 - student" in md
    assert all(f"| {name} |" in md for name in ("student", "mse-only", "kl-only", "both"))
    # PCKh is already a percentage: 78.2 + 100 x 0.15 with no second x100, paired to the student by seed
    [mse_row] = [line for line in md.splitlines() if line.startswith("| mse-only |")]
    assert "93.20 +- 0.00" in mse_row and "+15.00 [+15.00, +15.00] *" in mse_row
