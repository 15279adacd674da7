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
    return total / k


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
    # the batch is summed (official): two copies of a batch give twice the loss
    double = SimCCKLLoss()(torch.cat([xl, xl]), torch.cat([yl, yl]), torch.cat([xt, xt]), torch.cat([yt, yt]),
                           torch.cat([w, w]))
    torch.testing.assert_close(double, 2 * SimCCKLLoss()(xl, yl, xt, yt, w))
    # a prediction equal to the (full-support) label has zero loss
    label = torch.softmax(torch.randn(1, 2, 10), -1)
    zero = SimCCKLLoss()(label.log(), label.log(), label, label, torch.ones(1, 2))
    assert abs(float(zero)) < 1e-6


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
