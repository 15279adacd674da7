"""Which distribution MAPD's KL term (seed 001 eq. 2) should take over a heatmap, and at what scale.

    .venv/bin/python benchmarks/mapd_kl.py [--joints 17] [--sigma 2] [--heatmap 48x64] [--shifts 1 2 4]

Teacher: `--joints` Gaussian targets (sigma in heatmap pixels, peak 1) rendered by `HeatmapCodec`
at random sub-pixel positions at least 10 px inside the map. Students, each the same joints:
"shift d" the targets with every peak moved d px along x (a localisation error), "wide" rendered
with 1.5 sigma, "half" 0.5 x the targets (right place, low confidence), "zero" an all-zero map (what
a freshly initialised head outputs), "shift 1 + noise" shift 1 plus N(0, 0.02) noise (negative
values, as a real student has). Each candidate distribution is the `MultiAngleLoss.log_probs` of the
loss module itself, and the KL its `kl` (nats per joint); 0.5 x MSE is its `mse`, the per-pixel mean
of eq. 1. The analytic KL between two Gaussians of equal sigma shifted by d is d^2 / (2 sigma^2).

Table 3 puts the chosen candidate at the paper's weights (alpha 0.15, beta 0.075) under both
reductions: beta KL / (alpha MSE) by value and by the norm of the gradient each part sends to the
student's map. Runs in a few seconds on one CPU core.

Measured (defaults; full tables in the run's output), KL in nats per joint for shifts of 1 / 2 / 4 px:

    softmax T=1          teacher peak 2.6x uniform   0.0004 / 0.0014 / 0.0039   (the old term: flat)
    softmax T=0.1        865x                        0.88 / 3.0 / 7.0           (0.5 x target: 1.4)
    normalized eps=1e-3  108x                        0.115 / 0.45 / 1.77        (d^2 / 8 = 0.125 / 0.5 / 2)
    0.5 x MSE                                        2.5e-4 / 9.1e-4 / 2.6e-3

    normalized, alpha 0.15, beta 0.075     beta KL / (alpha MSE)     gradient-norm ratio
      KL per joint                         232 / 250 / 340           2.0e3 / 3.6e3 / 1.3e4
      KL per pixel (the loss's default)    0.075 / 0.081 / 0.11      0.64 / 1.2 / 4.1
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

from posedistill.codecs.heatmap import HeatmapCodec  # noqa: E402
from posedistill.losses.distill import MultiAngleLoss  # noqa: E402

MARGIN = 10.0       # heatmap px kept between a peak and the border, so a 4 px shift stays inside the 3-sigma window


def render(centres: np.ndarray, size: tuple[int, int], sigma: float) -> torch.Tensor:
    """Peaks at `centres` [K, 2] (heatmap px) -> [1, K, h, w] through the codec at stride 1."""
    codec = HeatmapCodec(input_size=size, heatmap_size=size, sigma=sigma)
    maps = codec.encode(centres, np.ones(len(centres)))["heatmaps"]
    return torch.from_numpy(maps)[None]


def students(centres: np.ndarray, size: tuple[int, int], sigma: float, shifts: list[float],
             rng: np.random.Generator) -> dict[str, torch.Tensor]:
    teacher = render(centres, size, sigma)
    out = {f"shift {d:g}": render(centres + [d, 0.0], size, sigma) for d in shifts}
    out["wide"] = render(centres, size, 1.5 * sigma)
    out["half"] = 0.5 * teacher
    out["zero"] = torch.zeros_like(teacher)
    noise = torch.from_numpy(rng.normal(0.0, 0.02, teacher.shape).astype(np.float32))
    out["shift 1 + noise"] = render(centres + [1.0, 0.0], size, sigma) + noise
    return out


def candidates(eps: float, eps_sweep: list[float]) -> dict[str, MultiAngleLoss]:
    out = {f"softmax T={t:g}": MultiAngleLoss(temperature=t, kl_input="softmax", kl_reduction="joint")
           for t in (1.0, 0.1, 0.05, 0.02)}
    for e in sorted(set(eps_sweep) | {eps}):
        out[f"normalized eps={e:g}"] = MultiAngleLoss(kl_input="normalized", kl_reduction="joint", eps=e)
    return out


def shape_table(cands: dict[str, MultiAngleLoss], teacher: torch.Tensor) -> list[str]:
    pixels = teacher.shape[-1] * teacher.shape[-2]
    rows = ["| candidate | teacher peak p | peak / uniform | entropy (nats) |", "|---|---|---|---|"]
    for name, loss in cands.items():
        logp = loss.log_probs(teacher)
        p = logp.exp()
        peak = float(p.max(-1).values.mean())
        entropy = float(-(p * logp).sum(-1).mean())
        rows.append(f"| {name} | {peak:.3g} | {peak * pixels:.1f} | {entropy:.2f} |")
    rows.append(f"| uniform | {1 / pixels:.3g} | 1.0 | {math.log(pixels):.2f} |")
    return rows


def kl_table(cands: dict[str, MultiAngleLoss], teacher: torch.Tensor, studs: dict[str, torch.Tensor],
             sigma: float, shifts: list[float]) -> list[str]:
    rows = ["| candidate | " + " | ".join(studs) + " |", "|---" * (len(studs) + 1) + "|"]
    for name, loss in cands.items():
        rows.append(f"| {name} | " + " | ".join(f"{float(loss.kl(s, teacher)):.3g}" for s in studs.values()) + " |")
    mse = cands[next(iter(cands))]
    rows.append("| 0.5 x MSE (eq. 1) | "
                + " | ".join(f"{float(mse.mse(s, teacher)):.3g}" for s in studs.values()) + " |")
    analytic = {f"shift {d:g}": d * d / (2 * sigma * sigma) for d in shifts}
    rows.append("| analytic Gaussian d^2/(2 sigma^2) | "
                + " | ".join(f"{analytic[k]:.3g}" if k in analytic else "" for k in studs) + " |")
    return rows


def part_gradients(loss: MultiAngleLoss, student: torch.Tensor, teacher: torch.Tensor) -> tuple[float, float]:
    """(||d(alpha L_mpd)/ds||, ||d(beta L_kpd)/ds||) at the student's map."""
    s = student.clone().requires_grad_(True)
    g_mse, = torch.autograd.grad(loss.alpha * loss.mse(s, teacher), s)
    g_kl, = torch.autograd.grad(loss.beta * loss.kl(s, teacher), s)
    return float(g_mse.norm()), float(g_kl.norm())


def scale_table(eps: float, alpha: float, beta: float, teacher: torch.Tensor,
                studs: dict[str, torch.Tensor]) -> list[str]:
    rows = ["| student | alpha x 0.5 MSE | beta x KL per joint | ratio | beta x KL per pixel | ratio | "
            "grad ratio per joint | grad ratio per pixel |", "|---" * 8 + "|"]
    per = {r: MultiAngleLoss(alpha, beta, kl_input="normalized", kl_reduction=r, eps=eps) for r in ("joint", "pixel")}
    for name, s in studs.items():
        a_mse = alpha * float(per["pixel"].mse(s, teacher))
        b_kl = {r: beta * float(m.kl(s, teacher)) for r, m in per.items()}
        grads = {r: part_gradients(m, s, teacher) for r, m in per.items()}
        ratio = {r: (b_kl[r] / a_mse if a_mse > 0 else float("nan")) for r in per}
        gratio = {r: (g[1] / g[0] if g[0] > 0 else float("nan")) for r, g in grads.items()}
        rows.append(f"| {name} | {a_mse:.3g} | {b_kl['joint']:.3g} | {ratio['joint']:.3g} | {b_kl['pixel']:.3g} | "
                    f"{ratio['pixel']:.3g} | {gratio['joint']:.3g} | {gratio['pixel']:.3g} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--joints", type=int, default=17)
    p.add_argument("--sigma", type=float, default=2.0, help="target sigma in heatmap px (default 2)")
    p.add_argument("--heatmap", default="48x64", help="heatmap WIDTHxHEIGHT (default 48x64)")
    p.add_argument("--shifts", type=float, nargs="+", default=[1.0, 2.0, 4.0], help="student peak shifts, px")
    p.add_argument("--eps", type=float, default=1e-3, help="eps of the normalized candidate in table 3")
    p.add_argument("--eps-sweep", type=float, nargs="*", default=[1e-6, 1e-4, 1e-2])
    p.add_argument("--alpha", type=float, default=0.15)
    p.add_argument("--beta", type=float, default=0.075)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.heatmap.lower().split("x"))
    if min(w, h) <= 2 * MARGIN + max(args.shifts):
        p.error(f"--heatmap {args.heatmap} is too small for peaks {MARGIN:g} px inside the border")
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    centres = np.stack([rng.uniform(MARGIN, w - 1 - MARGIN - max(args.shifts), args.joints),
                        rng.uniform(MARGIN, h - 1 - MARGIN, args.joints)], axis=1)
    teacher = render(centres, (w, h), args.sigma)
    studs = students(centres, (w, h), args.sigma, args.shifts, rng)
    cands = candidates(args.eps, args.eps_sweep)
    print(f"{args.joints} joints, {w}x{h} heatmaps, sigma {args.sigma:g} px, seed {args.seed}\n")
    print("Table 1: the teacher's distribution (mean over joints)\n")
    print("\n".join(shape_table(cands, teacher)))
    print("\nTable 2: KL(teacher || student), nats per joint (mean over joints); last rows: 0.5 x MSE, analytic\n")
    print("\n".join(kl_table(cands, teacher, studs, args.sigma, args.shifts)))
    print(f"\nTable 3: normalized eps={args.eps:g} at alpha {args.alpha:g}, beta {args.beta:g}; ratio = beta KL / "
          f"(alpha MSE); grad ratio = ||grad of beta KL|| / ||grad of alpha MSE|| on the student map\n")
    print("\n".join(scale_table(args.eps, args.alpha, args.beta, teacher, studs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
