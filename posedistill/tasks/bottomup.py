"""BottomUpTask: a multi-stage Part-Affinity-Field network (seed 004; CMU-Pose, Cao et al. 2017) against
its codec's targets, optionally with a trained teacher (seed 004, Sec. 3.2-3.3):

    baseline  eq. 1   E_L2(P_S, y_GT)                     masked L2, summed over the stages
    LC        eq. 4   E_L2(P_S, y_LC)                     y_LC = labels corrected by the teacher
    KD        eq. 5   (1 - lambda) E_L2(P_S, y_GT) + lambda E_L2(P_S, P_T)
    KD + LC   eq. 6   (1 - lambda) E_L2(P_S, y_LC) + lambda E_L2(P_S, P_T)

P_T is the teacher's last stage on the same augmented input (the teacher runs under no_grad in eval
mode); E_L2 is `losses.paf.MultiStagePafLoss` with the sample's ignore mask on every term.

With a teacher-output cache (`distill.cache`, `distill/cache.py`) the teacher never runs during
training: its last stage on every training image, fitted whole into the input, was stored once and
is warped into each augmented input with the sample's affine. That is an approximation of P_T: the
warp interpolates (and enlarges, the fitted image being smaller than most augmented inputs), parts of
the augmented input outside the stored view (the fitted image and its grey padding) are zeros
(background 1), and a network is not equivariant to scale, so the online teacher answers a zoomed person with its own sigma and limb
width where the warped maps zoom them too. `posedistill cache CONFIG` measures the difference.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from posedistill.distill.label_correction import CORRECTIONS, correct_labels
from posedistill.losses.paf import MultiStagePafLoss
from posedistill.tasks.base import OptimGroup, Task


class BottomUpTask(Task):
    """model: returns one (confidence_maps, pafs) per stage; teacher: a FrozenTeacher of the same
    head, or cache: a PAF `TeacherOutputCache` of the training set (exactly one of the two for
    kd_lambda > 0 or a correction; module docstring); kd_lambda: eq. 5's lambda; correct: none | both |
    confidence_maps | pafs (the maps eq. 2-4 corrects)."""

    def __init__(self, model: nn.Module, loss: MultiStagePafLoss, teacher: nn.Module | None = None,
                 kd_lambda: float = 0.0, correct: str = "none", cache=None):
        super().__init__()
        if correct not in CORRECTIONS:
            raise ValueError(f"BottomUpTask: correct must be one of {CORRECTIONS}, got {correct!r}")
        if not 0.0 <= kd_lambda <= 1.0:
            raise ValueError(f"BottomUpTask: kd_lambda must be in [0, 1], got {kd_lambda}")
        uses_teacher = kd_lambda > 0 or correct != "none"
        if uses_teacher and teacher is None and cache is None:
            raise ValueError("BottomUpTask: knowledge distillation and label correction need a teacher "
                             "or a teacher-output cache")
        if uses_teacher and teacher is not None and cache is not None:
            raise ValueError("BottomUpTask: give a teacher or a teacher-output cache, not both")
        if cache is not None and cache.head_type != "paf":
            raise ValueError(f"BottomUpTask: the teacher-output cache holds {cache.head_type!r} outputs, not PAFs")
        self.model = model
        self.loss = loss
        self.teacher = teacher if uses_teacher else None
        self.cache = cache if uses_teacher else None
        self.kd_lambda = float(kd_lambda)
        self.correct = correct

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def optim_groups(self) -> list[OptimGroup]:
        return [OptimGroup("model", list(self.model.parameters()))]

    def _teacher_maps(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.teacher(image)
        return out[-1] if isinstance(out, list) else out

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        outputs = self.run("model", self.model)(batch["image"])
        maps, pafs, mask = batch["confidence_maps"], batch["pafs"], batch["mask"]
        parts: dict[str, torch.Tensor] = {}
        t_maps = t_pafs = None
        if self.cache is not None:
            t_maps, t_pafs = self.cache.targets(batch, batch["image"].device)
        elif self.teacher is not None:
            t_maps, t_pafs = self._teacher_maps(batch["image"])
        if self.correct != "none":
            maps, pafs = correct_labels(maps, pafs, t_maps, t_pafs, self.correct)
        labels = self.loss(outputs, maps, pafs, mask)
        parts["labels"] = labels.detach()
        total = labels
        if self.kd_lambda > 0:
            kd = self.loss(outputs, t_maps, t_pafs, mask)
            parts["teacher"] = kd.detach()
            total = (1.0 - self.kd_lambda) * labels + self.kd_lambda * kd
        parts["loss"] = total
        return parts
