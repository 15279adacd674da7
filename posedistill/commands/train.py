"""`posedistill train CONFIG [key=value ...] [--resume CKPT] [--out DIR]`, and the command line it
shares with `posedistill distill`."""
from __future__ import annotations

import argparse
from typing import Callable

from posedistill.commands.common import load_recipe
from posedistill.engine import dist
from posedistill.engine.config import Config
from posedistill.engine.loop import train


def training_main(argv: list[str] | None, prog: str, description: str,
                  check: Callable[[Config, str], None] | None = None) -> int:
    """Parse CONFIG, overrides, --resume and --out, load the recipe (`check(cfg, config_path)` may
    raise ConfigError / ValueError) and train."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("config", help="recipe YAML (configs/*.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted.key=value overrides, e.g. optim.lr=5e-4 train.batch_size=16")
    p.add_argument("--resume", metavar="CKPT", help="continue from a last.pth exactly where it stopped")
    p.add_argument("--out", metavar="DIR", help="run directory (overrides train.out_dir)")
    args = p.parse_intermixed_args(argv)
    overrides = list(args.overrides) + ([f"train.out_dir={args.out}"] if args.out else [])
    cfg = load_recipe(args.config, overrides, check)
    try:
        result = train(cfg, resume=args.resume)
        main_process = dist.is_main_process()   # before cleanup, after which every process is "rank 0"
    finally:
        dist.cleanup()
    if main_process:
        best = result["best_metric"]
        print(f"[posedistill] done in {result['time_s']:.1f}s; best {best if best is None else round(best, 4)} "
              f"at epoch {result['best_epoch']}; checkpoints in {result['out_dir']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return training_main(argv, "posedistill train", "Train a model from a YAML recipe. Multi-GPU / "
                         "multi-process: torchrun --nproc_per_node N -m posedistill.cli train ...")
