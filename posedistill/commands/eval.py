"""`posedistill eval CONFIG --checkpoint F [--flip] [--boxes gt|FILE] [--out DIR]`."""
from __future__ import annotations

import argparse

from posedistill.commands.common import load_recipe
from posedistill.engine import dist
from posedistill.engine.evaluate import evaluate_checkpoint


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="posedistill eval", description="Evaluate a checkpoint: COCO-style AP "
                                "(COCO, CrowdPose, synthetic) or PCKh (MPII) on the recipe's validation split.")
    p.add_argument("config", help="recipe YAML the checkpoint was trained with")
    p.add_argument("overrides", nargs="*", help="dotted.key=value overrides")
    p.add_argument("--checkpoint", required=True, metavar="F", help="best.pth / last.pth or released weights")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="flip test (default: eval.flip_test of the recipe)")
    p.add_argument("--boxes", metavar="gt|FILE", help="person boxes: ground truth or a detection results JSON")
    p.add_argument("--out", metavar="DIR", help="where results JSON goes (default: CHECKPOINT_DIR/eval)")
    args = p.parse_intermixed_args(argv)
    cfg = load_recipe(args.config, args.overrides)
    try:
        metrics = evaluate_checkpoint(cfg, args.checkpoint, flip=args.flip, boxes=args.boxes, out_dir=args.out)
    finally:
        dist.cleanup()
    if dist.is_main_process():
        width = max(map(len, metrics)) if metrics else 0
        for k, v in metrics.items():
            print(f"{k:<{width}}  {v:.4f}")
    return 0
