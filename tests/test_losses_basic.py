import math

import pytest
import torch

from posedistill.losses import JointsMSELoss, SimCCKLLoss


def _official_joints_mse(output, target, weight):
    """The official HRNet loop: per joint 0.5 * MSE(pred * w, gt * w), summed, divided by K."""
    b, k = output.shape[:2]
    pred, gt = output.reshape(b, k, -1), target.reshape(b, k, -1)
    loss = 0.0
    for j in range(k):
        w = weight[:, j:j + 1]
        loss = loss + 0.5 * ((pred[:, j] * w - gt[:, j] * w) ** 2).mean()
    return loss / k


def test_joints_mse_matches_the_official_formula():
    torch.manual_seed(0)
    out, tgt = torch.rand(3, 5, 8, 6), torch.rand(3, 5, 8, 6)
    w = torch.tensor([[1, 0, 1, 1.5, 1], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1.2]])
    loss = JointsMSELoss()(out, tgt, w)
    torch.testing.assert_close(loss, _official_joints_mse(out, tgt, w))
    torch.testing.assert_close(JointsMSELoss()(out, tgt, w[..., None]), loss)       # [B, K, 1] accepted
    torch.testing.assert_close(JointsMSELoss(scale=1.0)(out, tgt, w), 2 * loss)      # MMPose's KeypointMSELoss
    unweighted = JointsMSELoss(use_target_weight=False)(out, tgt, w)
    torch.testing.assert_close(unweighted, 0.5 * ((out - tgt) ** 2).mean())
    out.requires_grad_(True)
    JointsMSELoss()(out, tgt, w).backward()
    assert out.grad[1, :2].abs().sum() == 0 and out.grad[0, 0].abs().sum() > 0         # weight-0 joints get no gradient


def _direct_kl(xl, yl, xt, yt, w, beta=1.0):
    total = 0.0
    b, k = xl.shape[:2]
    for logits, label in ((xl, xt), (yl, yt)):
        logp = torch.log_softmax(beta * logits, -1)
        for i in range(b):
            for j in range(k):
                q = label[i, j]
                kl = torch.where(q > 0, q * (torch.log(q.clamp_min(1e-30)) - logp[i, j]), torch.zeros_like(q))
                total = total + w[i, j] * kl.mean()
    return total / k / b                                     # official KLDiscretLoss: batch mean, / K


def test_simcc_kl_matches_a_direct_computation():
    torch.manual_seed(1)
    xl, yl = torch.randn(2, 4, 12), torch.randn(2, 4, 16)
    xt, yt = torch.softmax(torch.randn(2, 4, 12), -1), torch.softmax(torch.randn(2, 4, 16), -1)
    xt[0, 0] = 0.0                                           # a zero (masked) label contributes nothing
    xt[1, 1, :3] = 0.0
    w = torch.tensor([[1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.5, 1.0]])
    torch.testing.assert_close(SimCCKLLoss()(xl, yl, xt, yt, w), _direct_kl(xl, yl, xt, yt, w))
    torch.testing.assert_close(SimCCKLLoss(beta=2.0)(xl, yl, xt, yt, w), _direct_kl(xl, yl, xt, yt, w, 2.0))
    ones = torch.ones(2, 4)
    torch.testing.assert_close(SimCCKLLoss(use_target_weight=False)(xl, yl, xt, yt), _direct_kl(xl, yl, xt, yt, ones))
    # the batch is averaged (official KLDiscretLoss): two copies of a batch give the same loss
    double = SimCCKLLoss()(torch.cat([xl, xl]), torch.cat([yl, yl]), torch.cat([xt, xt]), torch.cat([yt, yt]),
                           torch.cat([w, w]))
    torch.testing.assert_close(double, SimCCKLLoss()(xl, yl, xt, yt, w))
    # a prediction equal to the (full-support) label has zero loss
    label = torch.softmax(torch.randn(1, 2, 10), -1)
    zero = SimCCKLLoss()(label.log(), label.log(), label, label, torch.ones(1, 2))
    assert abs(float(zero)) < 1e-6


def test_simcc_kl_is_batch_size_invariant_and_hand_computed():
    """leeyegy/SimCC KLDiscretLoss: per joint mean_bins KL x weight, mean over the batch, x + y, / K."""
    torch.manual_seed(2)
    xl, yl = torch.randn(1, 3, 10), torch.randn(1, 3, 8)
    xt, yt = torch.softmax(torch.randn(1, 3, 10), -1), torch.softmax(torch.randn(1, 3, 8), -1)
    w = torch.tensor([[1.0, 0.5, 1.0]])
    one = SimCCKLLoss()(xl, yl, xt, yt, w)
    four = SimCCKLLoss()(xl.repeat(4, 1, 1), yl.repeat(4, 1, 1), xt.repeat(4, 1, 1), yt.repeat(4, 1, 1), w.repeat(4, 1))
    torch.testing.assert_close(four, one)
    # by hand: 2 bins, uniform prediction (p = 1/2), one-hot label -> KL per bin (ln 2, 0), bin mean ln2 / 2;
    # x + y -> ln 2 for sample 0 (weight 1); sample 1 has weight 0 -> batch mean ln 2 / 2; K = 1
    logits, label = torch.zeros(2, 1, 2), torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]])
    value = SimCCKLLoss()(logits, logits, label, label, torch.tensor([[1.0], [0.0]]))
    assert abs(float(value) - math.log(2) / 2) < 1e-6


def test_losses_reject_bad_shapes():
    with pytest.raises(ValueError, match="same shape"):
        JointsMSELoss()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 3), torch.ones(1, 2))
    with pytest.raises(ValueError, match=r"target_weight has shape \(1, 3\).*K=2"):
        JointsMSELoss()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), torch.ones(1, 3))
    with pytest.raises(ValueError, match="needs target_weight"):
        JointsMSELoss()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="y logits"):
        SimCCKLLoss()(torch.zeros(1, 2, 8), torch.zeros(1, 2, 9), torch.zeros(1, 2, 8), torch.zeros(1, 2, 8),
                      torch.ones(1, 2))
