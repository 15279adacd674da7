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
least-squares GANs, as a second optimiser group of the training loop. The discriminator's parameters
are never in the student's group, and they receive no gradient from L_s (scored with detached copies
of D's parameters); the student receives none from L_ad (scored on detached heatmaps).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.func import functional_call

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
    """The discriminator and both least-squares objectives of one step.

    forward(student_heatmaps, teacher_heatmaps) -> (L_s, L_ad):
      L_s (eq. 8) scores the student's heatmaps with D's parameters detached, so its gradient reaches
          the student only; it is the term's value, weighted by gamma in the student's objective;
      L_ad (eq. 5) scores detached student and teacher heatmaps, so its gradient reaches D only.
    The training loop backpropagates their sum once and steps D's parameters in their own optimiser
    group (`optim_settings()`), under the same scaler, clipping and LR schedule as the student.
    D sees the student's heatmaps, then the student's and the teacher's again, all in training
    mode: fake and real in separate forward passes, as usual for BN discriminators.
    """

    def __init__(self, num_joints: int, channels: int = 64, lr: float = 1e-4, betas: tuple[float, float] = (0.5, 0.999)):
        super().__init__()
        self.discriminator = StructureDiscriminator(num_joints, channels)
        self.lr = float(lr)
        self.betas = (float(betas[0]), float(betas[1]))

    def optim_settings(self) -> dict:
        """Keyword arguments of the discriminator's own optimiser group (Adam, see the module docstring)."""
        return {"optimizer": "adam", "lr": self.lr, "betas": self.betas}

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if student.shape != teacher.shape:
            raise ValueError(f"adversarial term: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} "
                             f"heatmaps differ in shape")
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        generator = generator_loss_from_scores(functional_call(self.discriminator, frozen, (student,)))
        fake, real = student.detach().float(), teacher.detach().float()
        return generator, discriminator_loss(self.discriminator(fake), self.discriminator(real))
