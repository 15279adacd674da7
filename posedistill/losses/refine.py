"""The second-stage loss of seed 002 (eq. 6-7): masked L1 between each IGP-GCN block's pose and the
target pose (the teacher's, or the ground truth in Table IV's scheme 1), weighted over the blocks.

    eq. 6: L_i = 1/N sum_n | (P_n^tea - P_hat_{i,n}^stu) . M |      M: 1 on joints with a label
    eq. 7: L_s2 = delta L_1 + lambda L_2 + xi L_3,  (delta, lambda, xi) = (0.3, 0.5, 1.0) (Sec. IV-B)

|.| is the L1 norm over x and y, averaged over the labelled joints of the batch (so the loss does not
change with the share of unlabelled joints, and a batch without labels gives 0). Coordinates are in
units of half the crop (x / (W / 2)), OPEC-Net's normalised [-1, 1] frame, so one recipe's loss
scale does not depend on the input size.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum over labelled joints of |pred - target|_1 / number of labelled joints. pred, target [B, K, 2];
    mask [B, K] (> 0 = labelled). Unlabelled joints contribute nothing, gradient included."""
    m = (mask > 0).to(pred.dtype)
    err = (pred - target.detach()).abs().sum(-1) * m
    return err.sum() / m.sum().clamp(min=1.0)


class ProgressivePoseLoss(nn.Module):
    """Eq. 7 over the blocks' poses (crop pixels), see the module docstring."""

    def __init__(self, input_size: Sequence[int], block_weights: Sequence[float] = (0.3, 0.5, 1.0)):
        super().__init__()
        w, h = (float(v) for v in input_size)
        self.register_buffer("half_size", torch.tensor([w / 2, h / 2]), persistent=False)
        self.block_weights = tuple(float(v) for v in block_weights)

    def forward(self, poses: Sequence[torch.Tensor], target: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(weighted sum, [L_1, L_2, L_3])."""
        if len(poses) != len(self.block_weights):
            raise ValueError(f"ProgressivePoseLoss: {len(poses)} poses for {len(self.block_weights)} block weights")
        parts = [masked_l1(p.float() / self.half_size, target.float() / self.half_size, mask) for p in poses]
        return sum(w * v for w, v in zip(self.block_weights, parts)), parts
