"""`posedistill profile MODEL ...`: parameters, GMACs and images/s of registered models as a table
(the library is `posedistill.tools.profile`)."""
from __future__ import annotations

import argparse

import torch

from posedistill.models import list_models
from posedistill.models import create_model_at
from posedistill.tools.profile import profile_model


def parse_hw(text: str) -> tuple[int, int]:
    """'256x192' (height x width, as papers write it) -> input_size (width, height) = (192, 256)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"input size must look like HEIGHTxWIDTH, e.g. 256x192; got {text!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"input size must be positive, got {text!r}")
    return w, h


def format_table(rows: list[dict], batches: tuple[int, ...]) -> str:
    head = ["model", "input", "params (M)", "GMACs"] + [f"img/s @b{b}" for b in batches]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], r["input"], f"{r['params'] / 1e6:.2f}", f"{r['gmacs']:.2f}"]
        cells += [f"{r['images_per_s'][b]:.1f}" for b in batches]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="posedistill profile",
                                     description="Parameters, GMACs (torch.utils.flop_counter, MACs = FLOPs/2) "
                                                 "and measured images/s of registered models.")
    parser.add_argument("models", nargs="+", metavar="MODEL", help=f"registered model(s): {', '.join(list_models())}")
    parser.add_argument("--input", default="256x192", help="HEIGHTxWIDTH (default 256x192)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes to time (default 1 8)")
    parser.add_argument("--iters", type=int, default=10, help="timed forward passes per batch size")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--num-joints", type=int, default=17)
    args = parser.parse_args(argv)
    try:
        input_size = parse_hw(args.input)
    except ValueError as err:
        parser.error(str(err))
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    rows = []
    for name in args.models:
        model = create_model_at(name, {"num_joints": args.num_joints}, input_size)
        r = profile_model(model, input_size, args.device, args.warmup, args.iters, tuple(args.batch))
        rows.append({"model": name, "input": args.input, **r})
    print(format_table(rows, tuple(args.batch)))
    print(f"\nGMACs at batch 1; images/s = median of {args.iters} eval forward passes on {args.device}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
