"""Two general-purpose feature distillation terms that IKD (seed 000) compares its own feature and
structure distillation against in Table V ("+ LD + FitNet", "+ LD + AT"): FitNets hints and attention
transfer. IKD gives neither the layer nor the weight it used for them; what is chosen here is written in
each class's docstring (and docs/loss_scales.md).

Both compare one feature map of the student with one of the teacher ([B, C, H, W], the `distill.feature`
map), take the teacher's map as a fixed target (detached here) and accept maps of different channel
counts and spatial sizes.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from posedistill.losses.distill import AlignedFeatureLoss

__all__ = ["FitNetsHintLoss", "AttentionTransferLoss"]


class FitNetsHintLoss(AlignedFeatureLoss):
    """FitNets hint loss: Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015, eq. 3:

        L_HT(W_Guided, W_r) = 1/2 || u_h(x; W_Hint) - r(v_g(x; W_Guided); W_r) ||^2

    u_h: the teacher up to its hint layer (here: its `distill.feature` map); v_g: the student up to its
    guided layer (its `distill.feature` map); r: a learnable convolutional regressor from the student's
    channels to the teacher's.

    Normalisation here: 1/2 x the mean over batch, channels, H and W of the squared difference, the
    convention of the supervised JointsMSELoss (0.5 x mean) used by every squared-error term of this
    package (losses/distill.py), so a weight of 1 is eq. 3 as written up to that mean.

    Regressor r: one kernel_size x kernel_size convolution with bias, zero padding kernel_size // 2
    (3x3 by default), no batch norm and no activation. FitNets uses a convolutional regressor whose
    kernel (without padding) shrinks the guided map to the hint's size, and gives r the hint layer's
    non-linearity; here the sizes are matched by padding plus a bilinear resize of r's output to the
    teacher's size when they differ (as the aligned term does), and r stays linear because the
    non-linearity of the compared map depends on the model and `distill.feature`. No BN, so the
    target does not depend on the batch composition. r's parameters require gradients and, like the
    aligned term's adapter, go into the student's optimiser group (DistillationTask.optim_groups).

    The original trains the hint alone first (stage 1), then the whole student with KD (stage 2);
    here the hint is one term of the joint objective, as IKD's Table V rows add it to LD.

    Built on AlignedFeatureLoss (seed 002 eq. 1, a 1x1 adapter and the mean over C, H, W): the same
    computation with a wider regressor and the 1/2 of eq. 3. `regressor` is that convolution.
    forward(student_feat [B,Cs,Hs,Ws], teacher_feat [B,Ct,Ht,Wt]) -> scalar.
    """

    def __init__(self, student_channels: int, teacher_channels: int, kernel_size: int = 3):
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"FitNetsHintLoss kernel_size must be odd and >= 1 (same-size padding), "
                             f"got {kernel_size}")
        super().__init__(student_channels, teacher_channels, reduction="mean")
        # the parent's 1x1 adapter becomes eq. 3's regressor r: same role and checks, a wider receptive field
        self.align = nn.Conv2d(student_channels, teacher_channels, kernel_size, padding=kernel_size // 2)

    @property
    def regressor(self) -> nn.Conv2d:
        return self.align

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        try:
            mean_sq = super().forward(student_feat, teacher_feat)
        except ValueError as err:
            # the parent's message names the aligned term; say which term the user configured
            raise ValueError(f"FitNetsHintLoss (distill.terms.fitnets): {err}") from err
        return 0.5 * mean_sq


class AttentionTransferLoss(nn.Module):
    """Activation-based attention transfer: Zagoruyko & Komodakis, "Paying More Attention to Attention",
    ICLR 2017, eq. 2:

        L_AT = beta/2 sum_j || Q_S^j / ||Q_S^j||_2 - Q_T^j / ||Q_T^j||_2 ||_p ,   Q = vec(F(A))

    with the attention map F(A) = sum_c |A_c|^p (their F^p_sum, p = 2 in the experiments). Here one
    pair j (the `distill.feature` maps) and F(A) = mean_c |A_c|^p: the channel mean instead of the
    sum changes Q by the factor 1/C only, which the L2 normalisation removes, and it keeps the
    un-normalised map small in low precision. The channel counts of the two maps may therefore differ.

    Form implemented: the squared difference of the normalised maps, averaged over the positions
    and the batch, times 1/2:

        L = 1/2 x mean_{b, positions} (Q_S / ||Q_S|| - Q_T / ||Q_T||)^2

    Eq. 2 prints the norm itself (p = 2), not its square; the paper's experiments set beta to 10^3
    divided by the number of attention-map elements and the batch size, and its public code squares
    the difference; the squared form is the one behind the paper's results and the 1/(B HW) is
    that beta's division. So the term's weight is eq. 2's beta: the paper's 10^3 reproduces its
    setting, which was balanced against a cross-entropy loss of order 1; see docs/loss_scales.md
    for the weight to use next to a heatmap loss.

    Sizes: when the spatial sizes differ, the larger attention map (before normalisation) is
    adaptive-average-pooled to the smaller per axis: the mean activation energy of the region each
    smaller-map position covers, so no detail the coarser network lacks is invented.
    forward(student_feat [B,Cs,Hs,Ws], teacher_feat [B,Ct,Ht,Wt]) -> scalar; the teacher is detached.
    """

    def __init__(self, p: float = 2.0, eps: float = 1e-12):
        super().__init__()
        if p <= 0:
            raise ValueError(f"AttentionTransferLoss p must be > 0, got {p}")
        self.p = float(p)
        self.eps = float(eps)

    @staticmethod
    def attention(feat: torch.Tensor, p: float = 2.0) -> torch.Tensor:
        """[B, C, H, W] -> the un-normalised spatial attention map mean_c |A_c|^p, [B, 1, H, W]."""
        return feat.float().abs().pow(p).mean(dim=1, keepdim=True)

    def normalised(self, attention: torch.Tensor) -> torch.Tensor:
        """[B, 1, H, W] -> vec(Q) / ||vec(Q)||_2 per sample, [B, H W]."""
        flat = attention.flatten(1)
        return flat / flat.norm(dim=1, keepdim=True).clamp_min(self.eps)

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        if student_feat.dim() != 4 or teacher_feat.dim() != 4 or student_feat.shape[0] != teacher_feat.shape[0]:
            raise ValueError(f"AttentionTransferLoss: expected [B,C,H,W] maps with the same B, got "
                             f"{tuple(student_feat.shape)} and {tuple(teacher_feat.shape)}")
        q_s = self.attention(student_feat, self.p)
        q_t = self.attention(teacher_feat.detach(), self.p)
        size = (min(q_s.shape[-2], q_t.shape[-2]), min(q_s.shape[-1], q_t.shape[-1]))
        if tuple(q_s.shape[-2:]) != size:
            q_s = F.adaptive_avg_pool2d(q_s, size)
        if tuple(q_t.shape[-2:]) != size:
            q_t = F.adaptive_avg_pool2d(q_t, size)
        return 0.5 * (self.normalised(q_s) - self.normalised(q_t)).pow(2).mean()
