"""Supervised heatmap loss of SimpleBaseline / HRNet."""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["JointsMSELoss"]


def _weights(target_weight: torch.Tensor, b: int, k: int, who: str) -> torch.Tensor:
    if target_weight.numel() != b * k:
        raise ValueError(f"{who}: target_weight has shape {tuple(target_weight.shape)}, expected [B, K] or "
                         f"[B, K, 1] with B={b}, K={k}")
    return target_weight.reshape(b, k)


class JointsMSELoss(nn.Module):
    """Heatmap regression loss of the official SimpleBaseline / HRNet code (Xiao et al. ECCV 2018,
    Sun et al. CVPR 2019; `lib/core/loss.py`):

        L = scale / K * sum_k mean_{b, pixels} (w_bk * (pred_bk - gt_bk))^2,   scale = 0.5

    i.e. 0.5 x the MSE averaged over batch, joints and pixels, with the target weight w applied to
    both maps before squaring (so it enters squared, as in the official code). MMPose's
    `KeypointMSELoss` has no 0.5: pass `scale=1.0` to reproduce it (reference-notes, "Heatmaps").

    forward(output [B, K, h, w], target [B, K, h, w], target_weight [B, K] or [B, K, 1]) -> scalar.
    """

    def __init__(self, use_target_weight: bool = True, scale: float = 0.5):
        super().__init__()
        self.use_target_weight = bool(use_target_weight)
        self.scale = float(scale)

    def forward(self, output: torch.Tensor, target: torch.Tensor,
                target_weight: torch.Tensor | None = None) -> torch.Tensor:
        if output.dim() != 4 or output.shape != target.shape:
            raise ValueError(f"JointsMSELoss: output {tuple(output.shape)} and target {tuple(target.shape)} must "
                             f"both be heatmaps [B, K, h, w] of the same shape")
        diff = output.float() - target.float()
        if self.use_target_weight:
            if target_weight is None:
                raise ValueError("JointsMSELoss: use_target_weight=True needs target_weight [B, K]")
            b, k = output.shape[:2]
            diff = diff * _weights(target_weight, b, k, "JointsMSELoss").to(diff)[:, :, None, None]
        return self.scale * diff.pow(2).mean()
