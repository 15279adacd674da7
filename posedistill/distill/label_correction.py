"""Label correction by a trained teacher (seed 004: Kato et al., "Improving Multi-Person Pose Estimation
using Label Correction", Sec. 3.2, eq. 2-4), per pixel:

    eq. 2  H_LC = max(H_GT, H_T)                 every keypoint confidence map
    eq. 3  L_LC = L_GT if |L_GT| > |L_T| else L_T   every limb's PAF vector (x, y together)
    eq. 4  y_LC = (H_LC, L_LC)

The background channel (the last confidence map) is recomputed as 1 - max of the corrected keypoint
channels, the codec's own definition of it, so the target stays one consistent set of maps. (The
Chainer code of the authors' group takes min(GT, teacher) of the background instead; the two agree
wherever the teacher's background is itself 1 - max of its keypoint maps.)

`what` picks the maps corrected: "both", "confidence_maps" or "pafs" (the paper's Table 2). A teacher
value never lowers a ground-truth keypoint value, and a ground-truth PAF vector is kept wherever it is
longer than the teacher's. `correct_heatmaps` is the max rule alone, for top-down heatmap targets.
"""
from __future__ import annotations

import torch

CORRECTIONS = ("none", "both", "confidence_maps", "pafs")


def correct_heatmaps(gt: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """eq. 2: the per-pixel max of the ground-truth and teacher maps (teacher detached)."""
    return torch.maximum(gt, teacher.detach().to(gt.dtype))


def correct_pafs(gt: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """eq. 3 on [B, 2L, h, w] fields with x, y interleaved per limb (`PafCodec`): per pixel and limb,
    the ground-truth vector where it is longer than the teacher's, else the teacher's."""
    b, c, h, w = gt.shape
    g = gt.reshape(b, c // 2, 2, h, w)
    t = teacher.detach().to(gt.dtype).reshape(b, c // 2, 2, h, w)
    keep = g.pow(2).sum(2, keepdim=True) > t.pow(2).sum(2, keepdim=True)
    return torch.where(keep, g, t).reshape(b, c, h, w)


def correct_labels(confidence_maps: torch.Tensor, pafs: torch.Tensor, teacher_maps: torch.Tensor,
                   teacher_pafs: torch.Tensor, what: str = "both") -> tuple[torch.Tensor, torch.Tensor]:
    """eq. 4 for a batch of bottom-up targets; the last confidence channel is the background."""
    if what not in CORRECTIONS:
        raise ValueError(f"label correction: expected one of {CORRECTIONS}, got {what!r}")
    if confidence_maps.shape != teacher_maps.shape or pafs.shape != teacher_pafs.shape:
        raise ValueError(f"label correction: teacher maps {tuple(teacher_maps.shape)} / {tuple(teacher_pafs.shape)} "
                         f"differ from the targets {tuple(confidence_maps.shape)} / {tuple(pafs.shape)}")
    if what in ("both", "confidence_maps"):
        keypoints = correct_heatmaps(confidence_maps[:, :-1], teacher_maps[:, :-1])
        background = 1.0 - keypoints.amax(dim=1, keepdim=True)
        confidence_maps = torch.cat([keypoints, background], dim=1)
    if what in ("both", "pafs"):
        pafs = correct_pafs(pafs, teacher_pafs)
    return confidence_maps, pafs
