"""Adversarial structure distillation, IKD (seed 000) eq. 5, 7-8.

The student is the generator: its heatmaps H_s are "fake", the teacher's H_t "real". A small
discriminator D scores heatmaps; it is trained with the least-squares loss of eq. 5

    L_ad = E[D(H_s)^2] + E[(D(H_t) - 1)^2]

in alternation with the student, whose adversarial term (eq. 8) is

    L_s = E[(D(H_s) - 1)^2]

and enters the student's objective L(G) = lambda L_ld + beta L_fd + gamma L_s (eq. 7, gamma 0.3).

Discriminator (IKD Sec. II-B): three 3x3 convolutions (stride 1, padding 1), each with BN and ReLU,
and a non-local block in the last two layers (placed in front of layers 2 and 3, so both see
long-range context). Input: the K heatmaps only (eq. 5 scores H alone; the image is not an input).
One deviation, written down: the third layer outputs a 1-channel score map without BN / ReLU.
With a ReLU there, a score stuck at 0 would pass no gradient back to the student (L_s = 1 with zero
slope); the least-squares targets 0 and 1 need a linear output. "1" of eq. 5 is the all-ones map:
the losses average over the score map's positions.

Optimiser (the paper gives none): Adam, lr 1e-4, betas (0.5, 0.999), the usual choice for
least-squares GANs. The discriminator's parameters are never in the student's optimiser, and they
receive no gradient from the student's step (`generator_loss` freezes them while it builds the graph).
"""
from __future__ import annotations

import torch
import torch.distributed as torch_dist
import torch.nn as nn

from posedistill.models.blocks import NonLocalBlock


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class StructureDiscriminator(nn.Module):
    """Heatmaps [B, K, h, w] -> score map [B, 1, h, w] (see the module docstring)."""

    def __init__(self, num_joints: int, channels: int = 64):
        super().__init__()
        if num_joints < 1 or channels < 2:
            raise ValueError(f"StructureDiscriminator: num_joints >= 1 and channels >= 2 needed, got "
                             f"{num_joints}, {channels}")
        self.layer1 = _conv_bn_relu(num_joints, channels)
        self.nonlocal2 = NonLocalBlock(channels)
        self.layer2 = _conv_bn_relu(channels, channels)
        self.nonlocal3 = NonLocalBlock(channels)
        self.layer3 = nn.Conv2d(channels, 1, 3, 1, 1)

    def forward(self, heatmaps: torch.Tensor) -> torch.Tensor:
        x = self.layer1(heatmaps)
        x = self.layer2(self.nonlocal2(x))
        return self.layer3(self.nonlocal3(x))


def discriminator_loss(d_student: torch.Tensor, d_teacher: torch.Tensor) -> torch.Tensor:
    """IKD eq. 5: mean(D(H_s)^2) + mean((D(H_t) - 1)^2)."""
    return d_student.float().pow(2).mean() + (d_teacher.float() - 1.0).pow(2).mean()


def generator_loss_from_scores(d_student: torch.Tensor) -> torch.Tensor:
    """IKD eq. 8: mean((D(H_s) - 1)^2)."""
    return (d_student.float() - 1.0).pow(2).mean()


class AdversarialStructure(nn.Module):
    """The discriminator, its own optimiser, and the alternating step.

    generator_loss(student_heatmaps, teacher_heatmaps) -> L_s (eq. 8), gradient into the student only;
        it also keeps detached copies of both heatmaps for the next `discriminator_step()`.
    discriminator_step() -> L_ad (eq. 5) after one optimiser step of D on the kept heatmaps
        (called by the training loop through `DistillationTask.aux_step()` after the student's step).
    """

    def __init__(self, num_joints: int, channels: int = 64, lr: float = 1e-4, betas: tuple[float, float] = (0.5, 0.999)):
        super().__init__()
        self.discriminator = StructureDiscriminator(num_joints, channels)
        self.lr = float(lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None
        self.last_d_loss: float = float("nan")

    def _ensure_optimizer(self) -> torch.optim.Optimizer:
        # Built lazily so it holds the parameters after the task has been moved to its device.
        if self.optimizer is None:
            self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=self.lr, betas=self.betas)
        return self.optimizer

    def generator_loss(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if student.shape != teacher.shape:
            raise ValueError(f"adversarial term: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} "
                             f"heatmaps differ in shape")
        self._pending = (student.detach().float(), teacher.detach().float())
        flags = [p.requires_grad for p in self.discriminator.parameters()]
        for p in self.discriminator.parameters():
            p.requires_grad_(False)
        try:
            score = self.discriminator(student)
        finally:
            for p, f in zip(self.discriminator.parameters(), flags):
                p.requires_grad_(f)
        return generator_loss_from_scores(score)

    def discriminator_step(self) -> torch.Tensor | None:
        """One least-squares step of D on the heatmaps of the last `generator_loss` call."""
        if self._pending is None:
            return None
        student, teacher = self._pending
        self._pending = None
        opt = self._ensure_optimizer()
        self.discriminator.train()
        opt.zero_grad(set_to_none=True)
        # Fake and real in separate forward passes, as usual for BN discriminators.
        loss = discriminator_loss(self.discriminator(student), self.discriminator(teacher))
        loss.backward()
        if torch_dist.is_available() and torch_dist.is_initialized() and torch_dist.get_world_size() > 1:
            # D is not wrapped in DDP: average its gradients so every rank keeps the same D.
            world = torch_dist.get_world_size()
            for p in self.discriminator.parameters():
                if p.grad is not None:
                    torch_dist.all_reduce(p.grad)
                    p.grad.div_(world)
        opt.step()
        self.last_d_loss = float(loss.detach())
        return loss.detach()

    def extra_state_dict(self) -> dict:
        return {"discriminator": self.discriminator.state_dict(),
                "optimizer": self._ensure_optimizer().state_dict()}

    def load_extra_state_dict(self, state: dict) -> None:
        missing = [k for k in ("discriminator", "optimizer") if k not in state]
        if missing:
            raise KeyError(f"adversarial state: missing {missing} (expected discriminator, optimizer)")
        self.discriminator.load_state_dict(state["discriminator"])
        self._ensure_optimizer().load_state_dict(state["optimizer"])
