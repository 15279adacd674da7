"""`posedistill train CONFIG [key=value ...] [--resume CKPT] [--out DIR]`, and the command line it
shares with `posedistill distill`."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Callable

from posedistill.commands.common import load_recipe
from posedistill.engine import dist
from posedistill.errors import InputError
from posedistill.engine.config import Config
from posedistill.engine.loop import train


def next_round(cfg: Config, previous: dict, number: int, out_root: str) -> Config:
    """Iterative training (seed 004's "LC x 2"): the recipe again, with the previous round's student
    (its best checkpoint, else its last) as the frozen teacher, into OUT/round_<number>."""
    teacher = dataclasses.replace(cfg.distill.teacher, model=cfg.model.name, model_kwargs=dict(cfg.model.kwargs),
                                  checkpoint=previous["best_checkpoint"] or previous["last_checkpoint"])
    return dataclasses.replace(cfg, distill=dataclasses.replace(cfg.distill, teacher=teacher),
                               train=dataclasses.replace(cfg.train, out_dir=str(Path(out_root) / f"round_{number}")))


def training_main(argv: list[str] | None, prog: str, description: str,
                  check: Callable[[Config, str], None] | None = None, rounds: bool = False) -> int:
    """Parse CONFIG, overrides, --resume and --out (and --rounds when `rounds`), load the recipe
    (`check(cfg, config_path)` may raise ConfigError / ValueError) and train."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("config", help="recipe YAML (configs/*.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted.key=value overrides, e.g. optim.lr=5e-4 train.batch_size=16")
    p.add_argument("--resume", metavar="CKPT", help="continue from a last.pth exactly where it stopped")
    p.add_argument("--out", metavar="DIR", help="run directory (overrides train.out_dir)")
    if rounds:
        p.add_argument("--rounds", type=int, default=1, metavar="N",
                       help="train N times, each round's student the next round's teacher (seed 004's iterative "
                            "label correction); rounds go to OUT/round_1 .. OUT/round_N")
    args = p.parse_intermixed_args(argv)
    n = getattr(args, "rounds", 1)
    if n < 1:
        raise InputError(f"--rounds must be >= 1, got {n}")
    overrides = list(args.overrides) + ([f"train.out_dir={args.out}"] if args.out else [])
    cfg = load_recipe(args.config, overrides, check)
    out_root = cfg.train.out_dir
    if n > 1:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, out_dir=str(Path(out_root) / "round_1")))
    try:
        result = train(cfg, resume=args.resume)
        for number in range(2, n + 1):
            cfg = next_round(cfg, result, number, out_root)
            result = train(cfg)
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
