"""Masked L2 loss of bottom-up PAF networks, summed over stages (seed 004, eq. 1 of Kato et al.;
CMU-Pose's intermediate supervision, Cao et al. CVPR 2017).

Per stage s with prediction (H_s, L_s), targets (H, L) and mask W (1 = counts, 0 = ignored; the
`PafCodec` "mask", [B, 1, h, w], applied to every channel):

    E_s = norm(sum W (H_s - H)^2) + norm(sum W (L_s - L)^2),   loss = sum_s E_s

normalization="mean" (default): norm = / (B * C * h * w) per branch, ignored pixels counted in the
denominator with zero error. This is the loss of the paper's authors' group (`compute_loss` in
`train_coco_pose_estimation.py` of nk35jk/Chainer_Realtime_Multi-Person_Pose_Estimation: per stage
`F.mean_squared_error` of each branch, with the prediction itself as target inside the ignore mask,
summed over stages), so the paper's Adam learning rates (1e-4, then 1e-5) fit it; a mean also keeps
the loss scale independent of batch size, map size and channel count (JointsMSELoss is a mean too).
normalization="cmu": norm = / (2 B), Caffe's EuclideanLoss as CMU-Pose trains with it (sum of
squares over channels and pixels, / 2 / batch): the same gradients as "mean" times B * C * h * w / 2 per branch, so a
learning rate tuned for one does not fit the other.

The mask multiplies the squared error, W (P - T)^2: for a 0/1 mask the same as masking prediction
and target before the difference, and a soft mask weights the error linearly.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

__all__ = ["MultiStagePafLoss"]

_NORMALIZATIONS = ("mean", "cmu")


class MultiStagePafLoss(nn.Module):
    """forward(outputs, confidence_maps, pafs, mask) -> scalar.

    outputs: one (confidence_maps [B, C, h, w], pafs [B, 2L, h, w]) tuple per stage (the bottom-up
    models' output list), or one such tuple; confidence_maps / pafs: targets of those shapes;
    mask: [B, 1, h, w], 1 = counts, 0 = ignored. normalization: "mean" or "cmu" (module docstring)."""

    def __init__(self, normalization: str = "mean"):
        super().__init__()
        if normalization not in _NORMALIZATIONS:
            raise ValueError(f"MultiStagePafLoss: normalization must be one of {_NORMALIZATIONS}, "
                             f"got {normalization!r}")
        self.normalization = normalization

    def _branch(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        err = (pred.float() - target.float()).pow(2) * mask
        if self.normalization == "mean":
            return err.mean()
        return err.sum() / (2.0 * pred.shape[0])

    def forward(self, outputs: Sequence, confidence_maps: torch.Tensor, pafs: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        stages = _stages(outputs)
        if confidence_maps.dim() != 4 or pafs.dim() != 4 or confidence_maps.shape[0] != pafs.shape[0] \
                or confidence_maps.shape[2:] != pafs.shape[2:]:
            raise ValueError(f"MultiStagePafLoss: confidence_maps {tuple(confidence_maps.shape)} and pafs "
                             f"{tuple(pafs.shape)} must be [B, C, h, w] targets of one batch and size")
        b, _, h, w = confidence_maps.shape
        if tuple(mask.shape) != (b, 1, h, w):
            raise ValueError(f"MultiStagePafLoss: mask must be [B, 1, h, w] = [{b}, 1, {h}, {w}], "
                             f"got {tuple(mask.shape)}")
        mask = mask.float()
        total = confidence_maps.new_zeros((), dtype=torch.float32)
        for i, (cm, pf) in enumerate(stages):
            for name, pred, target in (("confidence_maps", cm, confidence_maps), ("pafs", pf, pafs)):
                if pred.shape != target.shape:
                    raise ValueError(f"MultiStagePafLoss: stage {i} {name} has shape {tuple(pred.shape)}, "
                                     f"the target {tuple(target.shape)}")
            total = total + self._branch(cm, confidence_maps, mask) + self._branch(pf, pafs, mask)
        return total


def _stages(outputs) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The per-stage (confidence_maps, pafs) tuples; a bare tuple of two tensors is one stage."""
    if isinstance(outputs, (tuple, list)) and len(outputs) == 2 and all(isinstance(o, torch.Tensor) for o in outputs):
        return [tuple(outputs)]
    if not isinstance(outputs, (tuple, list)) or not outputs or not all(
            isinstance(s, (tuple, list)) and len(s) == 2 and all(isinstance(t, torch.Tensor) for t in s)
            for s in outputs):
        raise ValueError("MultiStagePafLoss: outputs must be a list of (confidence_maps, pafs) tensor pairs, "
                         "one per stage")
    return [tuple(s) for s in outputs]
