"""DistillationTask: a student trained against a frozen teacher (or its cached outputs) with weighted
distillation terms; plugged into the one training loop of `engine/train.py`, and the
`posedistill distill` command.

Objective (per batch):

    loss = gt_weight * L_gt + sum_term  weight_term * gamma_term(t) * L_term

L_gt is the engine's supervised loss (JointsMSELoss / SimCC KL). Each L_term is the *teacher part*
of its paper's term (logit: (1 - alpha) L_soft; mapd: alpha L_mpd + beta L_kpd) (see `posedistill.losses.distill` and `distill/config.py` for the table); the
ground-truth share of the mixing terms goes into `gt_weight` (automatic by default), so that for
IKD (terms logit 0.5, pairwise 0.2, adversarial 0.3, logit_alpha 0.5) the sum is exactly eq. 7:
0.5 (0.5 L_mse + 0.5 L_soft) + 0.2 L_fd + 0.3 L_s; for MAPD (mapd 1.0) exactly eq. 3. gamma(t) is
1, or seed 002's 1 - (t-1)/T for the terms listed in `decay` -- the ground-truth loss never decays
(seed 002 eq. 5).

Gradients: the teacher runs under no_grad with frozen parameters in eval mode; every teacher
tensor is detached inside the losses; the discriminator of the adversarial term is frozen while the
student's loss is built and updated only by `aux_step()` (after the student's optimiser step).
`optim_parameters()` = the student's parameters + learnable adapters (the aligned term's 1x1 conv).
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from posedistill.distill.adversarial import AdversarialStructure
from posedistill.distill.config import FEATURE_TERMS, TERM_NAMES, DistillConfig
from posedistill.losses.distill import (AlignedFeatureLoss, LogitDistillLoss, MultiAngleLoss, PairwiseSimilarityLoss,
                                        PoseDistillLoss, SimCCLogitDistillLoss, linear_decay, simcc_soft_argmax)

OUTPUT_TERMS = ("logit", "mapd", "adversarial", "pose")   # use the teacher's outputs (online or cached)
HEATMAP_ONLY = ("mapd", "adversarial")
SIMCC_ONLY = ("pose",)


def _bare(module: nn.Module) -> nn.Module:
    return getattr(module, "module", module) if isinstance(module, nn.parallel.DistributedDataParallel) else module


def _sync_adapters(terms: dict[str, nn.Module], device: torch.device) -> dict[str, nn.Module]:
    """Multi-process: wrap terms with learnable parameters (the aligned 1x1 adapter) in DDP so their
    gradients are averaged across ranks like the student's. The discriminator syncs its own."""
    import torch.distributed as torch_dist

    if not (torch_dist.is_available() and torch_dist.is_initialized() and torch_dist.get_world_size() > 1):
        return terms
    out = {}
    for name, module in terms.items():
        if name != "adversarial" and any(p.requires_grad for p in module.parameters()):
            module = nn.parallel.DistributedDataParallel(module.to(device),
                                                         device_ids=[device.index] if device.type == "cuda" else None)
        out[name] = module
    return out


def _head_type(model: nn.Module) -> str:
    return getattr(model, "head_type", "heatmap")


def _supervised(loss: nn.Module, head_type: str, out: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    from posedistill.engine.train import supervised_loss

    return supervised_loss(loss, head_type, out, batch)


class DistillationTask(nn.Module):
    """See the module docstring.

    student: the network trained (may be DDP-wrapped); teacher: a FrozenTeacher (or None with `cache`);
    supervised_loss: the engine's loss for the student's head; terms: name -> loss module (names of
    distill.config.TERM_NAMES); weights: name -> weight; gt_weight: weight of L_gt; decay: term names
    that follow gamma(t); epochs: T of gamma(t); cache: a TeacherOutputCache replacing the teacher's
    outputs (feature terms then impossible); feature_key: feats entry the feature terms compare;
    split_ratio: SimCC bins per pixel (pose term)."""

    def __init__(self, student: nn.Module, teacher: nn.Module | None, supervised_loss: nn.Module, *,
                 terms: dict[str, nn.Module], weights: dict[str, float], gt_weight: float = 1.0,
                 decay: Sequence[str] = (), epochs: int = 1, cache=None, feature_key: str = "backbone",
                 split_ratio: float | None = None):
        super().__init__()
        unknown = [t for t in terms if t not in TERM_NAMES]
        if unknown:
            raise ValueError(f"distill.terms: unknown term(s) {unknown}; valid: {list(TERM_NAMES)}")
        if set(weights) != set(terms):
            raise ValueError(f"distill.terms: weights for {sorted(weights)} but modules for {sorted(terms)}")
        bad_decay = [d for d in decay if d not in terms]
        if bad_decay:
            raise ValueError(f"distill.decay names {bad_decay}, which are not among the terms {sorted(terms)}")
        if teacher is None and cache is None:
            raise ValueError("DistillationTask needs a teacher or a teacher-output cache")
        if cache is not None and any(t in FEATURE_TERMS for t in terms):
            raise ValueError(cache_feature_message([t for t in terms if t in FEATURE_TERMS]))
        self.student = student
        self.teacher = teacher
        self.supervised_loss = supervised_loss
        self.terms = nn.ModuleDict(terms)
        self.weights = {k: float(v) for k, v in weights.items()}
        self.gt_weight = float(gt_weight)
        self.decay = tuple(decay)
        self.epochs = int(epochs)
        self.cache = cache
        self.feature_key = feature_key
        self.split_ratio = split_ratio
        self.head_type = _head_type(student)
        self.gamma = 1.0
        self.epoch = 0
        self.needs_features = any(t in FEATURE_TERMS for t in terms)
        self.needs_outputs = any(t in OUTPUT_TERMS for t in terms)
        if self.teacher is not None:
            self.teacher.eval()

    # ------------------------------------------------------------------ loop hooks

    def train(self, mode: bool = True) -> "DistillationTask":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()          # the teacher stays in eval mode whatever the loop asks
        return self

    def set_epoch(self, epoch: int) -> None:
        """0-based epoch from the loop; gamma = 1 - epoch / T (seed 002 eq. 4 with t = epoch + 1)."""
        self.epoch = int(epoch)
        self.gamma = linear_decay(min(self.epoch, self.epochs - 1), self.epochs)

    def optim_parameters(self) -> Iterable[nn.Parameter]:
        params = list(self.student.parameters())
        for name, module in self.terms.items():
            if name != "adversarial":
                params += [p for p in module.parameters() if p.requires_grad]
        return params

    def aux_step(self) -> None:
        if "adversarial" in self.terms:
            self.terms["adversarial"].discriminator_step()

    def extra_state_dict(self) -> dict:
        state: dict[str, Any] = {"epoch": self.epoch}
        for name, module in self.terms.items():
            if name == "adversarial":
                state["adversarial"] = module.extra_state_dict()
            elif len(_bare(module).state_dict()):
                state.setdefault("terms", {})[name] = _bare(module).state_dict()
        return state

    def load_extra_state_dict(self, state: dict) -> None:
        for name, sd in state.get("terms", {}).items():
            if name not in self.terms:
                raise KeyError(f"checkpoint has state for distillation term {name!r}, which this recipe lacks "
                               f"(terms: {sorted(self.terms)})")
            _bare(self.terms[name]).load_state_dict(sd)
        if "adversarial" in self.terms and "adversarial" in state:
            self.terms["adversarial"].load_extra_state_dict(state["adversarial"])

    # ------------------------------------------------------------------ forward

    def _teacher_outputs(self, batch: dict[str, torch.Tensor]) -> tuple[Any, dict | None]:
        image = batch["image"]
        if self.cache is not None:
            return self.cache.targets(batch, image.device), None
        if self.needs_features:
            return self.teacher(image, return_features=True)
        return self.teacher(image), None

    def _match_heatmaps(self, teacher_out: torch.Tensor, student_out: torch.Tensor) -> torch.Tensor:
        if teacher_out.shape[-2:] != student_out.shape[-2:]:
            # e.g. a full-resolution (stride 1) student under a stride-4 teacher
            teacher_out = F.interpolate(teacher_out, size=student_out.shape[-2:], mode="bilinear", align_corners=False)
        return teacher_out

    def _feature(self, feats: dict, who: str) -> torch.Tensor:
        if self.feature_key not in feats:
            raise KeyError(f"distill.feature={self.feature_key!r}: the {who}'s features have {sorted(feats)}")
        return feats[self.feature_key]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = batch["image"]
        if self.needs_features:
            s_out, s_feats = self.student(image, return_features=True)
        else:
            s_out, s_feats = self.student(image), None
        gt = _supervised(self.supervised_loss, self.head_type, s_out, batch)
        t_out, t_feats = self._teacher_outputs(batch)
        if self.head_type == "heatmap" and self.needs_outputs:
            s_out = s_out.float()
            t_out = self._match_heatmaps(t_out.float(), s_out)
        total = self.gt_weight * gt
        parts: dict[str, torch.Tensor] = {"supervised": gt.detach()}
        for name, module in self.terms.items():
            if name in ("logit", "mapd"):
                value = module.distill(s_out, t_out)      # teacher share of eq. 4 / MAPD eq. 3
            elif name == "adversarial":
                value = module.generator_loss(s_out, t_out)
            elif name == "pose":
                if not self.split_ratio:
                    raise ValueError("distill.terms.pose needs the SimCC split ratio (codec.simcc_split_ratio)")
                value = module(simcc_soft_argmax(*s_out, self.split_ratio), simcc_soft_argmax(*t_out, self.split_ratio))
            else:   # pairwise, aligned
                value = module(self._feature(s_feats, "student"), self._feature(t_feats, "teacher"))
            weight = self.weights[name] * (self.gamma if name in self.decay else 1.0)
            total = total + weight * value
            parts[name] = value.detach()
        if "adversarial" in self.terms:
            d_loss = self.terms["adversarial"].last_d_loss      # eq. 5 at the last discriminator step
            parts["adversarial_d"] = torch.tensor(d_loss if math.isfinite(d_loss) else 0.0, device=total.device)
        if self.decay:
            parts["gamma"] = torch.tensor(self.gamma, device=total.device)
        parts["loss"] = total
        return parts


# --------------------------------------------------------------------------------------------------
# building from the recipe


def cache_feature_message(terms: list[str]) -> str:
    return (f"distill.cache=true cannot serve the feature term(s) {terms}: the cache stores the teacher's outputs "
            f"only, and features of an augmented crop cannot be recovered from the un-augmented one. Use the online "
            f"teacher (distill.cache=false) or drop {terms} from distill.terms")


def validate_distill_config(cfg: DistillConfig) -> None:
    """Checks that need no model: term names and weights, decay names, cache vs feature terms."""
    unknown = [t for t in cfg.terms if t not in TERM_NAMES]
    if unknown:
        raise ValueError(f"distill.terms: unknown term(s) {unknown}; valid: {list(TERM_NAMES)}")
    for name, w in cfg.terms.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
            raise ValueError(f"distill.terms.{name}: expected a weight >= 0, got {w!r}")
    decay = list(cfg.terms) if cfg.decay == ["all"] else list(cfg.decay)
    bad = [d for d in decay if d not in cfg.terms]
    if bad:
        raise ValueError(f"distill.decay: {bad} not among distill.terms {sorted(cfg.terms)} (or use [all])")
    feat = [t for t in cfg.terms if t in FEATURE_TERMS]
    if cfg.cache and feat:
        raise ValueError(cache_feature_message(feat))
    if cfg.cache and not cfg.terms:
        raise ValueError("distill.cache=true but distill.terms is empty: nothing would use the cached outputs")


def auto_gt_weight(cfg: DistillConfig) -> float:
    """gt_weight < 0 -> logit weight x alpha (IKD eq. 4) + mapd weight x (1 - alpha - beta) (MAPD eq. 3),
    or 1 when neither term is on."""
    if cfg.gt_weight >= 0:
        return float(cfg.gt_weight)
    if "logit" not in cfg.terms and "mapd" not in cfg.terms:
        return 1.0
    w = 0.0
    if "logit" in cfg.terms:
        w += float(cfg.terms["logit"]) * cfg.logit_alpha
    if "mapd" in cfg.terms:
        w += float(cfg.terms["mapd"]) * (1.0 - cfg.mapd_alpha - cfg.mapd_beta)
    return w


@torch.no_grad()
def _probe_features(model: nn.Module, input_size: tuple[int, int], key: str, who: str, device) -> torch.Tensor:
    """Feature map `key` of `model` on a zero image (eval mode, so BN statistics are untouched)."""
    bare = getattr(model, "module", model)
    was_training = bare.training
    bare.eval()
    try:
        w, h = input_size
        _, feats = bare(torch.zeros(1, 3, h, w, device=device), return_features=True)
    finally:
        bare.train(was_training)
    if key not in feats:
        raise KeyError(f"distill.feature={key!r}: the {who} ({type(bare).__name__}) returns features {sorted(feats)}")
    return feats[key]


def build_terms(cfg: DistillConfig, student: nn.Module, teacher: nn.Module, meta, input_size: tuple[int, int],
                device) -> dict[str, nn.Module]:
    """Loss modules of the recipe's terms, checked against the student's and teacher's heads."""
    s_head, t_head = _head_type(student), _head_type(teacher)
    terms: dict[str, nn.Module] = {}
    for name in cfg.terms:
        if name in OUTPUT_TERMS and s_head != t_head:
            raise ValueError(f"distill.terms.{name} compares outputs, but the student's head is {s_head!r} and the "
                             f"teacher's {t_head!r}; pick a teacher with the same head type")
        if name in HEATMAP_ONLY and s_head != "heatmap":
            raise ValueError(f"distill.terms.{name} needs heatmap outputs; the student's head is {s_head!r}")
        if name in SIMCC_ONLY and s_head != "simcc":
            raise ValueError(f"distill.terms.{name} needs SimCC outputs (seed 002); the student's head is {s_head!r}")
        if name == "logit":
            terms[name] = (LogitDistillLoss(cfg.logit_alpha) if s_head == "heatmap"
                           else SimCCLogitDistillLoss(cfg.logit_alpha, cfg.logit_temperature))
        elif name == "mapd":
            terms[name] = MultiAngleLoss(cfg.mapd_alpha, cfg.mapd_beta, cfg.mapd_temperature)
        elif name == "pairwise":
            terms[name] = PairwiseSimilarityLoss(cfg.pairwise_max_positions)
        elif name == "aligned":
            cs = _probe_features(student, input_size, cfg.feature, "student", device).shape[1]
            ct = _probe_features(teacher, input_size, cfg.feature, "teacher", device).shape[1]
            terms[name] = AlignedFeatureLoss(cs, ct, cfg.aligned_reduction)
        elif name == "adversarial":
            terms[name] = AdversarialStructure(meta.num_joints, cfg.disc_channels, cfg.disc_lr)
        elif name == "pose":
            weights = list(cfg.skeleton_weights) or None
            if weights is not None and len(weights) != len(meta.skeleton):
                raise ValueError(f"distill.skeleton_weights has {len(weights)} entries; the {meta.name} skeleton has "
                                 f"{len(meta.skeleton)} edges")
            terms[name] = PoseDistillLoss(meta.skeleton, weights)
    return terms


def build_distillation_task(distill_cfg: DistillConfig, student: nn.Module, supervised_loss: nn.Module, codec, meta,
                            train_set, epochs: int, device: torch.device) -> DistillationTask:
    """The engine's entry point (docs/architecture.md, "Engine <-> distillation")."""
    from posedistill.distill.teacher import load_teacher

    validate_distill_config(distill_cfg)
    if not distill_cfg.terms:
        raise ValueError("distill.teacher.model is set but distill.terms is empty: name at least one term "
                         f"({', '.join(TERM_NAMES)})")
    input_size = tuple(train_set.input_size)
    split_ratio = getattr(codec, "split_ratio", None) or getattr(getattr(student, "module", student), "split_ratio", None)
    teacher = load_teacher(distill_cfg.teacher, meta.num_joints, device, amp=distill_cfg.teacher.amp,
                           input_size=input_size, split_ratio=split_ratio)
    terms = _sync_adapters(build_terms(distill_cfg, student, teacher, meta, input_size, device), torch.device(device))
    cache = None
    if distill_cfg.cache:
        from posedistill.distill.cache import get_or_build_cache

        cache = get_or_build_cache(teacher, distill_cfg.teacher, train_set, distill_cfg.cache_dir,
                                   batch_size=distill_cfg.cache_batch_size, workers=distill_cfg.cache_workers,
                                   device=device)
    decay = list(distill_cfg.terms) if distill_cfg.decay == ["all"] else list(distill_cfg.decay)
    return DistillationTask(student, teacher if cache is None else None, supervised_loss, terms=terms,
                            weights={k: float(v) for k, v in distill_cfg.terms.items()},
                            gt_weight=auto_gt_weight(distill_cfg), decay=decay, epochs=epochs, cache=cache,
                            feature_key=distill_cfg.feature, split_ratio=split_ratio)


# --------------------------------------------------------------------------------------------------
# command


def _require_teacher(cfg, config_path: str) -> None:
    from posedistill.engine.config import ConfigError

    if not cfg.distill.teacher.model:
        raise ConfigError(f"{config_path}: distill.teacher.model is empty; `posedistill distill` needs a teacher "
                          f"(use `posedistill train` for plain training)")
    if not cfg.distill.teacher.checkpoint:
        raise ConfigError(f"{config_path}: distill.teacher.checkpoint is empty; give the teacher's weights file")
    validate_distill_config(cfg.distill)


def main(argv: list[str] | None = None) -> int:
    """`posedistill distill CONFIG [key=value ...] [--resume F] [--out DIR]`"""
    from posedistill.engine.train import run_training_cli

    return run_training_cli(argv, "posedistill distill",
                            "Train a student distilled from a frozen teacher (distill: section of the recipe; "
                            "see posedistill/distill/config.py for the terms).", check=_require_teacher)
