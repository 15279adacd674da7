"""FitNets hints and attention transfer (the IKD Table V baselines): each loss against values worked
by hand on tiny maps, size / channel mismatches, where gradients go, and the two terms built from a
`distill:` section into a DistillationTask whose student group holds the FitNets regressor."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from posedistill.distill.config import DistillConfig, TeacherConfig, auto_gt_weight
from posedistill.distill.teacher import FrozenTeacher
from posedistill.distill.terms import TERMS, TermContext, build_terms, resolve_distill_config
from posedistill.keypoints import KeypointMeta
from posedistill.losses.distill import AlignedFeatureLoss
from posedistill.losses.feature_distill import AttentionTransferLoss, FitNetsHintLoss
from posedistill.tasks import DistillationTask

K = 3


def _map(*rows):
    """[[...], [...]] per channel -> a [1, C, H, W] tensor."""
    return torch.tensor([list(rows)], dtype=torch.float32)


def _value(t: torch.Tensor) -> float:
    return float(t.detach())


def _fitnets_with(weight: torch.Tensor, bias: torch.Tensor) -> FitNetsHintLoss:
    loss = FitNetsHintLoss(weight.shape[1], weight.shape[0], kernel_size=weight.shape[-1])
    with torch.no_grad():
        loss.regressor.weight.copy_(weight)
        loss.regressor.bias.copy_(bias)
    return loss


# ---------------------------------------------------------------- FitNets


def test_fitnets_eq3_by_hand_centre_tap():
    # r = 3x3 conv, only the centre tap set: r(s)_0 = 2 s, r(s)_1 = -s + 1 for s = [[1, 2], [3, 4]]
    #   r(s)_0 = [[2, 4], [6, 8]]   teacher_0 = [[2, 4], [6, 7]]  -> one squared error 1
    #   r(s)_1 = [[0, -1], [-2, -3]] teacher_1 = [[0, 0], [-2, -3]] -> one squared error 1
    # eq. 3 here: 1/2 x mean over the 2 x 2 x 2 = 8 values = 1/2 x 2/8 = 0.125
    w = torch.zeros(2, 1, 3, 3)
    w[0, 0, 1, 1], w[1, 0, 1, 1] = 2.0, -1.0
    loss = _fitnets_with(w, torch.tensor([0.0, 1.0]))
    student = _map([[1, 2], [3, 4]])
    teacher = _map([[2, 4], [6, 7]], [[0, 0], [-2, -3]])
    assert math.isclose(_value(loss(student, teacher)), 0.125, rel_tol=1e-6)


def test_fitnets_regressor_is_3x3_with_zero_padding():
    # only the top-left tap = 1: r(s)[i, j] = s[i-1, j-1] with zeros outside -> [[0, 0], [0, 1]] for
    # s = [[1, 2], [3, 4]]; against a zero teacher: 1/2 x (1^2) / 4 = 0.125
    w = torch.zeros(1, 1, 3, 3)
    w[0, 0, 0, 0] = 1.0
    loss = _fitnets_with(w, torch.zeros(1))
    assert loss.regressor.kernel_size == (3, 3) and loss.regressor.padding == (1, 1)
    assert math.isclose(_value(loss(_map([[1, 2], [3, 4]]), torch.zeros(1, 1, 2, 2))), 0.125, rel_tol=1e-6)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in loss.modules())      # documented: no BN


def test_fitnets_is_half_the_aligned_mse_with_a_1x1_regressor():
    torch.manual_seed(0)
    s, t = torch.randn(2, 4, 3, 5), torch.randn(2, 6, 3, 5)
    fit, aligned = FitNetsHintLoss(4, 6, kernel_size=1), AlignedFeatureLoss(4, 6)
    aligned.load_state_dict(fit.state_dict())
    assert math.isclose(_value(fit(s, t)), 0.5 * _value(aligned(s, t)), rel_tol=1e-6)


def test_fitnets_resizes_the_regressed_map_bilinearly():
    # a constant student map stays constant under r (centre tap 1) and under the bilinear resize to 4x4;
    # against a zero teacher: 1/2 x mean(1^2) = 0.5
    w = torch.zeros(1, 1, 3, 3)
    w[0, 0, 1, 1] = 1.0
    loss = _fitnets_with(w, torch.zeros(1))
    assert math.isclose(_value(loss(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 4, 4))), 0.5, rel_tol=1e-6)
    torch.manual_seed(1)
    s, t = torch.randn(2, 1, 2, 3), torch.randn(2, 1, 4, 6)
    up = F.interpolate(s, size=(4, 6), mode="bilinear", align_corners=False)
    assert math.isclose(_value(loss(s, t)), 0.5 * float((up - t).pow(2).mean()), rel_tol=1e-5)


def test_fitnets_rejects_bad_kernels_and_channels():
    for k in (0, 2, 4):
        with pytest.raises(ValueError, match="odd"):
            FitNetsHintLoss(4, 6, kernel_size=k)
    with pytest.raises(ValueError, match="FitNetsHintLoss.*4 -> 6"):
        FitNetsHintLoss(4, 6)(torch.zeros(1, 5, 2, 2), torch.zeros(1, 6, 2, 2))


def test_fitnets_gradient_reaches_student_and_regressor_not_teacher():
    torch.manual_seed(0)
    loss = FitNetsHintLoss(4, 6)
    s = torch.randn(2, 4, 3, 3, requires_grad=True)
    t = torch.randn(2, 6, 6, 6, requires_grad=True)
    loss(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert all(p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0 for p in loss.parameters())
    assert t.grad is None


# ---------------------------------------------------------------- attention transfer


def test_attention_eq2_by_hand():
    # student 1x2x2x2: channels [[1, 0], [0, 0]] and [[-1, 0], [0, 0]]: mean_c A^2 = [1, 0, 0, 0], norm 1
    # teacher 1x3x2x2 (other channel count), every value 2: mean_c A^2 = [4, 4, 4, 4] -> [.5, .5, .5, .5]
    # difference [.5, -.5, -.5, -.5], squares .25 each: 1/2 x mean = 1/2 x .25 = 0.125
    student = _map([[1, 0], [0, 0]], [[-1, 0], [0, 0]])
    teacher = torch.full((1, 3, 2, 2), 2.0)
    loss = AttentionTransferLoss()
    assert math.isclose(_value(loss(student, teacher)), 0.125, rel_tol=1e-6)
    # a second sample with identical attention (0) halves the batch mean; the scale of a map does not matter
    two_s, two_t = torch.cat([student, student]), torch.cat([teacher, torch.cat([student, student[:, :1]], 1)])
    assert math.isclose(_value(loss(two_s, two_t)), 0.0625, rel_tol=1e-6)
    assert math.isclose(_value(loss(10 * student, 0.1 * teacher)), 0.125, rel_tol=1e-6)
    assert _value(loss(student, student)) == 0.0


def test_attention_p_is_the_power_of_the_activations():
    # p = 1: mean_c |A| of the student above = [1, 0, 0, 0]; teacher [[3, 4], [0, 0]] -> [3, 4, 0, 0] / 5
    # difference [.4, -.8, 0, 0]: squares .16 + .64 = .8, 1/2 x mean over 4 = 0.1
    student = _map([[1, 0], [0, 0]], [[-1, 0], [0, 0]])
    teacher = _map([[3, 4], [0, 0]])
    assert math.isclose(_value(AttentionTransferLoss(p=1)(student, teacher)), 0.1, rel_tol=1e-6)
    # p = 2 on the same pair: teacher [9, 16, 0, 0] / sqrt(337)
    q = torch.tensor([9.0, 16.0, 0.0, 0.0]) / math.sqrt(337.0)
    expect = 0.5 * float((torch.tensor([1.0, 0, 0, 0]) - q).pow(2).mean())
    assert math.isclose(_value(AttentionTransferLoss(p=2)(student, teacher)), expect, rel_tol=1e-6)
    with pytest.raises(ValueError, match="p must be > 0"):
        AttentionTransferLoss(p=0)


def test_attention_pools_the_larger_map_by_average():
    # teacher 4x4, one channel, A^2 per 2x2 block: top-left [[4, 0], [0, 0]] (average 1, max 4),
    # bottom-right all 1 (average 1, max 1), the rest 0. Average pooling -> [1, 0, 0, 1] / sqrt(2), the
    # student's own map for A = [[1, 0], [0, 1]] -> 0 (max pooling would give [4, 0, 0, 1] / sqrt(17))
    student = _map([[1, 0], [0, 1]])
    teacher = torch.zeros(1, 1, 4, 4)
    teacher[0, 0, 0, 0] = 2.0
    teacher[0, 0, 2:, 2:] = 1.0
    loss = AttentionTransferLoss()
    assert _value(loss(student, teacher)) == pytest.approx(0.0, abs=1e-12)
    # the student may be the larger one: the 4x4 map pooled against A = [[1, 0], [0, 0]] ([1, 0, 0, 0]):
    # difference [1 - 1/sqrt(2), 0, 0, -1/sqrt(2)], 1/2 x mean of the squares
    r = 1 / math.sqrt(2)
    expect = 0.5 * ((1 - r) ** 2 + r ** 2) / 4
    assert math.isclose(_value(loss(teacher, _map([[1, 0], [0, 0]]))), expect, rel_tol=1e-6)
    # the axes are pooled separately: 4x2 against 2x4 -> both 2x2
    assert loss(torch.rand(2, 3, 4, 2), torch.rand(2, 5, 2, 4)).shape == ()
    with pytest.raises(ValueError, match="same B"):
        loss(torch.rand(2, 3, 4, 4), torch.rand(3, 3, 4, 4))


def test_attention_gradient_reaches_student_not_teacher():
    torch.manual_seed(0)
    s = torch.randn(2, 4, 6, 6, requires_grad=True)
    t = torch.randn(2, 8, 3, 3, requires_grad=True)
    AttentionTransferLoss()(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
    assert list(AttentionTransferLoss().parameters()) == []


# ---------------------------------------------------------------- the terms in a task


class TinyPose(nn.Module):
    """Stand-in pose net: conv backbone of the given width and stride + 1x1 head."""
    head_type = "heatmap"

    def __init__(self, width: int, stride: int):
        super().__init__()
        self.output_stride = stride
        self.backbone = nn.Sequential(nn.Conv2d(3, width, 3, stride, 1), nn.BatchNorm2d(width), nn.ReLU())
        self.head = nn.Conv2d(width, K, 1)

    def forward(self, x, return_features=False):
        f = self.backbone(x)
        out = self.head(f)
        return (out, {"backbone": f}) if return_features else out


class MSE(nn.Module):
    def forward(self, pred, target, weight):
        return 0.5 * ((pred - target) ** 2 * weight[..., None, None]).mean()


META = KeypointMeta(name="toy", joints=("a", "b", "c"), flip_pairs=((1, 2),), skeleton=((0, 1), (0, 2)),
                    sigmas=(.1,) * 3, joint_weights=(1.,) * 3, upper_body=(0,))


def test_table_entries():
    for name in ("fitnets", "attention"):
        assert TERMS[name].needs == "features" and set(TERMS[name].heads) == {"heatmap", "simcc"}
        assert not TERMS[name].own_optimizer
    teacher = TeacherConfig(model="elpn_v2", checkpoint="t.pth")
    with pytest.raises(ValueError, match="cache.*fitnets"):
        resolve_distill_config(DistillConfig(teacher=teacher, terms={"fitnets": 1.0}, cache=True))
    with pytest.raises(ValueError, match="cache.*attention"):
        resolve_distill_config(DistillConfig(teacher=teacher, terms={"attention": 1.0}, cache=True))


def test_terms_build_into_a_task_with_the_regressor_in_the_student_group():
    torch.manual_seed(0)
    student, teacher = TinyPose(4, 2), FrozenTeacher(TinyPose(6, 4), amp="none")    # 4x4 vs 2x2 features
    cfg = DistillConfig(terms={"fitnets": 1.0, "attention": 2.0}, fitnets_kernel=5)
    terms = build_terms(cfg, TermContext(student, teacher, META, (8, 8), torch.device("cpu")))
    fit, at = terms["fitnets"], terms["attention"]
    assert isinstance(fit, FitNetsHintLoss) and isinstance(at, AttentionTransferLoss)
    assert (fit.regressor.in_channels, fit.regressor.out_channels, fit.regressor.kernel_size) == (4, 6, (5, 5))
    task = DistillationTask(student, teacher, MSE(), ("heatmaps",), terms=terms, weights=dict(cfg.terms),
                            gt_weight=auto_gt_weight(cfg))
    groups = task.optim_groups()
    assert [g.name for g in groups] == ["student"]
    ids = {id(p) for p in groups[0].params}
    assert {id(p) for p in fit.parameters()} <= ids and {id(p) for p in student.parameters()} <= ids
    assert not ids & {id(p) for p in teacher.parameters()}

    batch = {"image": torch.randn(2, 3, 8, 8), "heatmaps": torch.rand(2, K, 4, 4), "target_weight": torch.ones(2, K)}
    out = task(batch)
    s_out, s_f = student(batch["image"], return_features=True)
    _, t_f = teacher(batch["image"], return_features=True)
    expect = MSE()(s_out, batch["heatmaps"], batch["target_weight"]) + 1.0 * fit(s_f["backbone"], t_f["backbone"]) \
        + 2.0 * at(s_f["backbone"], t_f["backbone"])
    assert math.isclose(float(out["loss"].detach()), float(expect.detach()), rel_tol=1e-5)
    out["loss"].backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is not None for p in fit.parameters())
    assert all(p.grad is None for p in teacher.parameters())
