"""The `distill:` section of a recipe. Owned by the distillation package; the engine's Config embeds it
and checks it once on load (`distill/terms.py`, `resolve_distill_config`).

An empty `teacher.model` means plain supervised training. Bottom-up (PAF) students learn from a teacher
through `kd_lambda` (seed 004 eq. 5-6) and `label_correction` (eq. 2-4) instead of terms.

Terms (`terms: {name: weight}`), each one entry of `distill/terms.py` (TERMS) and a loss module:

| name | paper | weight is |
|---|---|---|
| `logit` | IKD (seed 000) eq. 3-4 (SimCC: KL variant) | lambda of eq. 6-7 (IKD: 0.5); `logit_alpha` mixes GT and teacher |
| `pairwise` | IKD eq. 1-2 | beta of eq. 6-7 (IKD: 0.2) |
| `adversarial` | IKD eq. 5, 7-8 | gamma of eq. 7 (IKD: 0.3), a share of L_gt's size (`adversarial_scale`) |
| `mapd` | MAPD (seed 001) eq. 1-3 | a multiplier of L_mapd (1.0); `mapd_alpha`, `mapd_beta` inside |
| `aligned` | seed 002 eq. 1 | alpha of seed 002 eq. 5 (5e-5; eq. 1's mean over C, H, W) |
| `pose` | seed 002 eq. 2-3 (SimCC students) | beta of seed 002 eq. 5 (0.1) |
| `pose_l1` | seed 002 eq. 2 without the skeleton term (Table IV scheme 3) | beta of eq. 5 (0.1) |
| `fitnets` | FitNets (Romero et al. 2015) eq. 3, IKD Table V baseline | multiplier of the hint loss: 1 = eq. 3 (0.5 x mean over C, H, W); next to a heatmap loss expect ~1e-4 (as `aligned`) |
| `attention` | attention transfer (Zagoruyko & Komodakis 2017) eq. 2, p = 2, IKD Table V baseline | beta of eq. 2 (paper: 1e3 against a cross-entropy of order 1; next to a heatmap loss ~1e-3 the same balance is ~1) |

The ground-truth loss: `gt_weight` < 0 (default) picks it from the terms: logit_weight x logit_alpha
when `logit` is on (IKD eq. 4 inside eq. 6), plus mapd_weight x (1 - mapd_alpha - mapd_beta) when
`mapd` is on (MAPD eq. 3), otherwise 1 (the other terms add to the plain supervised loss).
"""
from __future__ import annotations

from dataclasses import dataclass, field



@dataclass
class TeacherConfig:
    model: str = ""                                     # registered model name of the teacher; "" = no teacher
    model_kwargs: dict = field(default_factory=dict)    # extra keyword arguments for the teacher's factory
    checkpoint: str = ""                                # local weights file of the teacher (official formats accepted)
    amp: str = "bf16"                                   # teacher precision on CUDA: bf16 | fp16 | none (CPU: float32)


@dataclass
class DistillConfig:
    teacher: TeacherConfig = field(default_factory=TeacherConfig)   # the frozen teacher
    terms: dict = field(default_factory=dict)           # distillation term name -> weight, e.g. {"logit": 0.5}
    decay: list[str] = field(default_factory=list)      # terms whose weight x gamma(t) = 1 - (t-1)/T (seed 002 eq. 4); [all] = every term (expanded on load)
    gt_weight: float = -1.0                             # weight of the supervised ground-truth loss; < 0 = automatic (see module doc)
    logit_alpha: float = 0.5                            # IKD eq. 4 alpha: share of the GT loss in L_ld (1 - alpha: teacher)
    logit_temperature: float = 1.0                      # SimCC logit term: softmax temperature of the KL
    mapd_alpha: float = 0.15                            # MAPD eq. 3 alpha: weight of the MSE to the teacher
    mapd_beta: float = 0.075                            # MAPD eq. 3 beta: weight of the KL to the teacher (eq. 2)
    mapd_temperature: float = 1.0                       # MAPD spatial-softmax temperature, mapd_kl_input=softmax only (the paper has none: 1)
    mapd_kl_input: str = "normalized"                   # MAPD eq. 2 distribution: normalized (heatmap clamped >= 0, sum 1) | softmax (spatial softmax / T)
    mapd_kl_reduction: str = "pixel"                    # MAPD KL: pixel (nats / (h w), the MSE parts' scale) | joint (nats per joint)
    feature: str = "backbone"                           # feature map compared by pairwise / aligned / fitnets / attention: backbone | head_in
    pairwise_max_positions: int = 1024                  # pairwise term: max-pool features until H x W <= this
    aligned_reduction: str = "mean"                     # aligned term: mean (seed 002 eq. 1) | sum (over C,H,W; DWPose scale)
    fitnets_kernel: int = 3                             # fitnets term: odd kernel size of the conv regressor r (padding k // 2)
    skeleton_weights: list[float] = field(default_factory=list)  # pose term: weight per skeleton edge; [] = 1/|E| each
    disc_channels: int = 64                             # adversarial discriminator width
    disc_lr: float = 1e-4                               # discriminator Adam learning rate (betas 0.5, 0.999)
    adversarial_scale: str = "relative"                 # adversarial term: relative (L_s rescaled to L_gt's size; gamma = share of L_gt) | raw (eq. 8 as written)
    cache: bool = False                                 # offline distillation: precompute teacher outputs once, warp per sample
    cache_dir: str = "runs/teacher_cache"               # where cached teacher outputs live (one subfolder per fingerprint)
    cache_batch_size: int = 64                          # batch size of the one teacher pass that fills the cache
    cache_workers: int = 2                              # DataLoader workers of that pass
    kd_lambda: float = 0.0                              # bottom-up (PAF) students: seed 004 eq. 5-6 lambda, share of the teacher's maps in the loss
    label_correction: str = "none"                      # bottom-up: seed 004 eq. 2-4 on none | both | confidence_maps | pafs


def auto_gt_weight(cfg: DistillConfig) -> float:
    """gt_weight < 0 -> logit weight x alpha (IKD eq. 4) + mapd weight x (1 - alpha - beta) (MAPD eq. 3),
    or 1 when neither term is on."""
    if cfg.gt_weight >= 0:
        return float(cfg.gt_weight)
    if "logit" not in cfg.terms and "mapd" not in cfg.terms:
        return 1.0
    w = 0.0
    if "logit" in cfg.terms:
        w += float(cfg.terms["logit"]) * cfg.logit_alpha
    if "mapd" in cfg.terms:
        w += float(cfg.terms["mapd"]) * (1.0 - cfg.mapd_alpha - cfg.mapd_beta)
    return w
