"""DistillationTask: a student trained against a frozen teacher (or its cached outputs) with weighted
distillation terms; built from a recipe by `engine/build.py` (`build_task`).

Objective (per batch):

    loss = gt_weight * L_gt + sum_term  weight_term * gamma_term(t) * L_term  [+ L_ad]

L_gt is the supervised loss of the student's codec. Each L_term is the *teacher part* of its paper's
term (logit: (1 - alpha) L_soft; mapd: alpha L_mpd + beta L_kpd; the table is `distill/terms.py`);
the ground-truth share of the mixing terms goes into `gt_weight` (`distill.config.auto_gt_weight`),
so that for IKD (terms logit 0.5, pairwise 0.2, adversarial 0.3, logit_alpha 0.5) the sum is exactly
eq. 7: 0.5 (0.5 L_mse + 0.5 L_soft) + 0.2 L_fd + 0.3 L_s; for MAPD (mapd 1.0) exactly eq. 3. gamma(t)
is 1, or seed 002's 1 - (t-1)/T for the terms listed in `decay` -- the ground-truth loss never decays
(seed 002 eq. 5). L_ad is the adversarial discriminator's own objective (IKD eq. 5): its gradient
reaches only the discriminator, whose parameters are a separate optimiser group.

Gradients: the teacher runs under no_grad with frozen parameters in eval mode; every teacher tensor
is detached inside the losses. `optim_groups()` = the student with the learnable adapters (the
aligned term's 1x1 conv), then one group per term with its own optimiser (the discriminator).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from posedistill.distill.label_correction import correct_heatmaps
from posedistill.distill.terms import TERMS, cache_feature_message
from posedistill.losses.distill import linear_decay, simcc_argmax_pose, simcc_soft_argmax
from posedistill.tasks.base import OptimGroup, ScaleRow, Task
from posedistill.tasks.supervised import supervised_loss


@dataclass
class Objective:
    """One batch's objective before summing: L_gt, gt_weight x L_gt, each term as its module returns it
    (`raw`), weighted (and, for relative terms, rescaled), and the own losses of terms with an optimiser."""
    gt: torch.Tensor
    supervised: torch.Tensor
    raw: dict[str, torch.Tensor] = field(default_factory=dict)
    weighted: dict[str, torch.Tensor] = field(default_factory=dict)
    own: dict[str, torch.Tensor] = field(default_factory=dict)


def match_heatmaps(teacher_out: torch.Tensor, student_out: torch.Tensor) -> torch.Tensor:
    """Teacher heatmaps resized to the student's (e.g. a stride-1 student under a stride-4 teacher)."""
    if teacher_out.shape[-2:] != student_out.shape[-2:]:
        teacher_out = F.interpolate(teacher_out, size=student_out.shape[-2:], mode="bilinear", align_corners=False)
    return teacher_out


class DistillationTask(Task):
    """See the module docstring.

    student: the network trained; teacher: a FrozenTeacher (None with `cache`); supervised_loss and
    target_keys: the student codec's loss and target names; terms: name -> loss module (names of
    distill.terms.TERMS); weights: name -> weight; gt_weight: weight of L_gt; decay: term names that
    follow gamma(t); epochs: T of gamma(t); cache: a TeacherOutputCache replacing the teacher's outputs;
    feature_key: feature map the feature terms compare; split_ratio: SimCC bins per pixel (pose term);
    label_correction: heatmap students only, seed 004 eq. 2 on top-down targets: every joint's heatmap
    target becomes max(ground truth, teacher) and counts in the loss (weight 1), so a joint the
    annotation left out is learned from the teacher instead of being ignored. relative_terms: terms
    whose value is rescaled to the supervised loss's magnitude before weighting (the adversarial term:
    docs/loss_scales.md), so their weight is a share of L_gt and their gradient keeps its direction."""

    def __init__(self, student: nn.Module, teacher: nn.Module | None, supervised_loss: nn.Module,
                 target_keys: Sequence[str], *, terms: dict[str, nn.Module], weights: dict[str, float],
                 gt_weight: float = 1.0, decay: Sequence[str] = (), epochs: int = 1, cache=None,
                 feature_key: str = "backbone", split_ratio: float | None = None, label_correction: bool = False,
                 relative_terms: Sequence[str] = ()):
        super().__init__()
        if label_correction and (student.head_type != "heatmap" or tuple(target_keys) != ("heatmaps",)):
            raise ValueError(f"label correction of top-down targets takes the max of heatmaps; the student's head "
                             f"is {student.head_type!r}")
        if set(weights) != set(terms) or any(t not in TERMS for t in terms):
            raise ValueError(f"DistillationTask: terms {sorted(terms)} and weights {sorted(weights)} must name the "
                             f"same entries of {list(TERMS)}")
        if teacher is None and cache is None:
            raise ValueError("DistillationTask needs a teacher or a teacher-output cache")
        needs = {TERMS[t].needs for t in terms}
        if cache is not None and "features" in needs:
            raise ValueError(cache_feature_message([t for t in terms if TERMS[t].needs == "features"]))
        if "poses" in needs and not split_ratio:
            raise ValueError("distill.terms.pose needs the SimCC split ratio (codec.simcc_split_ratio)")
        self.student = student
        self.teacher = teacher
        self.supervised_loss = supervised_loss
        self.target_keys = tuple(target_keys)
        self.terms = nn.ModuleDict(terms)
        self.weights = {k: float(v) for k, v in weights.items()}
        self.gt_weight = float(gt_weight)
        self.decay = tuple(decay)
        self.epochs = int(epochs)
        self.cache = cache
        self.feature_key = feature_key
        self.split_ratio = split_ratio
        self.needs_features = "features" in needs
        self.needs_outputs = "outputs" in needs or label_correction
        self.label_correction = bool(label_correction)
        self.relative_terms = tuple(t for t in relative_terms if t in terms)
        self.gamma = 1.0
        if self.teacher is not None:
            self.teacher.eval()

    # ------------------------------------------------------------------ loop hooks

    def train(self, mode: bool = True) -> "DistillationTask":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()          # the teacher stays in eval mode whatever the loop asks
        return self

    def set_epoch(self, epoch: int) -> None:
        """gamma = 1 - epoch / T for the 0-based epoch (seed 002 eq. 4 with t = epoch + 1)."""
        self.gamma = linear_decay(min(int(epoch), self.epochs - 1), self.epochs)

    def trainable_modules(self) -> dict[str, nn.Module]:
        mods = {"student": self.student}
        mods.update({name: m for name, m in self.terms.items() if any(p.requires_grad for p in m.parameters())})
        return mods

    def optim_groups(self) -> list[OptimGroup]:
        main = list(self.student.parameters())
        groups = []
        for name, module in self.terms.items():
            params = [p for p in module.parameters() if p.requires_grad]
            if TERMS[name].own_optimizer:
                groups.append(OptimGroup(name, params, **module.optim_settings()))
            else:
                main += params
        return [OptimGroup("student", main)] + groups

    def extra_state(self) -> dict:
        return {"terms": {name: m.state_dict() for name, m in self.terms.items() if len(m.state_dict())}}

    def load_extra_state(self, state: dict) -> None:
        for name, sd in state.get("terms", {}).items():
            if name not in self.terms:
                raise KeyError(f"checkpoint has state for distillation term {name!r}, which this recipe lacks "
                               f"(terms: {sorted(self.terms)})")
            self.terms[name].load_state_dict(sd)

    # ------------------------------------------------------------------ forward

    def _teacher_outputs(self, batch: dict[str, torch.Tensor]) -> tuple[Any, dict | None]:
        image = batch["image"]
        if self.cache is not None:
            return self.cache.targets(batch, image.device), None
        if self.needs_features:
            return self.teacher(image, return_features=True)
        return self.teacher(image), None

    def _feature(self, feats: dict, who: str) -> torch.Tensor:
        if self.feature_key not in feats:
            raise KeyError(f"distill.feature={self.feature_key!r}: the {who}'s features have {sorted(feats)}")
        return feats[self.feature_key]

    def _inputs(self, needs: str, s_out, t_out, s_feats, t_feats) -> tuple[Any, Any]:
        """(student, teacher) values a term of kind `needs` compares."""
        if needs == "features":
            return self._feature(s_feats, "student"), self._feature(t_feats, "teacher")
        if needs == "poses":
            # seed 002 eq. 2-3: the student's pose by soft-argmax (differentiable), the teacher's by its own
            # test-time decode (argmax bin / split ratio), a fixed target
            return simcc_soft_argmax(*s_out, self.split_ratio), simcc_argmax_pose(*t_out, self.split_ratio)
        return s_out, t_out

    def _objective(self, batch: dict[str, torch.Tensor], bare: bool = False) -> Objective:
        """The supervised loss and every weighted term of one batch, not yet summed. `bare`: call the bare
        student and term modules, never their DDP wrappers (the scale report runs on one process)."""
        image = batch["image"]
        student = self.student if bare else self.run("student", self.student)
        if self.needs_features:
            s_out, s_feats = student(image, return_features=True)
        else:
            s_out, s_feats = student(image), None
        t_out, t_feats = self._teacher_outputs(batch)
        if self.student.head_type == "heatmap" and self.needs_outputs:
            t_out = match_heatmaps(t_out.float(), s_out.float())
        if self.label_correction:
            batch = dict(batch, heatmaps=correct_heatmaps(batch["heatmaps"], t_out),
                         target_weight=torch.ones_like(batch["target_weight"]))
        gt = supervised_loss(self.supervised_loss, self.target_keys, s_out, batch)
        if self.student.head_type == "heatmap" and self.needs_outputs:
            s_out = s_out.float()
        obj = Objective(gt, self.gt_weight * gt)
        for name, module in self.terms.items():
            term = TERMS[name]
            value = term.call(module if bare else self.run(name, module),
                              *self._inputs(term.needs, s_out, t_out, s_feats, t_feats))
            if term.own_optimizer:
                value, obj.own[name] = value
            obj.raw[name] = value
            if name in self.relative_terms:
                # the term enters at the supervised loss's magnitude: its value is scale-free (docs/loss_scales.md)
                value = value * (gt.detach() / value.detach().clamp_min(1e-12))
            obj.weighted[name] = self.weights[name] * (self.gamma if name in self.decay else 1.0) * value
        return obj

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        obj = self._objective(batch)
        total = obj.supervised
        parts: dict[str, torch.Tensor] = {"supervised": obj.gt.detach()}
        for name, value in obj.weighted.items():
            if name in obj.own:
                total = total + obj.own[name]             # reaches only the term's own parameters
                parts[f"{name}_own"] = obj.own[name].detach()
            total = total + value
            parts[name] = obj.raw[name].detach()
        if self.decay:
            parts["gamma"] = torch.tensor(self.gamma, device=total.device)
        parts["loss"] = total
        return parts

    def scale_report(self, batch: dict[str, torch.Tensor]) -> list[ScaleRow]:
        """Each weighted term against the supervised loss (as it enters the objective, gt_weight x L_gt;
        L_gt itself when gt_weight is 0) on `batch`: value ratio and ratio of gradient norms over the
        student's parameters. Leaves no trace: buffers (BN statistics) and RNG are restored, parameters'
        .grad untouched."""
        buffers = {k: v.clone() for k, v in self.named_buffers()}
        with torch.random.fork_rng(devices=[]):
            try:
                obj = self._objective(batch, bare=True)
                params = [p for p in self.student.parameters() if p.requires_grad]
                ref = obj.supervised if self.gt_weight > 0 else obj.gt
                ref_grad = _grad_norm(ref, params)
                rows = [ScaleRow(name, self.weights[name], float(value.detach() / ref.detach().clamp_min(1e-12)),
                                 _grad_norm(value, params) / max(ref_grad, 1e-12))
                        for name, value in obj.weighted.items()]
            finally:
                for k, v in self.named_buffers():
                    v.copy_(buffers[k])
        return rows


def _grad_norm(value: torch.Tensor, params: list[nn.Parameter]) -> float:
    """||d value / d params||_2 without touching the parameters' .grad (the graph is kept for the next)."""
    if not value.requires_grad:
        return 0.0
    grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
    return math.sqrt(sum(float((g.float() ** 2).sum()) for g in grads if g is not None))
