"""Seed 002 eq. 6-7: the masked L1 of the refiner's blocks, worked by hand."""
from __future__ import annotations

import math

import pytest
import torch

from posedistill.losses.distill import PoseDistillLoss
from posedistill.losses.refine import ProgressivePoseLoss, masked_l1


def test_masked_l1_ignores_unlabelled_joints_value_and_gradient():
    pred = torch.tensor([[[1.0, 2.0], [5.0, 5.0], [0.0, 0.0]]], requires_grad=True)
    target = torch.tensor([[[0.0, 0.0], [100.0, -100.0], [1.0, 3.0]]])
    mask = torch.tensor([[1.0, 0.0, 2.0]])               # joint 1 unlabelled; any weight > 0 counts as labelled
    # labelled: |1| + |2| = 3 and |-1| + |-3| = 4 -> (3 + 4) / 2 joints = 3.5; joint 1 (error 200) is not counted
    value = masked_l1(pred, target, mask)
    assert math.isclose(float(value.detach()), 3.5, rel_tol=1e-6)
    value.backward()
    assert pred.grad[0, 1].abs().sum() == 0 and pred.grad[0, 0].abs().sum() > 0
    assert float(masked_l1(pred.detach(), target, torch.zeros(1, 3))) == 0.0     # no labels: 0, not NaN


def test_progressive_loss_weighs_the_blocks_in_half_crop_units():
    loss = ProgressivePoseLoss((8, 4))                    # half sizes 4 (x) and 2 (y)
    target = torch.zeros(1, 1, 2)
    poses = [torch.tensor([[[4.0, 0.0]]]), torch.tensor([[[0.0, 2.0]]]), torch.tensor([[[2.0, 1.0]]])]
    total, parts = loss(poses, target, torch.ones(1, 1))
    assert [float(p) for p in parts] == [1.0, 1.0, 1.0]  # 4 / 4, 2 / 2, 2 / 4 + 1 / 2
    assert math.isclose(float(total), 0.3 + 0.5 + 1.0, rel_tol=1e-6)
    with pytest.raises(ValueError, match="2 poses for 3 block weights"):
        loss(poses[:2], target, torch.ones(1, 1))


def test_pose_l1_is_eq2_without_the_skeleton_term():
    s = torch.tensor([[[0.0, 0.0], [3.0, 0.0]]])
    t = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    # L1 per joint: 1 and 3 -> mean 2; bone 0-1: student 3, teacher 1 -> |2| x weight 1
    assert math.isclose(float(PoseDistillLoss([(0, 1)], structure=False)(s, t)), 2.0)
    assert math.isclose(float(PoseDistillLoss([(0, 1)])(s, t)), 4.0)
