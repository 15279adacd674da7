"""MultiStagePafLoss: eq. 1 of seed 004 (masked L2 of confidence maps and PAFs) summed over stages."""
import pytest
import torch

from posedistill.losses.paf import MultiStagePafLoss


def _batch(seed=0, b=2, c=3, p=4, h=5, w=6):
    g = torch.Generator().manual_seed(seed)
    cm, pafs = torch.rand(b, c, h, w, generator=g), torch.randn(b, p, h, w, generator=g)
    mask = (torch.rand(b, 1, h, w, generator=g) > 0.3).float()
    stages = [(torch.rand(b, c, h, w, generator=g), torch.randn(b, p, h, w, generator=g)) for _ in range(3)]
    return stages, cm, pafs, mask


def test_hand_computed_value():
    # B = 1, one confidence channel, one PAF (x, y), 1 x 2 pixels, the right pixel ignored
    cm_t = torch.tensor([[[[1.0, 0.0]]]])
    paf_t = torch.tensor([[[[0.0, 0.0]], [[1.0, 0.0]]]])
    mask = torch.tensor([[[[1.0, 0.0]]]])
    s1 = (torch.tensor([[[[0.5, 9.0]]]]), torch.tensor([[[[0.2, 7.0]], [[0.6, -3.0]]]]))
    s2 = (torch.tensor([[[[1.0, -4.0]]]]), torch.tensor([[[[0.0, 5.0]], [[0.0, 1.0]]]]))
    # stage 1: cm (0.5^2) / 2 pixels, pafs (0.2^2 + 0.4^2) / 4; stage 2: 0 and 1^2 / 4
    expected = 0.25 / 2 + (0.04 + 0.16) / 4 + 0.0 + 1.0 / 4
    assert MultiStagePafLoss()([s1, s2], cm_t, paf_t, mask).item() == pytest.approx(expected)
    # CMU normalisation: the sums / (2 B)
    expected_cmu = (0.25 + 0.2) / 2 + (0.0 + 1.0) / 2
    assert MultiStagePafLoss("cmu")([s1, s2], cm_t, paf_t, mask).item() == pytest.approx(expected_cmu)
    assert MultiStagePafLoss()(s2, cm_t, paf_t, mask).item() == pytest.approx(0.25)   # one bare stage


def test_masked_pixels_contribute_nothing():
    stages, cm, pafs, mask = _batch()
    loss = MultiStagePafLoss()
    base = loss(stages, cm, pafs, mask)
    changed = [(c + 100.0 * (1 - mask), p - 50.0 * (1 - mask)) for c, p in stages]
    assert loss(changed, cm, pafs, mask).item() == pytest.approx(base.item(), rel=1e-6)
    leaves = [t.clone().requires_grad_() for s in stages for t in s]
    out = loss([(leaves[2 * i], leaves[2 * i + 1]) for i in range(3)], cm, pafs, mask)
    out.backward()
    for t in leaves:
        assert (t.grad * (1 - mask)).abs().max() == 0          # no gradient under the mask
        assert (t.grad * mask).abs().max() > 0
    # and every stage counts: the loss is the sum of the one-stage losses
    per_stage = sum(loss([s], cm, pafs, mask) for s in stages)
    assert base.item() == pytest.approx(per_stage.item(), rel=1e-6)


def test_argument_errors():
    stages, cm, pafs, mask = _batch()
    loss = MultiStagePafLoss()
    with pytest.raises(ValueError, match="mask"):
        loss(stages, cm, pafs, mask[:, 0])
    with pytest.raises(ValueError, match="stage 1 pafs"):
        loss([stages[0], (stages[1][0], stages[1][1][:, :2])], cm, pafs, mask)
    with pytest.raises(ValueError, match="outputs"):
        loss([], cm, pafs, mask)
    with pytest.raises(ValueError, match="normalization"):
        MultiStagePafLoss("sum")
