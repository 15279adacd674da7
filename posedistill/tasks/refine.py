"""RefinerTask: seed 002's second stage. The stage-1 SimCC student is frozen; the IGP-GCN refiner
learns to move its pose towards the teacher's (eq. 6-7) or, in Table IV's scheme 1, towards the
ground truth.

Per batch: the student runs in eval mode without gradients (its parameters are frozen and its
BatchNorm statistics never move, so every stage-1 parameter and buffer stays bit-identical); its
decoded pose, confidences and three feature maps go into the refiner; the target is the teacher's
test-time decode (argmax bin / split ratio, `simcc_argmax_pose`) or the codec's "coords" target; the
mask M is the joints with a label (target_weight > 0). The optimiser sees the refiner alone.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from posedistill.losses.distill import simcc_argmax_pose
from posedistill.losses.refine import ProgressivePoseLoss
from posedistill.tasks.base import OptimGroup, Task

TARGETS = ("teacher", "gt")


def freeze(module: nn.Module) -> nn.Module:
    """No gradients, eval mode (BatchNorm statistics fixed)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class RefinerTask(Task):
    """model: a `RefinedPoseModel` whose student is trained (stage 1); teacher: a FrozenTeacher with a
    SimCC head (None for target="gt"); loss: ProgressivePoseLoss."""

    def __init__(self, model: nn.Module, loss: ProgressivePoseLoss, target: str = "teacher",
                 teacher: nn.Module | None = None):
        super().__init__()
        if target not in TARGETS:
            raise ValueError(f"RefinerTask: target must be one of {TARGETS}, got {target!r}")
        if target == "teacher" and teacher is None:
            raise ValueError("RefinerTask: target 'teacher' needs a teacher")
        if teacher is not None and teacher.head_type != "simcc":
            raise ValueError(f"RefinerTask: the teacher must have a SimCC head, got {teacher.head_type!r}")
        self.model = model
        self.loss = loss
        self.target = target
        self.teacher = teacher if target == "teacher" else None
        freeze(self.model.student)
        if self.teacher is not None:
            self.teacher.eval()

    def train(self, mode: bool = True) -> "RefinerTask":
        super().train(mode)
        self.model.student.eval()        # frozen whatever the loop asks
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"refiner": self.model.refiner}

    def optim_groups(self) -> list[OptimGroup]:
        return [OptimGroup("refiner", list(self.model.refiner.parameters()))]

    def _target(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.target == "gt":
            return batch["coords"]
        with torch.no_grad():
            return simcc_argmax_pose(*self.teacher(batch["image"]), self.model.split_ratio)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.model.student.eval()        # evaluation may have called model.train() in between
        with torch.no_grad():
            xy, conf, maps = self.model.initial_pose(batch["image"])
        poses = self.run("refiner", self.model.refiner)(xy, conf, maps)
        target = self._target(batch)
        total, parts = self.loss(poses, target, batch["target_weight"])
        out = {"loss": total}
        out.update({f"block{i + 1}": v.detach() for i, v in enumerate(parts)})
        with torch.no_grad():
            out["stage1"] = self.loss(  # the same error of the unrefined pose, for the log
                [xy] * len(parts), target, batch["target_weight"])[1][-1]
        return out
