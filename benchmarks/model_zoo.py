"""Model zoo table: every registered model at 256x192 with params, GMACs and measured CPU images/s,
next to the figures the papers print.

    .venv/bin/python benchmarks/model_zoo.py                 # all models, batch 1, 3 timed passes
    .venv/bin/python benchmarks/model_zoo.py --models simplebaseline_r50 hrnet_w32 --iters 5
    .venv/bin/python benchmarks/model_zoo.py --models cmu_pose small_paf_net --input 368x368

GMACs come from torch.utils.flop_counter (MACs = FLOPs / 2, 1e9); see posedistill/tools/profile.py.
The papers' "GFLOPs" for SimpleBaseline / HRNet come from the official code's summary tool
(`get_model_summary` in deep-high-resolution-net.pytorch `lib/utils/utils.py`), which counts a
ConvTranspose2d on its output size (about 4x too high for stride 2) and divides by 2^30, so they
are not directly comparable with the GMACs column (SimpleBaseline-R50: 8.9 printed vs 5.43 here).
The "official-tool GFLOPs" column recomputes that convention (profile.count_official_summary_gflops)
and reproduces the printed SimpleBaseline figures (8.99 / 12.38 / 15.76 for R50 / R101 / R152).
Images/s are measured on this machine, eval mode, batch 1; the papers' timings are on GPUs.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from posedistill.models import create_model_at, list_models  # noqa: E402
from posedistill.tools.profile import (  # noqa: E402
    count_gmacs, count_official_summary_gflops, count_params, measure_images_per_s)

# model -> (params in M, "GFLOPs" as printed, source). Only figures for the same model at 256x192.
PAPER_FIGURES: dict[str, tuple[float | None, float | None, str]] = {
    "simplebaseline_r50": (34.0, 8.9, "seed 003 Tab. 2, seed 000 Tab. II, seed 001 Tab. 1 (SimpleBaseline paper)"),
    "simplebaseline_r101": (53.0, 12.4, "seed 003 Tab. 2, seed 001 Tab. 1"),
    "simplebaseline_r152": (68.6, 15.7, "seed 003 Tab. 2, seed 001 Tab. 1"),
    "hrnet_w32": (28.5, 7.1, "seed 001 Tab. 1 (HRNet paper; seed 002 Tab. I prints 7.2)"),
    "hrnet_w48": (63.6, 14.6, "seed 001 Tab. 1 (HRNet paper)"),
    "elpn_v1": (1.1, 1.2, "seed 001 Tab. 1 (FLOPs, tool not named)"),
    "elpn_v2": (4.7, 2.0, "seed 001 Tab. 1 (FLOPs, tool not named)"),
    "fr_sbn_r34": (33.0, 21.3, "seed 003 Tab. 2"),
    "simcc_hrnet_w32": (31.0, 8.1, "seed 002 Tab. I 'Ours' (its SimCC row: 28.5M / 7.8, params copied from HRNet)"),
    "cmu_pose": (52.3, None, "seed 004 Sec. 4.3 (at 368x368)"),
    "small_paf_net": (5.2, None, "seed 004 Sec. 4.3 (at 368x368)"),
    "ikd_student18": (11.3, 2.8, "seed 000 Tab. II (head width guessed: models/pose_resnet.py)"),
}
# Students of seed 000 (IKD), whose decoder is not specified; listed for reference, not as the same model.
OTHER_FIGURES = [
    ("IKD Student-34 (seed 000 Tab. II)", 21.2, 5.3),
    ("IKD distilled student (seed 000 Tab. II)", 12.3, 3.2),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=None, help="subset of registered models (default: all)")
    parser.add_argument("--iters", type=int, default=3, help="timed forward passes per model (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-time", action="store_true", help="skip the images/s column")
    parser.add_argument("--input", default="192x256", metavar="WxH",
                        help="input width x height (default 192x256; the bottom-up models: 368x368)")
    args = parser.parse_args(argv)
    input_size = tuple(int(v) for v in args.input.lower().split("x"))  # (width, height)
    names = args.models or list_models()
    unknown = sorted(set(names) - set(list_models()))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; registered: {', '.join(list_models())}")
    print(f"Input {input_size[1]}x{input_size[0]} (HxW), CPU threads {torch.get_num_threads()}, images/s at batch 1 "
          f"(median of {args.iters}).\n")
    print("| model | params (M) | GMACs | official-tool GFLOPs | CPU img/s (b1) | paper params (M) "
          "| paper GFLOPs | paper source |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        try:
            model = create_model_at(name, {"num_joints": 17}, input_size)
        except ImportError as err:  # a family whose file is missing in this checkout
            print(f"| {name} | not built: {err} | | | | | | |")
            continue
        params = count_params(model) / 1e6
        gmacs = count_gmacs(model, input_size)
        official = count_official_summary_gflops(model, input_size)
        speed = "-" if args.no_time else f"{measure_images_per_s(model, input_size, 1, 'cpu', args.warmup, args.iters):.2f}"
        p_params, p_gflops, source = PAPER_FIGURES.get(name, (None, None, ""))
        fmt = lambda v: "-" if v is None else f"{v:g}"  # noqa: E731
        print(f"| {name} | {params:.2f} | {gmacs:.2f} | {official:.2f} | {speed} | {fmt(p_params)} | {fmt(p_gflops)} | {source} |")
        del model
    missing = [n for n in PAPER_FIGURES if n not in list_models()]
    if missing:
        print(f"\nPaper figures without a registered model here: {', '.join(missing)}")
    print("\nOther figures from the papers (no matching registered model):")
    for label, p, g in OTHER_FIGURES:
        print(f"- {label}: {p}M params, {g} GFLOPs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
