"""Supervised SimCC loss (seed 002; official `leeyegy/SimCC` KLDiscretLoss)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from posedistill.losses.heatmap import _weights

__all__ = ["SimCCKLLoss"]


class SimCCKLLoss(nn.Module):
    """KL divergence between the SimCC label distributions and the predicted bin distributions
    (Li et al., "SimCC", ECCV 2022, sec. 3 with Gaussian label smoothing; official KLDiscretLoss):

        L = 1/(B K) * sum_{b, k} w_bk * sum_{axis in (x, y)} mean_bins KL(label || softmax(beta * logits))

    KL(q || p) per bin is q (log q - log p) (0 where q = 0); the mean runs over the bins of the axis.
    Reduction of the official `leeyegy/SimCC` `lib/core/loss.py` `KLDiscretLoss`: for each joint,
    KL averaged over the bins, x target weight, *averaged over the batch* (`.mul(weight).mean()`),
    x and y added, summed over joints, divided by K. The value therefore does not depend on the
    batch size (MMPose's 1.x port sums the batch instead; we follow the official code, so the
    balance of seed 002 eq. 5 does not move with the batch size). `beta` sharpens the prediction
    (MMPose `beta`, 1 = official).

    forward(x_logits [B, K, Wk], y_logits [B, K, Hk], x_labels, y_labels, target_weight [B, K])
    -> scalar (the official argument order). Labels are the codec's `simcc_x` / `simcc_y`.
    """

    def __init__(self, use_target_weight: bool = True, beta: float = 1.0):
        super().__init__()
        self.use_target_weight = bool(use_target_weight)
        self.beta = float(beta)

    def forward(self, x_logits: torch.Tensor, y_logits: torch.Tensor, x_labels: torch.Tensor,
                y_labels: torch.Tensor, target_weight: torch.Tensor | None = None) -> torch.Tensor:
        output, target = (x_logits, y_logits), (x_labels, y_labels)
        if x_logits.dim() != 3:
            raise ValueError(f"SimCCKLLoss: x_logits must be [B, K, bins], got shape {tuple(x_logits.shape)}")
        b, k = x_logits.shape[:2]
        w = None
        if self.use_target_weight:
            if target_weight is None:
                raise ValueError("SimCCKLLoss: use_target_weight=True needs target_weight [B, K]")
            w = _weights(target_weight, b, k, "SimCCKLLoss").float()
        total = output[0].new_zeros((), dtype=torch.float32)
        for axis, pred, label in zip("xy", output, target):
            if pred.dim() != 3 or pred.shape != label.shape or pred.shape[:2] != (b, k):
                raise ValueError(f"SimCCKLLoss: {axis} logits {tuple(pred.shape)} and labels {tuple(label.shape)} "
                                 f"must both be [B={b}, K={k}, bins]")
            logp = F.log_softmax(pred.float() * self.beta, dim=-1)
            per_joint = F.kl_div(logp, label.float(), reduction="none").mean(dim=-1)   # [B, K]
            if w is not None:
                per_joint = per_joint * w.to(per_joint.device)
            total = total + per_joint.mean(dim=0).sum()                # batch mean, as official
        return total / k
