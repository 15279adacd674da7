"""The table of distillation terms and the one check of a `distill:` section."""
from __future__ import annotations

import re

import pytest

from posedistill.distill.config import DistillConfig, TeacherConfig, auto_gt_weight
from posedistill.distill.terms import TERMS, resolve_distill_config
from posedistill.engine.config import ConfigError, load_config

TEACHER = TeacherConfig(model="elpn_v2", checkpoint="t.pth")


def test_table_entries_are_complete():
    assert set(TERMS) == {"logit", "pairwise", "adversarial", "mapd", "aligned", "pose", "pose_l1", "fitnets",
                          "attention"}
    for name, term in TERMS.items():
        assert term.needs in ("outputs", "features", "poses"), name
        assert term.heads and set(term.heads) <= {"heatmap", "simcc"}, name
    assert [n for n, t in TERMS.items() if t.own_optimizer] == ["adversarial"]


def test_resolve_rejects_bad_sections():
    with pytest.raises(ValueError, match="cache.*pairwise"):
        resolve_distill_config(DistillConfig(teacher=TEACHER, terms={"logit": 0.5, "pairwise": 0.2}, cache=True))
    with pytest.raises(ValueError, match="unknown term"):
        resolve_distill_config(DistillConfig(teacher=TEACHER, terms={"logits": 0.5}))
    with pytest.raises(ValueError, match="decay"):
        resolve_distill_config(DistillConfig(teacher=TEACHER, terms={"logit": 0.5}, decay=["aligned"]))
    with pytest.raises(ValueError, match="weight >= 0"):
        resolve_distill_config(DistillConfig(teacher=TEACHER, terms={"logit": -1}))
    with pytest.raises(ValueError, match="teacher.model is empty"):
        resolve_distill_config(DistillConfig(terms={"logit": 0.5}))
    with pytest.raises(ValueError, match="terms is empty"):
        resolve_distill_config(DistillConfig(teacher=TEACHER))
    resolve_distill_config(DistillConfig(teacher=TEACHER, terms={"logit": 0.5, "adversarial": 0.3}, cache=True))


def test_decay_all_is_expanded_once_on_load():
    cfg = load_config(None, ["distill.teacher.model=elpn_v2", "distill.terms={logit: 0.5, aligned: 0.1}",
                             "distill.decay=[all]"])
    assert cfg.distill.decay == ["logit", "aligned"]
    with pytest.raises(ConfigError, match="distill.decay"):
        load_config(None, ["distill.teacher.model=elpn_v2", "distill.terms={logit: 0.5}", "distill.decay=[pose]"])


def test_auto_gt_weight():
    assert auto_gt_weight(DistillConfig(terms={"pairwise": 0.2})) == 1.0
    assert auto_gt_weight(DistillConfig(terms={"logit": 0.5, "pairwise": 0.2})) == 0.25
    assert auto_gt_weight(DistillConfig(terms={"mapd": 1.0})) == pytest.approx(1 - 0.15 - 0.075)
    assert auto_gt_weight(DistillConfig(terms={"logit": 0.5}, gt_weight=2.0)) == 2.0


def test_resolve_checks_the_bottom_up_teacher_settings():
    """seed 004's KD / label correction: a value out of range or without a teacher is one clear error."""
    with pytest.raises(ValueError, match="distill.label_correction: expected one of"):
        resolve_distill_config(DistillConfig(teacher=TEACHER, label_correction="heatmaps"))
    with pytest.raises(ValueError, match=r"distill.kd_lambda: expected a value in \[0, 1\]"):
        resolve_distill_config(DistillConfig(teacher=TEACHER, kd_lambda=1.5))
    with pytest.raises(ValueError, match="need a teacher"):
        resolve_distill_config(DistillConfig(label_correction="both"))
    assert resolve_distill_config(DistillConfig(teacher=TEACHER, kd_lambda=0.5)).kd_lambda == 0.5  # no terms needed


@pytest.mark.parametrize("override, message", [
    ("distill.adversarial_scale=half", "distill.adversarial_scale: expected relative | raw, got 'half'"),
    ("distill.fitnets_kernel=2", "distill.fitnets_kernel: expected an odd integer >= 1"),
    ("distill.fitnets_kernel=0", "distill.fitnets_kernel: expected an odd integer >= 1"),
])
def test_bad_loss_scale_settings_are_one_line_naming_the_key(override, message):
    """The loss-scale switches of issue #15 are checked when the recipe loads, before any model is built."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, ["distill.teacher.model=elpn_v2", "distill.terms={adversarial: 0.3, fitnets: 1.0e-4}",
                           override])
