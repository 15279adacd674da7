"""Distillation losses: one small module per term, explicit tensor arguments, no teacher inside.

Seeds (../shared/seeds): 000 = IKD (Integral Knowledge Distillation), 001 = ELPN + MAPD,
002 = two-stage distillation with a SimCC student.

Terms that mix a teacher part with the ground-truth loss (IKD eq. 4, MAPD eq. 3) take the
ground-truth loss as an already computed scalar (`gt_loss`), so the same module serves heatmap and
SimCC students whatever supervised loss they use; `.soft(...)` / `.distill(...)` return the teacher
part alone, with its share (`.distill`: e.g. (1 - alpha) L_soft of eq. 4), which is what
`DistillationTask` weights and (optionally) decays.

Normalisation choice shared by the heatmap terms: a squared error "||h_s - h_t||^2" of the papers
is averaged over pixels (and joints and batch) and multiplied by 0.5, exactly like the supervised
`JointsMSELoss` of the official SimpleBaseline / HRNet code (reference-notes, "Heatmaps"), so that
mixing the teacher part with the ground-truth part by alpha weighs quantities of the same scale
(IKD says the L2 form was chosen "to make L_soft compatible with the original pose loss"; the FPD
reference code does the same).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "heatmap_mse", "LogitDistillLoss", "SimCCLogitDistillLoss", "PairwiseSimilarityLoss",
    "AlignedFeatureLoss", "MultiAngleLoss", "PoseDistillLoss", "simcc_argmax_pose", "simcc_soft_argmax",
    "linear_decay",
]


def heatmap_mse(pred: torch.Tensor, target: torch.Tensor, scale: float = 0.5) -> torch.Tensor:
    """scale * mean over (B, K, h, w) of (pred - target)^2; pred/target [B, K, h, w]."""
    if pred.shape != target.shape:
        raise ValueError(f"heatmap_mse: student {tuple(pred.shape)} and teacher {tuple(target.shape)} "
                         f"heatmaps differ in shape")
    return scale * (pred.float() - target.float()).pow(2).mean()


def _check_alpha(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


class LogitDistillLoss(nn.Module):
    """Logit distillation of heatmaps, IKD (seed 000) eq. 3-4.

    eq. 3: L_soft = 1/K sum_k ||h_k^s - h_k^t||^2  (here: 0.5 x mean over batch, joints and pixels,
           the normalisation of the supervised JointsMSELoss; see the module docstring)
    eq. 4: L_ld = alpha L_mse + (1 - alpha) L_soft, alpha = 0.5 (IKD, by cross-validation)

    forward(student [B,K,h,w], teacher [B,K,h,w], gt_loss scalar) -> L_ld;
    soft(student, teacher) -> L_soft; distill(student, teacher) -> (1 - alpha) L_soft. The teacher tensor is detached here: gradients never reach it.
    """

    def __init__(self, alpha: float = 0.5, scale: float = 0.5):
        super().__init__()
        self.alpha = _check_alpha("LogitDistillLoss alpha", alpha)
        self.scale = float(scale)

    def soft(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return heatmap_mse(student, teacher.detach(), self.scale)

    def distill(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """The teacher part of eq. 4: (1 - alpha) L_soft."""
        return (1.0 - self.alpha) * self.soft(student, teacher)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, gt_loss: torch.Tensor) -> torch.Tensor:
        return self.alpha * gt_loss + self.distill(student, teacher)


def _kl_rows(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t / T) || softmax(s / T)) along the last dim, one value per row: [..., N] -> [...]."""
    t = temperature
    log_p_t = F.log_softmax(teacher_logits.detach().float() / t, dim=-1)
    log_p_s = F.log_softmax(student_logits.float() / t, dim=-1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)


class SimCCLogitDistillLoss(nn.Module):
    """Logit distillation for SimCC outputs: IKD eq. 4's alpha mix with a KL teacher term.

    Choice (documented): the teacher part is the KL divergence between the teacher's and the
    student's 1-D bin distributions (softmax over bins, temperature T, times T^2 as in Hinton et al.),
    not an MSE on logits: SimCC is trained with a KL loss, so a KL teacher term keeps IKD's "same
    form as the original pose loss" rule; it is also what DWPose (reference-notes, "Distillation
    references") distils SimCC logits with. Reduction is that of the supervised `SimCCKLLoss` (the
    official SimCC `KLDiscretLoss`): KL per joint divided by the number of bins, x and y summed,
    averaged over the batch and the K joints, so both parts of the alpha mix scale alike:

        L_soft = T^2 / (B K) sum_{b,k} [ KL(p_t^x || p_s^x) / W_bins + KL(p_t^y || p_s^y) / H_bins ]
        L_ld   = alpha L_gt + (1 - alpha) L_soft

    forward(student (x [B,K,Wb], y [B,K,Hb]), teacher (same), gt_loss) -> L_ld; soft(...) -> L_soft;
    distill(...) -> (1 - alpha) L_soft.
    """

    def __init__(self, alpha: float = 0.5, temperature: float = 1.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"SimCCLogitDistillLoss temperature must be > 0, got {temperature}")
        self.alpha = _check_alpha("SimCCLogitDistillLoss alpha", alpha)
        self.temperature = float(temperature)

    def soft(self, student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> torch.Tensor:
        (sx, sy), (tx, ty) = student, teacher
        for name, s, t in (("x", sx, tx), ("y", sy, ty)):
            if s.shape != t.shape:
                raise ValueError(f"SimCCLogitDistillLoss: student {name} logits {tuple(s.shape)} and teacher "
                                 f"{tuple(t.shape)} differ (same input size and split ratio needed)")
        kx = _kl_rows(sx, tx, self.temperature) / sx.shape[-1]
        ky = _kl_rows(sy, ty, self.temperature) / sy.shape[-1]
        return (kx + ky).mean(dim=0).sum() / kx.shape[1] * self.temperature ** 2

    def distill(self, student, teacher) -> torch.Tensor:
        """The teacher part: (1 - alpha) L_soft."""
        return (1.0 - self.alpha) * self.soft(student, teacher)

    def forward(self, student, teacher, gt_loss: torch.Tensor) -> torch.Tensor:
        return self.alpha * gt_loss + self.distill(student, teacher)


class PairwiseSimilarityLoss(nn.Module):
    """Pairwise-similarity feature distillation, IKD (seed 000) eq. 1-2.

    eq. 2: f_ij = F_i . F_j / (||F_i||_2 ||F_j||_2) over all pixel pairs of the last-stage features;
    eq. 1: L_fd = 1 / (W' H')^2 sum_i sum_j (f_ij^s - f_ij^t)^2, averaged over the batch.

    The channel counts of the two maps may differ (the HW x HW maps do not depend on them). When the
    sizes differ, the larger map is max-pooled to the smaller one's size; then both are max-pooled
    (adaptive max pooling, one integer factor for both axes) until H x W <= `max_positions`, which
    bounds the HW x HW cost (reference-notes: structured KD pools its features the same way).

    forward(student_feat [B,Cs,Hs,Ws], teacher_feat [B,Ct,Ht,Wt]) -> scalar.
    """

    def __init__(self, max_positions: int = 1024, eps: float = 1e-8):
        super().__init__()
        if max_positions < 1:
            raise ValueError(f"PairwiseSimilarityLoss max_positions must be >= 1, got {max_positions}")
        self.max_positions = int(max_positions)
        self.eps = eps

    def pooled_size(self, hs: int, ws: int, ht: int, wt: int) -> tuple[int, int]:
        h, w = min(hs, ht), min(ws, wt)
        if h * w > self.max_positions:
            f = math.ceil(math.sqrt(h * w / self.max_positions))
            while math.ceil(h / f) * math.ceil(w / f) > self.max_positions:
                f += 1
            h, w = math.ceil(h / f), math.ceil(w / f)
        return h, w

    @staticmethod
    def similarity(feat: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
        """[B, C, H, W] -> cosine similarity of every pixel pair [B, HW, HW] (eq. 2)."""
        flat = feat.float().flatten(2)                                  # [B, C, HW]
        flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(eps)
        return flat.transpose(1, 2) @ flat

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        if student_feat.dim() != 4 or teacher_feat.dim() != 4 or student_feat.shape[0] != teacher_feat.shape[0]:
            raise ValueError(f"PairwiseSimilarityLoss: expected [B,C,H,W] maps with the same B, got "
                             f"{tuple(student_feat.shape)} and {tuple(teacher_feat.shape)}")
        size = self.pooled_size(*student_feat.shape[-2:], *teacher_feat.shape[-2:])
        s = student_feat if tuple(student_feat.shape[-2:]) == size else F.adaptive_max_pool2d(student_feat, size)
        t = teacher_feat if tuple(teacher_feat.shape[-2:]) == size else F.adaptive_max_pool2d(teacher_feat, size)
        sim_s = self.similarity(s, self.eps)
        sim_t = self.similarity(t.detach(), self.eps)
        hw = size[0] * size[1]
        return (sim_s - sim_t).pow(2).sum(dim=(1, 2)).mean() / (hw * hw)


class AlignedFeatureLoss(nn.Module):
    """Aligned feature distillation, seed 002 eq. 1.

    L_fea = 1 / (C H W) sum_{c,h,w} (F^tea_{c,h,w} - conv1x1(F^stu)_{c,h,w})^2, mean over the batch.

    The 1x1 convolution (with bias) maps the student's channels to the teacher's and is learnable:
    its parameters belong to the task's optimiser (never the teacher's). If the spatial sizes
    differ, the aligned student map is resized bilinearly to the teacher's size.

    reduction: "mean" (default) is eq. 1 as written, 1 / (C H W) and the batch mean; the seed-002
    recipe uses it. "sum" sums over C, H, W (mean over the batch), the DWPose scale (reference-notes:
    sum / N x 7e-5), kept as an option for other recipes; seed 002 does not use it.
    """

    def __init__(self, student_channels: int, teacher_channels: int, reduction: str = "mean"):
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError(f"AlignedFeatureLoss reduction: expected mean | sum, got {reduction!r}")
        self.reduction = reduction
        self.align = nn.Conv2d(student_channels, teacher_channels, kernel_size=1)

    def forward(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        if student_feat.shape[1] != self.align.in_channels or teacher_feat.shape[1] != self.align.out_channels:
            raise ValueError(f"AlignedFeatureLoss built for {self.align.in_channels} -> {self.align.out_channels} "
                             f"channels, got student {tuple(student_feat.shape)} teacher {tuple(teacher_feat.shape)}")
        aligned = self.align(student_feat.to(self.align.weight.dtype))
        if aligned.shape[-2:] != teacher_feat.shape[-2:]:
            aligned = F.interpolate(aligned, size=teacher_feat.shape[-2:], mode="bilinear", align_corners=False)
        sq = (aligned.float() - teacher_feat.detach().float()).pow(2)
        if self.reduction == "mean":
            return sq.mean()
        return sq.sum() / sq.shape[0]


class MultiAngleLoss(nn.Module):
    """Multi-angle pose distillation (MAPD), seed 001 eq. 1-3.

    eq. 1: L_mpd = 1/K sum_k ||o_k^s - o_k^t||^2      (0.5 x mean over pixels, as the supervised MSE)
    eq. 2: L_kpd = 1/K sum_k o_k^t (log o_k^t - log o_k^s), the KL(teacher || student) of per-joint
           distributions over the heatmap's pixels
    eq. 3: L_mapd = alpha L_mpd + beta L_kpd + (1 - alpha - beta) L_mse, alpha = 0.15, beta = 0.075
           (alpha multiplies the MSE to the teacher, beta the KL, the rest the ground-truth MSE).

    A heatmap is not a distribution and the paper does not say how it makes one. `kl_input`:
    * "normalized" (default): o_k = (max(h_k, 0) + eps) / sum(max(h_k, 0) + eps), the heatmap itself
      rescaled to sum 1, so a sigma-2 Gaussian target stays a sigma-2 Gaussian (teacher peak ~108x
      uniform at 64x48) and the KL of a peak shifted by 1 / 2 / 4 px is 0.12 / 0.45 / 1.8 nats, close
      to the d^2 / (2 sigma^2) = 0.125 / 0.5 / 2 of two Gaussians. The clamp keeps negative student
      outputs out of the log (they get no KL gradient; the two MSE parts still pull them up). eps
      keeps the log finite where the student is 0 and bounds the gradient there by p_t / eps; 1e-3
      (of a peak-1 map) because a smaller one lets the codec's 3-sigma truncation dominate a 4 px
      shift (eps 1e-6: 3.0 nats) and 1e-2 puts over half of the mass on the background.
    * "softmax": o_k = softmax(h_k / temperature) over the pixels (the previous behaviour). At
      temperature 1 a 0..1 heatmap gives a nearly flat distribution (teacher peak 2.6x uniform, KL of
      a 4 px shift 0.004 nats); small temperatures sharpen it, but to a width sigma sqrt(T) and with
      a KL that depends on the peak's height (0.5 x the target at T = 0.1: 1.4 nats, more than a
      1 px shift).
    `kl_reduction`: "pixel" (default) divides each joint's KL by the number of pixels before the mean
    over batch and joints, i.e. the mean over every element (the "mean" reduction of PyTorch's
    KLDivLoss, and the per-bin convention of the SimCC KL loss); "joint" keeps nats per joint (the
    previous behaviour). For 1-2 px errors at alpha 0.15 /
    beta 0.075, beta L_kpd per joint is ~250x alpha L_mpd (gradient ~2000-3600x); per pixel it is
    ~0.08x by value and 0.6-1.2x by gradient norm, so the weights of eq. 3 decide as the paper's
    alpha = 2 beta search assumes. Measured by benchmarks/mapd_kl.py.

    forward(student, teacher, gt_loss) -> L_mapd; distill(student, teacher) -> alpha L_mpd + beta L_kpd;
    mse(...) / kl(...) -> the two parts; log_probs(heatmaps) -> the per-joint log-distribution of eq. 2.
    """

    KL_INPUTS = ("normalized", "softmax")
    KL_REDUCTIONS = ("pixel", "joint")

    def __init__(self, alpha: float = 0.15, beta: float = 0.075, temperature: float = 1.0, scale: float = 0.5,
                 kl_input: str = "normalized", kl_reduction: str = "pixel", eps: float = 1e-3):
        super().__init__()
        if alpha < 0 or beta < 0 or alpha + beta > 1:
            raise ValueError(f"MultiAngleLoss needs alpha, beta >= 0 and alpha + beta <= 1, got {alpha}, {beta}")
        if temperature <= 0:
            raise ValueError(f"MultiAngleLoss temperature must be > 0, got {temperature}")
        if kl_input not in self.KL_INPUTS:
            raise ValueError(f"MultiAngleLoss kl_input: expected one of {list(self.KL_INPUTS)}, got {kl_input!r}")
        if kl_reduction not in self.KL_REDUCTIONS:
            raise ValueError(f"MultiAngleLoss kl_reduction: expected one of {list(self.KL_REDUCTIONS)}, "
                             f"got {kl_reduction!r}")
        if not eps > 0:
            raise ValueError(f"MultiAngleLoss eps must be > 0, got {eps}")
        self.alpha, self.beta = float(alpha), float(beta)
        self.temperature = float(temperature)
        self.scale = float(scale)
        self.kl_input, self.kl_reduction, self.eps = kl_input, kl_reduction, float(eps)

    def mse(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return heatmap_mse(student, teacher.detach(), self.scale)

    def log_probs(self, heatmaps: torch.Tensor) -> torch.Tensor:
        """[B, K, h, w] -> log-probabilities over each map's pixels [B, K, h*w] (see `kl_input`)."""
        flat = heatmaps.float().flatten(2)
        if self.kl_input == "softmax":
            return F.log_softmax(flat / self.temperature, dim=-1)
        mass = flat.clamp_min(0.0) + self.eps
        return mass.log() - mass.sum(-1, keepdim=True).log()

    def kl(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if student.shape != teacher.shape:
            raise ValueError(f"MultiAngleLoss: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} "
                             f"heatmaps differ in shape")
        log_t = self.log_probs(teacher.detach())
        log_s = self.log_probs(student)
        per_joint = (log_t.exp() * (log_t - log_s)).sum(-1)                 # [B, K], nats
        if self.kl_reduction == "pixel":
            per_joint = per_joint / log_t.shape[-1]
        return per_joint.mean()

    def distill(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return self.alpha * self.mse(student, teacher) + self.beta * self.kl(student, teacher)

    @property
    def gt_share(self) -> float:
        return 1.0 - self.alpha - self.beta

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, gt_loss: torch.Tensor) -> torch.Tensor:
        return self.distill(student, teacher) + self.gt_share * gt_loss


def simcc_argmax_pose(x_logits: torch.Tensor, y_logits: torch.Tensor, split_ratio: float) -> torch.Tensor:
    """The SimCC test-time decode as keypoints [B, K, 2] in input pixels: argmax bin / split_ratio
    (official SimCC and `SimCCCodec.decode`; softmax does not move the argmax). Not differentiable:
    seed 002 eq. 2-3 use it for the teacher's pose, which is a fixed target."""
    def hard(logits: torch.Tensor) -> torch.Tensor:
        return logits.detach().argmax(dim=-1).float() / split_ratio
    return torch.stack([hard(x_logits), hard(y_logits)], dim=-1)


def simcc_soft_argmax(x_logits: torch.Tensor, y_logits: torch.Tensor, split_ratio: float) -> torch.Tensor:
    """Differentiable keypoints [B, K, 2] in input pixels: expected bin under softmax / split_ratio."""
    def expect(logits: torch.Tensor) -> torch.Tensor:
        bins = torch.arange(logits.shape[-1], device=logits.device, dtype=torch.float32)
        return (F.softmax(logits.float(), dim=-1) * bins).sum(-1) / split_ratio
    return torch.stack([expect(x_logits), expect(y_logits)], dim=-1)


class PoseDistillLoss(nn.Module):
    """Pose distillation with the skeleton (bone-length) constraint, seed 002 eq. 2-3.

    eq. 2: L_pos = 1/N sum_n |P_n^tea - P_n^stu| + L_cst
    eq. 3: L_cst = sum_{(i,j) in E} w_ij | e_ij^tea - e_ij^stu |, e_ij = ||P_i - P_j||_2 (bone length)

    Keypoints are in input-crop pixels ([B, K, 2]). For SimCC the teacher's P^tea is its own
    test-time decode (`simcc_argmax_pose`: argmax bin / split ratio), the student's P^stu the
    soft-argmax (`simcc_soft_argmax`, differentiable) -- see `DistillationTask._inputs`. |.| of eq. 2 is read as the L1 norm over x, y averaged over the K
    joints (so the term does not grow with K); N is the batch. The per-edge weights w_ij come from
    the constraint model of Ji et al. 2022, whose code is not public (reference-notes); our choice:
    uniform w_ij = 1 / |E| (the mean bone-length error), or any weights passed in `edge_weights`.
    """

    def __init__(self, edges: Sequence[tuple[int, int]], edge_weights: Sequence[float] | None = None,
                 structure: bool = True):
        super().__init__()
        self.use_structure = bool(structure)     # False: eq. 2's L1 alone (Table IV scheme 3)
        edges = [(int(a), int(b)) for a, b in edges]
        if not edges:
            raise ValueError("PoseDistillLoss needs at least one skeleton edge")
        if edge_weights is None:
            edge_weights = [1.0 / len(edges)] * len(edges)
        if len(edge_weights) != len(edges):
            raise ValueError(f"PoseDistillLoss: {len(edge_weights)} edge weights for {len(edges)} edges")
        self.register_buffer("edges", torch.tensor(edges, dtype=torch.long), persistent=False)
        self.register_buffer("edge_weights", torch.tensor(list(edge_weights), dtype=torch.float32), persistent=False)

    def bone_lengths(self, points: torch.Tensor) -> torch.Tensor:
        """[B, K, 2] -> [B, E]"""
        return (points[:, self.edges[:, 0]] - points[:, self.edges[:, 1]]).norm(dim=-1)

    def position(self, student_xy: torch.Tensor, teacher_xy: torch.Tensor) -> torch.Tensor:
        return (teacher_xy.detach().float() - student_xy.float()).abs().sum(-1).mean()

    def structure(self, student_xy: torch.Tensor, teacher_xy: torch.Tensor) -> torch.Tensor:
        diff = (self.bone_lengths(teacher_xy.detach().float()) - self.bone_lengths(student_xy.float())).abs()
        return (diff * self.edge_weights).sum(-1).mean()

    def forward(self, student_xy: torch.Tensor, teacher_xy: torch.Tensor) -> torch.Tensor:
        if student_xy.shape != teacher_xy.shape or student_xy.shape[-1] != 2:
            raise ValueError(f"PoseDistillLoss: expected keypoints [B, K, 2] of equal shape, got "
                             f"{tuple(student_xy.shape)} and {tuple(teacher_xy.shape)}")
        value = self.position(student_xy, teacher_xy)
        return value + self.structure(student_xy, teacher_xy) if self.use_structure else value


def linear_decay(epoch: int, total_epochs: int) -> float:
    """Seed 002 eq. 4: gamma(t) = 1 - (t - 1) / T for the 1-based epoch t in 1..T (eq. 5 multiplies
    each distillation term by it). Here `epoch` is 0-based as in the training loop: 1 - epoch / T."""
    if total_epochs < 1:
        raise ValueError(f"linear_decay: total_epochs must be >= 1, got {total_epochs}")
    if not 0 <= epoch < total_epochs:
        raise ValueError(f"linear_decay: epoch {epoch} outside 0..{total_epochs - 1}")
    return 1.0 - epoch / total_epochs
