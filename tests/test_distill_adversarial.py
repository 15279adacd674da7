"""The adversarial structure term (IKD eq. 5, 8): losses against numbers worked by hand, each loss's
gradient reaching only its own side, and the discriminator learning on its own loss."""
from __future__ import annotations

import pytest
import torch

from posedistill.distill.adversarial import (AdversarialStructure, discriminator_loss,
                                             generator_loss_from_scores)

K = 3


def test_losses_by_hand():
    """D(H_s) scores (0.5, -0.5), D(H_t) scores (1, 0):
    eq. 5: mean(0.25, 0.25) + mean(0, 1) = 0.25 + 0.5 = 0.75;  eq. 8: mean(0.25, 2.25) = 1.25."""
    d_student = torch.tensor([[[[0.5, -0.5]]]])
    d_teacher = torch.tensor([[[[1.0, 0.0]]]])
    assert float(discriminator_loss(d_student, d_teacher)) == pytest.approx(0.75)
    assert float(generator_loss_from_scores(d_student)) == pytest.approx(1.25)


def test_each_loss_reaches_only_its_side():
    torch.manual_seed(0)
    adv = AdversarialStructure(K, channels=4)
    student = torch.rand(2, K, 6, 6, requires_grad=True)
    teacher = torch.rand(2, K, 6, 6)
    generator, own = adv(student, teacher)
    d_params = list(adv.discriminator.parameters())
    g_student, *g_disc = torch.autograd.grad(generator, [student, *d_params], retain_graph=True, allow_unused=True)
    assert g_student is not None and g_student.abs().sum() > 0
    assert all(g is None for g in g_disc)                      # L_s: D's parameters detached
    o_student, *o_disc = torch.autograd.grad(own, [student, *d_params], allow_unused=True)
    assert o_student is None                                   # L_ad: student heatmaps detached
    assert all(g is not None for g in o_disc)
    with pytest.raises(ValueError, match="differ in shape"):
        adv(student, teacher[:, :2])


def test_discriminator_learns_eq5_in_its_own_group():
    torch.manual_seed(1)
    adv = AdversarialStructure(K, channels=4, lr=1e-2)
    settings = adv.optim_settings()
    assert settings == {"optimizer": "adam", "lr": 1e-2, "betas": (0.5, 0.999)}
    opt = torch.optim.Adam(adv.parameters(), lr=settings["lr"], betas=settings["betas"])
    hs, ht = torch.rand(4, K, 6, 6) * 0.2, torch.rand(4, K, 6, 6)
    losses = []
    for _ in range(15):
        _, own = adv(hs, ht)
        opt.zero_grad()
        own.backward()
        opt.step()
        losses.append(float(own.detach()))
    assert losses[-1] < 0.5 * losses[0]
