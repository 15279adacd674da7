"""Each distillation loss against a direct (loop) computation of its paper's equation on small tensors."""
import math

import pytest
import torch
import torch.nn.functional as F

from posedistill.distill.config import DistillConfig, TeacherConfig
from posedistill.distill.terms import TERMS, resolve_distill_config
from posedistill.errors import InputError
from posedistill.losses.distill import (AlignedFeatureLoss, LogitDistillLoss, MultiAngleLoss, PairwiseSimilarityLoss,
                                        PoseDistillLoss, SimCCLogitDistillLoss, linear_decay, simcc_argmax_pose,
                                        simcc_soft_argmax)

torch.manual_seed(0)


def _l_soft(hs, ht):
    """IKD eq. 3 per sample: 1/K sum_k ||h_s - h_t||^2, with ||.||^2 averaged over pixels and x 0.5
    (the JointsMSELoss normalisation), then averaged over the batch."""
    b, k, h, w = hs.shape
    total = 0.0
    for n in range(b):
        per = 0.0
        for j in range(k):
            per += float(((hs[n, j] - ht[n, j]) ** 2).sum()) / (h * w)
        total += 0.5 * per / k
    return total / b


def test_logit_distill_eq3_eq4():
    hs, ht = torch.rand(2, 3, 4, 5), torch.rand(2, 3, 4, 5)
    gt = torch.tensor(0.37)
    loss = LogitDistillLoss(alpha=0.5)
    assert math.isclose(float(loss.soft(hs, ht)), _l_soft(hs, ht), rel_tol=1e-5)
    for alpha in (0.0, 0.5, 0.8):
        loss = LogitDistillLoss(alpha=alpha)
        expect = alpha * 0.37 + (1 - alpha) * _l_soft(hs, ht)
        assert math.isclose(float(loss(hs, ht, gt)), expect, rel_tol=1e-5)
    with pytest.raises(ValueError, match="alpha"):
        LogitDistillLoss(alpha=1.5)


def test_logit_distill_teacher_gets_no_gradient():
    hs = torch.rand(1, 2, 3, 3, requires_grad=True)
    ht = torch.rand(1, 2, 3, 3, requires_grad=True)
    LogitDistillLoss().soft(hs, ht).backward()
    assert hs.grad is not None and ht.grad is None


def test_simcc_logit_kl():
    sx, sy, tx, ty = torch.randn(2, 3, 8), torch.randn(2, 3, 6), torch.randn(2, 3, 8), torch.randn(2, 3, 6)
    T = 2.0
    loss = SimCCLogitDistillLoss(alpha=0.5, temperature=T)
    expect = 0.0
    for n in range(2):
        for k in range(3):
            for s, t in ((sx, tx), (sy, ty)):
                p = F.softmax(t[n, k] / T, 0)
                q = F.softmax(s[n, k] / T, 0)
                expect += float((p * (p.log() - q.log())).sum()) / s.shape[-1]
    expect = expect / 2 / 3 * T * T      # mean over the batch (2), / K: SimCCKLLoss's (official) reduction
    assert math.isclose(float(loss.soft((sx, sy), (tx, ty))), expect, rel_tol=1e-5)
    assert math.isclose(float(loss((sx, sy), (tx, ty), torch.tensor(1.0))), 0.5 + 0.5 * expect, rel_tol=1e-5)
    assert float(loss.soft((tx, ty), (tx, ty))) == pytest.approx(0.0, abs=1e-6)


def _pairwise_direct(fs, ft):
    """IKD eq. 1-2 with explicit pixel loops (maps of equal size)."""
    b, _, h, w = fs.shape
    n = h * w
    total = 0.0
    for s in range(b):
        a = fs[s].reshape(fs.shape[1], n)
        c = ft[s].reshape(ft.shape[1], n)
        acc = 0.0
        for i in range(n):
            for j in range(n):
                f_s = float(a[:, i] @ a[:, j]) / (float(a[:, i].norm()) * float(a[:, j].norm()))
                f_t = float(c[:, i] @ c[:, j]) / (float(c[:, i].norm()) * float(c[:, j].norm()))
                acc += (f_s - f_t) ** 2
        total += acc / n ** 2
    return total / b


def test_pairwise_similarity_eq1_eq2_different_channels():
    fs, ft = torch.randn(2, 3, 3, 4), torch.randn(2, 5, 3, 4)     # channels differ
    loss = PairwiseSimilarityLoss(max_positions=1024)
    assert math.isclose(float(loss(fs, ft).detach()), _pairwise_direct(fs, ft), rel_tol=1e-4)
    # identical structure (one map a channel-scaled copy) -> 0
    assert float(loss(ft, torch.cat([ft, 2 * ft], 1))) == pytest.approx(0.0, abs=1e-6)


def test_pairwise_pools_larger_map_and_caps_positions():
    fs, ft = torch.randn(1, 3, 6, 8), torch.randn(1, 4, 3, 4)
    loss = PairwiseSimilarityLoss(max_positions=1024)
    expect = _pairwise_direct(F.adaptive_max_pool2d(fs, (3, 4)), ft)
    assert math.isclose(float(loss(fs, ft).detach()), expect, rel_tol=1e-4)
    capped = PairwiseSimilarityLoss(max_positions=6)
    size = capped.pooled_size(6, 8, 6, 8)
    assert size[0] * size[1] <= 6
    expect = _pairwise_direct(F.adaptive_max_pool2d(fs, size), F.adaptive_max_pool2d(torch.cat([fs, fs], 1), size))
    assert math.isclose(float(capped(fs, torch.cat([fs, fs], 1))), expect, abs_tol=1e-6)


def test_aligned_feature_eq1():
    fs, ft = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4)
    loss = AlignedFeatureLoss(3, 5)
    conv = loss.align
    aligned = conv(fs).detach()
    c, h, w = 5, 4, 4
    expect = 0.0
    for n in range(2):
        expect += float(((ft[n] - aligned[n]) ** 2).sum()) / (c * h * w)
    assert math.isclose(float(loss(fs, ft).detach()), expect / 2, rel_tol=1e-5)
    summed = AlignedFeatureLoss(3, 5, reduction="sum")
    summed.load_state_dict(loss.state_dict())
    assert math.isclose(float(summed(fs, ft).detach()), expect / 2 * c * h * w, rel_tol=1e-5)
    # size mismatch: the aligned student map is resized to the teacher's
    assert torch.isfinite(loss(torch.randn(2, 3, 2, 2), ft))
    # the adapter learns, the teacher does not
    ft.requires_grad_(True)
    loss(fs, ft).backward()
    assert conv.weight.grad is not None and ft.grad is None
    with pytest.raises(ValueError, match="channels"):
        loss(torch.randn(1, 4, 4, 4), ft)


def test_aligned_feature_eq1_by_hand():
    """eq. 1 on a hand-made 2 x 2 x 2 map: 1 / (C H W) sum (F_tea - conv1x1(F_stu))^2, mean over the batch."""
    loss = AlignedFeatureLoss(2, 2)
    with torch.no_grad():                               # identity 1x1 conv, no bias
        loss.align.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        loss.align.bias.zero_()
    fs = torch.tensor([[[[1., 2.], [3., 4.]], [[0., 0.], [0., 0.]]]])
    ft = torch.tensor([[[[1., 1.], [1., 1.]], [[2., 0.], [0., 2.]]]])
    # squared differences: channel 0 -> 0 + 1 + 4 + 9 = 14, channel 1 -> 4 + 0 + 0 + 4 = 8; 22 / (2*2*2) = 2.75
    assert math.isclose(float(loss(fs, ft).detach()), 2.75, rel_tol=1e-6)
    # a second sample equal to its teacher adds 0: batch mean 1.375
    assert math.isclose(float(loss(torch.cat([fs, fs]), torch.cat([ft, fs])).detach()), 1.375, rel_tol=1e-6)


def test_teacher_pose_is_its_argmax_decode():
    """seed 002 eq. 2-3: teacher pose = argmax bin / split ratio (test-time decode), student soft-argmax."""
    tx, ty = torch.full((1, 2, 8), -5.0), torch.full((1, 2, 6), -5.0)
    tx[0, 0, 5], tx[0, 1, 2], ty[0, 0, 1], ty[0, 1, 4] = 3.0, 1.0, 2.0, 0.5
    tx[0, 1, 3] = 0.9                                   # a near-tie next to the max: argmax, not the expectation
    tx.requires_grad_(True)
    target = simcc_argmax_pose(tx, ty, 2.0)
    assert torch.equal(target, torch.tensor([[[2.5, 0.5], [1.0, 2.0]]]))
    assert not torch.allclose(target, simcc_soft_argmax(tx, ty, 2.0))
    sx, sy = torch.randn(1, 2, 8, requires_grad=True), torch.randn(1, 2, 6, requires_grad=True)
    pose = PoseDistillLoss([(0, 1)])(simcc_soft_argmax(sx, sy, 2.0), target)
    pose.backward()
    assert sx.grad is not None and sx.grad.abs().sum() > 0 and sy.grad.abs().sum() > 0
    assert tx.grad is None


def test_multi_angle_eq1_to_eq3():
    hs, ht = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    loss = MultiAngleLoss(alpha=0.15, beta=0.075, kl_input="softmax", kl_reduction="joint")   # the previous KL
    mpd = _l_soft(hs, ht)
    kpd = 0.0
    for n in range(2):
        for k in range(3):
            p = F.softmax(ht[n, k].flatten(), 0)
            q = F.softmax(hs[n, k].flatten(), 0)
            kpd += float((p * (p.log() - q.log())).sum())
    kpd /= 6
    assert math.isclose(float(loss.mse(hs, ht)), mpd, rel_tol=1e-5)
    assert math.isclose(float(loss.kl(hs, ht)), kpd, rel_tol=1e-5)
    gt = torch.tensor(0.2)
    expect = 0.15 * mpd + 0.075 * kpd + (1 - 0.15 - 0.075) * 0.2
    assert math.isclose(float(loss(hs, ht, gt)), expect, rel_tol=1e-5)
    assert math.isclose(float(loss.distill(hs, ht)), 0.15 * mpd + 0.075 * kpd, rel_tol=1e-5)
    with pytest.raises(ValueError):
        MultiAngleLoss(alpha=0.7, beta=0.5)


def test_pose_distill_eq2_eq3():
    edges = [(0, 1), (1, 2), (0, 3)]
    ps, pt = torch.randn(2, 4, 2) * 10, torch.randn(2, 4, 2) * 10
    loss = PoseDistillLoss(edges, edge_weights=[0.5, 1.0, 2.0])
    expect = 0.0
    for n in range(2):
        pos = sum(abs(float(pt[n, k, c] - ps[n, k, c])) for k in range(4) for c in range(2)) / 4
        cst = 0.0
        for (i, j), wgt in zip(edges, [0.5, 1.0, 2.0]):
            cst += wgt * abs(float((pt[n, i] - pt[n, j]).norm()) - float((ps[n, i] - ps[n, j]).norm()))
        expect += pos + cst
    assert math.isclose(float(loss(ps, pt)), expect / 2, rel_tol=1e-5)
    uniform = PoseDistillLoss(edges)
    assert torch.allclose(uniform.edge_weights, torch.full((3,), 1 / 3))


def test_simcc_soft_argmax():
    x = torch.full((1, 1, 10), -1e4)
    y = torch.full((1, 1, 8), -1e4)
    x[0, 0, 6] = 0
    y[0, 0, 3] = 0
    assert torch.allclose(simcc_soft_argmax(x, y, 2.0), torch.tensor([[[3.0, 1.5]]]))


def test_linear_decay_eq4():
    """Seed 002 eq. 4, gamma(t) = 1 - (t-1)/T, worked by hand for T = 10 at t = 1, T/2 and T (the
    loop's 0-based epoch is t - 1): 1, 1 - 4/10 = 0.6, 1 - 9/10 = 0.1."""
    assert linear_decay(0, 10) == 1.0
    assert linear_decay(4, 10) == pytest.approx(0.6)
    assert linear_decay(9, 10) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        linear_decay(10, 10)


def test_simcc_soft_has_the_supervised_loss_scale():
    """With the teacher's softmax as labels, the teacher part equals SimCCKLLoss (same reduction)."""
    from posedistill.losses.simcc import SimCCKLLoss

    sx, sy, tx, ty = torch.randn(3, 4, 10), torch.randn(3, 4, 7), torch.randn(3, 4, 10), torch.randn(3, 4, 7)
    sup = SimCCKLLoss(use_target_weight=True)(sx, sy, tx.softmax(-1), ty.softmax(-1), torch.ones(3, 4))
    assert math.isclose(float(SimCCLogitDistillLoss().soft((sx, sy), (tx, ty))), float(sup), rel_tol=1e-5)


def test_logit_soft_has_the_supervised_loss_scale():
    from posedistill.losses.heatmap import JointsMSELoss

    hs, ht = torch.rand(2, 3, 4, 5), torch.rand(2, 3, 4, 5)
    sup = JointsMSELoss(use_target_weight=True)(hs, ht, torch.ones(2, 3))
    assert math.isclose(float(LogitDistillLoss().soft(hs, ht)), float(sup), rel_tol=1e-6)


def _gaussian_maps(centres, size=(48, 64), sigma=2.0):
    """[1, K, h, w] peak-1 Gaussians at `centres` [(x, y), ...] heatmap pixels (no truncation)."""
    w, h = size
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2)) for x, y in centres])[None]


def test_mapd_normalized_kl_by_hand():
    """MAPD eq. 2 on the normalized heatmaps of a 1x1x2x2 map: o = (max(h, 0) + eps) / sum, KL per pixel."""
    t = torch.tensor([[[[0.6, 0.2], [0.2, 0.0]]]])
    s = torch.tensor([[[[0.3, 0.5], [-0.4, 0.2]]]])
    eps = 1e-3
    m_t, m_s = [0.601, 0.201, 0.201, 0.001], [0.301, 0.501, 0.001, 0.201]     # clamped + eps; both sum 1.004
    per_joint = sum(a / 1.004 * math.log(a / b) for a, b in zip(m_t, m_s))
    pixel = MultiAngleLoss(eps=eps)
    assert (pixel.kl_input, pixel.kl_reduction) == ("normalized", "pixel")
    assert math.isclose(float(pixel.kl(s, t)), per_joint / 4, rel_tol=1e-5)
    joint = MultiAngleLoss(eps=eps, kl_reduction="joint")
    assert math.isclose(float(joint.kl(s, t)), per_joint, rel_tol=1e-5)
    assert math.isclose(float(pixel.distill(s, t)), 0.15 * _l_soft(s, t) + 0.075 * per_joint / 4, rel_tol=1e-5)


def test_mapd_pixel_reduction_is_the_mean_over_elements():
    hs, ht = torch.rand(2, 3, 4, 5), torch.rand(2, 3, 4, 5)
    loss = MultiAngleLoss()
    log_s, log_t = loss.log_probs(hs), loss.log_probs(ht)
    expect = F.kl_div(log_s, log_t, reduction="sum", log_target=True) / log_s.numel()   # the mean over elements
    assert math.isclose(float(loss.kl(hs, ht)), float(expect), rel_tol=1e-5)


def test_mapd_kl_is_zero_for_identical_maps_and_grows_with_the_shift():
    centres = [(20.3, 30.7), (15.0, 22.5), (30.6, 40.1)]
    teacher = _gaussian_maps(centres)
    loss = MultiAngleLoss(kl_reduction="joint")
    assert abs(float(loss.kl(teacher, teacher))) < 1e-6
    noisy = teacher + 0.05 * torch.randn_like(teacher)
    assert abs(float(loss.kl(noisy, noisy))) < 1e-6
    kls = [float(loss.kl(_gaussian_maps([(x + d, y) for x, y in centres]), teacher)) for d in (1, 2, 4)]
    assert kls[0] > 0.05 and kls[1] > 2 * kls[0] and kls[2] > 2 * kls[1]
    for d, value in zip((1, 2, 4), kls):            # near d^2 / (2 sigma^2), the KL of two shifted Gaussians
        assert 0.7 * d * d / 8 < value < 1.1 * d * d / 8


def test_mapd_kl_gradient_is_finite_with_negative_student_values():
    teacher = _gaussian_maps([(20.3, 30.7), (10.0, 12.0)]).repeat(2, 1, 1, 1)
    student = (0.3 * torch.randn_like(teacher)).requires_grad_(True)       # about half of it negative
    with torch.no_grad():
        student[0, 0] = -1.0                                                 # a map with no positive pixel
        student[1, 1, :4] = 0.0                                              # exact zeros
    loss = MultiAngleLoss()
    value = loss.distill(student, teacher)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(student.grad).all()
    assert student.grad[student > 0].abs().sum() > 0
    kl_only = MultiAngleLoss(alpha=0.0, beta=1.0)
    s2 = student.detach().clone().requires_grad_(True)
    kl_only.kl(s2, teacher).backward()
    assert torch.isfinite(s2.grad).all() and float(s2.grad[s2 < 0].abs().max()) == 0.0   # the clamp: no KL push


def test_mapd_softmax_mode_keeps_the_previous_kl():
    hs, ht = torch.rand(2, 3, 4, 5), torch.rand(2, 3, 4, 5)
    for temperature in (1.0, 0.1):
        loss = MultiAngleLoss(temperature=temperature, kl_input="softmax", kl_reduction="joint")
        log_s = F.log_softmax(hs.flatten(2) / temperature, -1)
        log_t = F.log_softmax(ht.flatten(2) / temperature, -1)
        expect = F.kl_div(log_s, log_t, reduction="sum", log_target=True) / 6
        assert math.isclose(float(loss.kl(hs, ht)), float(expect), rel_tol=1e-5)
    with pytest.raises(ValueError, match="kl_input"):
        MultiAngleLoss(kl_input="sharp")
    with pytest.raises(ValueError, match="kl_reduction"):
        MultiAngleLoss(kl_reduction="sum")


def test_mapd_kl_config_is_checked_and_passed_to_the_term():
    teacher = TeacherConfig(model="elpn_v2", checkpoint="t.pth")
    with pytest.raises(InputError, match=r"distill\.mapd_kl_input: expected one of \['normalized', 'softmax'\]"):
        resolve_distill_config(DistillConfig(teacher=teacher, terms={"mapd": 1.0}, mapd_kl_input="sharp"))
    with pytest.raises(InputError, match=r"distill\.mapd_kl_reduction"):
        resolve_distill_config(DistillConfig(teacher=teacher, terms={"mapd": 1.0}, mapd_kl_reduction="sum"))
    cfg = resolve_distill_config(DistillConfig(teacher=teacher, terms={"mapd": 1.0}, mapd_kl_input="softmax",
                                               mapd_kl_reduction="joint"))
    module = TERMS["mapd"].build(cfg, None)          # the mapd entry needs nothing from the context
    assert (module.kl_input, module.kl_reduction) == ("softmax", "joint")
    default = TERMS["mapd"].build(DistillConfig(), None)
    assert (default.kl_input, default.kl_reduction) == ("normalized", "pixel")
