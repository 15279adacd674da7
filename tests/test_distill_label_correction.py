"""Seed 004 eq. 2-4: label correction never loses ground truth, and takes the teacher where it knows more."""
from __future__ import annotations

import pytest
import torch

from posedistill.distill.label_correction import correct_heatmaps, correct_labels, correct_pafs


def _maps(seed: int):
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(2, 4, 5, 6, generator=g)           # 3 keypoint channels + background
    maps[:, -1] = 1 - maps[:, :-1].amax(1)
    pafs = torch.randn(2, 6, 5, 6, generator=g)          # 3 limbs, x / y interleaved
    return maps, pafs


def test_corrected_keypoint_maps_never_lower_the_ground_truth_and_reach_the_teacher():
    gt, gt_pafs = _maps(0)
    teacher, teacher_pafs = _maps(1)
    maps, _ = correct_labels(gt, gt_pafs, teacher, teacher_pafs, "both")
    assert (maps[:, :-1] >= gt[:, :-1]).all() and (maps[:, :-1] >= teacher[:, :-1]).all()
    assert torch.equal(maps[:, :-1], torch.maximum(gt[:, :-1], teacher[:, :-1]))
    assert torch.allclose(maps[:, -1], 1 - maps[:, :-1].amax(1))    # background: 1 - max of the corrected maps


def test_corrected_pafs_keep_every_longer_ground_truth_vector():
    gt, gt_pafs = _maps(0)
    teacher, teacher_pafs = _maps(1)
    _, pafs = correct_labels(gt, gt_pafs, teacher, teacher_pafs, "both")
    g, t, c = (v.reshape(2, 3, 2, 5, 6) for v in (gt_pafs, teacher_pafs, pafs))
    longer = (g.pow(2).sum(2) > t.pow(2).sum(2)).unsqueeze(2).expand_as(g)
    assert torch.equal(c[longer], g[longer]) and torch.equal(c[~longer], t[~longer])
    # a pixel where the ground truth has no field (a missing limb label) takes the teacher's vector
    zero = torch.zeros(1, 2, 1, 1)
    assert torch.equal(correct_pafs(zero, torch.tensor([0.6, 0.8]).view(1, 2, 1, 1)).flatten(), torch.tensor([0.6, 0.8]))


@pytest.mark.parametrize("what, maps_changed, pafs_changed", [("confidence_maps", True, False), ("pafs", False, True),
                                                               ("none", False, False)])
def test_correction_of_one_kind_of_map_leaves_the_other(what, maps_changed, pafs_changed):
    gt, gt_pafs = _maps(0)
    teacher, teacher_pafs = _maps(1)
    maps, pafs = correct_labels(gt, gt_pafs, teacher, teacher_pafs, what)
    assert torch.equal(maps, gt) != maps_changed and torch.equal(pafs, gt_pafs) != pafs_changed


def test_heatmap_max_rule_and_bad_input():
    assert torch.equal(correct_heatmaps(torch.tensor([0.2, 0.9]), torch.tensor([0.5, 0.1])), torch.tensor([0.5, 0.9]))
    gt, gt_pafs = _maps(0)
    with pytest.raises(ValueError, match="expected one of"):
        correct_labels(gt, gt_pafs, gt, gt_pafs, "heatmaps")
    with pytest.raises(ValueError, match="differ from the targets"):
        correct_labels(gt, gt_pafs, gt[:, :2], gt_pafs, "both")
