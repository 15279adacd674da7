"""The table of distillation terms: one entry per term, so a new term is one entry plus its loss module.

Each `Term` says what the term compares (`needs`: the networks' outputs, their feature maps, or the
poses decoded from SimCC outputs), which student heads it accepts, how its loss module is built from
the `distill:` section of a recipe, and how the module is called on (student, teacher). A term whose
module also trains parameters of its own on its own objective (the adversarial discriminator) sets
`own_optimizer`: its call returns (term value, own loss) and its parameters form a separate optimiser
group with the settings of `module.optim_settings()`. Papers and equations are cited in each loss
module's docstring (`posedistill/losses/distill.py`, `posedistill/distill/adversarial.py`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
import torch.nn as nn

from posedistill.errors import InputError, UnknownNameError
from posedistill.distill.adversarial import AdversarialStructure
from posedistill.distill.config import DistillConfig
from posedistill.distill.label_correction import CORRECTIONS
from posedistill.keypoints import KeypointMeta
from posedistill.losses.distill import (AlignedFeatureLoss, LogitDistillLoss, MultiAngleLoss, PairwiseSimilarityLoss,
                                        PoseDistillLoss, SimCCLogitDistillLoss)
from posedistill.losses.feature_distill import AttentionTransferLoss, FitNetsHintLoss


@dataclass(frozen=True)
class TermContext:
    """What building a term may look at besides its config."""
    student: nn.Module                  # the bare student network
    teacher: nn.Module                  # the frozen teacher (FrozenTeacher)
    meta: KeypointMeta                  # keypoint set (joints, skeleton)
    input_size: tuple[int, int]         # network input (width, height)
    device: torch.device


@dataclass(frozen=True)
class Term:
    needs: str                                                  # "outputs" | "features" | "poses"
    heads: tuple[str, ...]                                      # student head types the term accepts
    build: Callable[[DistillConfig, TermContext], nn.Module]    # loss module from the recipe
    call: Callable[[nn.Module, Any, Any], Any]                  # (module, student, teacher) -> value
    own_optimizer: bool = False                                 # call returns (value, own loss); own optimiser group


@torch.no_grad()
def probe_features(model: nn.Module, input_size: tuple[int, int], key: str, who: str,
                   device: torch.device) -> torch.Tensor:
    """Feature map `key` of `model` on a zero image (eval mode, so BN statistics are untouched)."""
    was_training = model.training
    model.eval()
    try:
        w, h = input_size
        _, feats = model(torch.zeros(1, 3, h, w, device=device), return_features=True)
    finally:
        model.train(was_training)
    if key not in feats:
        raise UnknownNameError(f"distill.feature={key!r}: the {who} ({type(model).__name__}) returns features {sorted(feats)}")
    return feats[key]


def _logit(cfg: DistillConfig, ctx: TermContext) -> nn.Module:
    if ctx.student.head_type == "heatmap":
        return LogitDistillLoss(cfg.logit_alpha)
    return SimCCLogitDistillLoss(cfg.logit_alpha, cfg.logit_temperature)


def _feature_channels(cfg: DistillConfig, ctx: TermContext) -> tuple[int, int]:
    """Channels of the student's and the teacher's `distill.feature` map (for a term's adapter)."""
    cs = probe_features(ctx.student, ctx.input_size, cfg.feature, "student", ctx.device).shape[1]
    ct = probe_features(ctx.teacher, ctx.input_size, cfg.feature, "teacher", ctx.device).shape[1]
    return cs, ct


def _aligned(cfg: DistillConfig, ctx: TermContext) -> nn.Module:
    return AlignedFeatureLoss(*_feature_channels(cfg, ctx), cfg.aligned_reduction)


def _fitnets(cfg: DistillConfig, ctx: TermContext) -> nn.Module:
    return FitNetsHintLoss(*_feature_channels(cfg, ctx), cfg.fitnets_kernel)


def _pose(cfg: DistillConfig, ctx: TermContext) -> nn.Module:
    weights = list(cfg.skeleton_weights) or None
    if weights is not None and len(weights) != len(ctx.meta.skeleton):
        raise InputError(f"distill.skeleton_weights has {len(weights)} entries; the {ctx.meta.name} skeleton has "
                         f"{len(ctx.meta.skeleton)} edges")
    return PoseDistillLoss(ctx.meta.skeleton, weights)


def _pose_l1(cfg: DistillConfig, ctx: TermContext) -> nn.Module:
    return PoseDistillLoss(ctx.meta.skeleton, structure=False)


TERMS: dict[str, Term] = {
    # IKD (seed 000) eq. 3-4, teacher share (1 - alpha) L_soft; SimCC students: KL between bin distributions
    "logit": Term("outputs", ("heatmap", "simcc"), _logit, lambda m, s, t: m.distill(s, t)),
    # IKD eq. 1-2: pairwise similarity of feature positions
    "pairwise": Term("features", ("heatmap", "simcc"),
                     lambda cfg, ctx: PairwiseSimilarityLoss(cfg.pairwise_max_positions), lambda m, s, t: m(s, t)),
    # IKD eq. 5, 7-8: the student's L_s; the discriminator's L_ad trains it in its own optimiser group
    "adversarial": Term("outputs", ("heatmap",),
                        lambda cfg, ctx: AdversarialStructure(ctx.meta.num_joints, cfg.disc_channels, cfg.disc_lr),
                        lambda m, s, t: m(s, t), own_optimizer=True),
    # MAPD (seed 001) eq. 1-3, teacher share alpha L_mpd + beta L_kpd
    "mapd": Term("outputs", ("heatmap",),
                 lambda cfg, ctx: MultiAngleLoss(cfg.mapd_alpha, cfg.mapd_beta, cfg.mapd_temperature,
                                                 kl_input=cfg.mapd_kl_input, kl_reduction=cfg.mapd_kl_reduction),
                 lambda m, s, t: m.distill(s, t)),
    # seed 002 eq. 1: 1x1-aligned feature MSE
    "aligned": Term("features", ("heatmap", "simcc"), _aligned, lambda m, s, t: m(s, t)),
    # seed 002 eq. 2-3: L1 pose + skeleton structure on decoded SimCC poses
    "pose": Term("poses", ("simcc",), _pose, lambda m, s, t: m(s, t)),
    # seed 002 eq. 2 without L_cst: the plain L1 pose distillation of Table IV's scheme 3
    "pose_l1": Term("poses", ("simcc",), _pose_l1, lambda m, s, t: m(s, t)),
    # FitNets (Romero et al. 2015) eq. 3: hint loss through a learnable conv regressor (IKD Table V baseline)
    "fitnets": Term("features", ("heatmap", "simcc"), _fitnets, lambda m, s, t: m(s, t)),
    # attention transfer (Zagoruyko & Komodakis 2017) eq. 2, p = 2 (IKD Table V baseline)
    "attention": Term("features", ("heatmap", "simcc"), lambda cfg, ctx: AttentionTransferLoss(),
                      lambda m, s, t: m(s, t)),
}

def build_terms(cfg: DistillConfig, ctx: TermContext) -> dict[str, nn.Module]:
    """Loss modules of the recipe's terms, checked against the student's and teacher's heads."""
    s_head, t_head = ctx.student.head_type, ctx.teacher.head_type
    modules: dict[str, nn.Module] = {}
    for name in cfg.terms:
        term = TERMS[name]
        if term.needs != "features" and s_head != t_head:
            raise InputError(f"distill.terms.{name} compares outputs, but the student's head is {s_head!r} and the "
                             f"teacher's {t_head!r}; pick a teacher with the same head type")
        if s_head not in term.heads:
            raise InputError(f"distill.terms.{name} needs a {' or '.join(term.heads)} head; the student's head is "
                             f"{s_head!r}")
        modules[name] = term.build(cfg, ctx)
    return modules


def cache_feature_message(terms: list[str]) -> str:
    return (f"distill.cache=true cannot serve the feature term(s) {terms}: the cache stores the teacher's outputs "
            f"only, and features of an augmented crop cannot be recovered from the un-augmented one. Use the online "
            f"teacher (distill.cache=false) or drop {terms} from distill.terms")


def resolve_distill_config(cfg: DistillConfig, teacher_only: bool = False) -> DistillConfig:
    """The one check of a `distill:` section (term names and weights, decay names, teacher vs terms, cache
    vs feature terms), run when a recipe loads; returns it with `decay: [all]` expanded to the term names.
    `teacher_only`: a teacher without terms is fine (seed 002's stage 2 uses the teacher's pose alone;
    seed 004's bottom-up KD / label correction are set by `kd_lambda` / `label_correction`)."""
    if cfg.label_correction not in CORRECTIONS:
        raise InputError(f"distill.label_correction: expected one of {list(CORRECTIONS)}, got {cfg.label_correction!r}")
    for key, valid in (("mapd_kl_input", MultiAngleLoss.KL_INPUTS),
                       ("mapd_kl_reduction", MultiAngleLoss.KL_REDUCTIONS)):
        if getattr(cfg, key) not in valid:
            raise InputError(f"distill.{key}: expected one of {list(valid)}, got {getattr(cfg, key)!r}")
    if cfg.adversarial_scale not in ("relative", "raw"):
        raise InputError(f"distill.adversarial_scale: expected relative | raw, got {cfg.adversarial_scale!r}")
    if isinstance(cfg.fitnets_kernel, bool) or not isinstance(cfg.fitnets_kernel, int) or \
            cfg.fitnets_kernel < 1 or cfg.fitnets_kernel % 2 == 0:
        raise InputError(f"distill.fitnets_kernel: expected an odd integer >= 1 (same-size padding), "
                         f"got {cfg.fitnets_kernel!r}")
    if not 0.0 <= cfg.kd_lambda <= 1.0:
        raise InputError(f"distill.kd_lambda: expected a value in [0, 1], got {cfg.kd_lambda}")
    if (cfg.kd_lambda > 0 or cfg.label_correction != "none") and not cfg.teacher.model:
        raise InputError("distill.kd_lambda / distill.label_correction need a teacher: set distill.teacher.model")
    teacher_only = teacher_only or cfg.kd_lambda > 0 or cfg.label_correction != "none"
    unknown = [t for t in cfg.terms if t not in TERMS]
    if unknown:
        raise InputError(f"distill.terms: unknown term(s) {unknown}; valid: {list(TERMS)}")
    for name, w in cfg.terms.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
            raise InputError(f"distill.terms.{name}: expected a weight >= 0, got {w!r}")
    decay = list(cfg.terms) if list(cfg.decay) == ["all"] else list(cfg.decay)
    bad = [d for d in decay if d not in cfg.terms]
    if bad:
        raise InputError(f"distill.decay: {bad} not among distill.terms {sorted(cfg.terms)} (or use [all])")
    if cfg.terms and not cfg.teacher.model:
        raise InputError(f"distill.terms {sorted(cfg.terms)} are set but distill.teacher.model is empty")
    if cfg.teacher.model and not cfg.terms and not teacher_only:
        raise InputError(f"distill.teacher.model is set but distill.terms is empty: name at least one term "
                         f"({', '.join(TERMS)})")
    feat = [t for t in cfg.terms if TERMS[t].needs == "features"]
    if cfg.cache and feat:
        raise InputError(cache_feature_message(feat))
    if cfg.cache and not cfg.terms and cfg.kd_lambda == 0 and cfg.label_correction == "none":
        raise InputError("distill.cache=true but distill.terms is empty and neither distill.kd_lambda nor "
                         "distill.label_correction is set: nothing would use the cached outputs")
    return replace(cfg, decay=decay)
