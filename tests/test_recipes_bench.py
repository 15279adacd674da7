"""The powered synthetic benchmark of issue #15 (docs/results/bench_synth.md): its recipes and plans build
the rows the tables claim, each term at its paper's weight, and the ground-truth share eq. 4 / eq. 3 give."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from posedistill.commands.ablate import load_plan
from posedistill.distill.config import auto_gt_weight
from posedistill.engine.build import heatmap_size_for
from posedistill.engine.config import load_config
from posedistill.models import create_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PLANS = CONFIGS / "plans"


def _rows(recipe: str, plan: str) -> dict[str, tuple]:
    """{variant: (its recipe with its own overrides, its terms)}."""
    cfg = load_config(CONFIGS / recipe)
    variants, refine, reference = load_plan(str(PLANS / plan), cfg.distill.terms)
    assert refine is None
    rows = {}
    for v in variants:
        own = load_config(CONFIGS / recipe, list(v.overrides))
        rows[v.name] = (own, v.terms)
    return rows


def test_ikd_mapd_plan_rows_carry_the_papers_weights():
    rows = _rows("bench_synth_distill.yaml", "bench_ikd_mapd.yaml")
    assert list(rows) == ["student", "logit", "pairwise", "adversarial", "ikd-all", "logit+fitnets",
                          "logit+attention", "mapd-mse", "mapd-kl", "mapd-both", "pairwise-tuned"]
    terms = {name: t for name, (_, t) in rows.items()}
    # the tuned pairwise row sits beside the paper's 0.2, which stays
    assert terms["pairwise"] == {"pairwise": 0.2} and terms["pairwise-tuned"] == {"pairwise": 0.02}
    # IKD eq. 6-7: lambda 0.5, 0.2, gamma 0.3; Table V's FitNet / AT rows add to logit distillation
    assert terms["ikd-all"] == {"logit": 0.5, "pairwise": 0.2, "adversarial": 0.3}
    assert terms["logit+fitnets"] == {"logit": 0.5, "fitnets": 1e-4}
    assert terms["logit+attention"] == {"logit": 0.5, "attention": 1.0}
    assert terms["student"] == {}
    # (alpha of MSE to the teacher, beta of KL, ground-truth weight) per MAPD row; IKD rows' GT weight
    mapd = {}
    for name in ("mapd-mse", "mapd-kl", "mapd-both"):
        cfg, t = rows[name]
        d = dataclasses.replace(cfg.distill, terms=t)
        mapd[name] = (d.mapd_alpha, d.mapd_beta, auto_gt_weight(d))
    expected = {"mapd-mse": (0.15, 0.0, 0.85), "mapd-kl": (0.0, 0.075, 0.925), "mapd-both": (0.15, 0.075, 0.775)}
    for name, row in expected.items():
        assert mapd[name] == pytest.approx(row), name
    cfg, _ = rows["logit"]
    assert cfg.distill.logit_alpha == 0.5 and cfg.distill.adversarial_scale == "relative"
    assert (cfg.model.name, cfg.distill.teacher.model) == ("elpn_v1", "elpn_v2")


def test_ikd_mapd_recipe_is_the_student_recipe_plus_a_teacher():
    """The student alone in the table is exactly the 12-epoch student recipe the benchmark states."""
    student = load_config(CONFIGS / "bench_synth_student.yaml")
    distill = load_config(CONFIGS / "bench_synth_distill.yaml")
    for part in ("model", "data", "codec", "optim", "eval"):
        assert getattr(distill, part) == getattr(student, part), part
    teacher = load_config(CONFIGS / "bench_synth_teacher.yaml")
    assert teacher.data == student.data and teacher.optim.epochs == 4 * student.optim.epochs


def test_warm_start_recipe_changes_only_the_start_and_the_schedule():
    """The warm-start table runs the same rows at the same weights; only the initialisation (one shared
    ground-truth-trained student) and the short schedule differ from the scratch table."""
    scratch = load_config(CONFIGS / "bench_synth_distill.yaml")
    warm = load_config(CONFIGS / "bench_synth_distill_warm.yaml")
    assert warm.model == dataclasses.replace(scratch.model, checkpoint="runs/bench/warm_start/last.pth")
    assert warm.optim == dataclasses.replace(scratch.optim, epochs=5, milestones=[3])
    for part in ("data", "codec", "eval", "distill", "loss"):
        assert getattr(warm, part) == getattr(scratch, part), part
    # the warm start is the scratch table's student alone (seed 0): the command in the recipe's header
    student = load_config(CONFIGS / "bench_synth_student.yaml")
    assert student.train.seed == 0 and student.model.checkpoint == ""


FR_SBN_ROWS = {"sbn": ("simplebaseline_r18", 2.0, 4), "fr-sbn": ("fr_sbn_r18_plain", 8.0, 1),
               "fr-sbn+gcb": ("fr_sbn_r18_gcb", 8.0, 1), "fr-sbn+gcb+skip": ("fr_sbn_r18_gcb_skip", 8.0, 1),
               "fr-sbn+gcb+sa-mfcd": ("fr_sbn_r18", 8.0, 1)}


def test_fr_sbn_plan_rows():
    rows = _rows("bench_synth_fr_sbn.yaml", "bench_fr_sbn.yaml")
    assert list(rows) == list(FR_SBN_ROWS)
    for name, (cfg, terms) in rows.items():
        model_name, sigma, stride = FR_SBN_ROWS[name]
        assert (cfg.model.name, cfg.codec.sigma, terms) == (model_name, sigma, {})
        with torch.device("meta"):
            model = create_model(model_name, num_joints=17)
        assert model.output_stride == stride
        # sigma in input pixels is the same for every row (2 x 4 = 8 x 1)
        assert cfg.codec.sigma * model.output_stride == 8.0
        w, h = cfg.data.input_size
        assert heatmap_size_for((w, h), stride) == (w // stride, h // stride)


def test_fr_sbn_shared_encoder_recipe_changes_only_the_start_and_the_schedule():
    """Every Table 1 row of the shared-encoder design loads the same trunk file (SBN-18 included) and
    keeps the scratch design's data, heatmaps and rows; only the start and the 6-epoch schedule differ."""
    scratch = load_config(CONFIGS / "bench_synth_fr_sbn.yaml")
    warm = load_config(CONFIGS / "bench_synth_fr_sbn_warm.yaml")
    trunk = {"imagenet_weights": "runs/bench/fr_sbn_encoder/trunk.pth"}
    assert warm.model == dataclasses.replace(scratch.model, kwargs=trunk)
    assert warm.optim == dataclasses.replace(scratch.optim, epochs=6, milestones=[4])
    for part in ("data", "codec", "eval", "loss"):
        assert getattr(warm, part) == getattr(scratch, part), part
    rows = _rows("bench_synth_fr_sbn_warm.yaml", "bench_fr_sbn.yaml")
    assert {name: cfg.model.name for name, (cfg, _) in rows.items()} == {n: r[0] for n, r in FR_SBN_ROWS.items()}
    assert all(cfg.model.kwargs == trunk for cfg, _ in rows.values())


def test_fr_sbn_steps_plan_pairs_each_row_with_the_row_it_adds_to():
    """The steps plan is the Table 1 plan (same rows, same run folders) with the paper's reading of it:
    + GCB against FR-SBN, + skip and + SA-MFCD against + GCB."""
    cfg = load_config(CONFIGS / "bench_synth_fr_sbn_warm.yaml")
    rows, _, reference = load_plan(str(PLANS / "bench_fr_sbn.yaml"), cfg.distill.terms)
    steps, _, steps_reference = load_plan(str(PLANS / "bench_fr_sbn_steps.yaml"), cfg.distill.terms)
    assert reference == steps_reference == "sbn"
    assert [dataclasses.replace(v, reference="") for v in steps] == rows
    assert {v.name: v.reference for v in steps} == {"sbn": "", "fr-sbn": "", "fr-sbn+gcb": "fr-sbn",
                                                    "fr-sbn+gcb+skip": "fr-sbn+gcb",
                                                    "fr-sbn+gcb+sa-mfcd": "fr-sbn+gcb"}
