"""`posedistill cache CONFIG [key=value ...]`: build (or open) the teacher-output cache of a
distillation recipe and print its error against the teacher run online on augmented crops."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from posedistill.commands.common import load_recipe, require_teacher
from posedistill.distill.cache import measure_cache_error
from posedistill.engine import build
from posedistill.engine.dist import init_distributed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="posedistill cache",
                                description="Build the teacher-output cache of a recipe and measure cached-and-"
                                            "warped targets against the teacher run online on augmented crops.")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--samples", type=int, default=512, help="augmented training samples compared")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="FILE", help="also write the numbers as JSON")
    args = p.parse_intermixed_args(argv)
    cfg = load_recipe(args.config, args.overrides, require_teacher)
    device = init_distributed(cfg.train.device).device
    meta = build.keypoint_meta(cfg.data)
    input_size = tuple(cfg.data.input_size)
    teacher = build.load_teacher(cfg.distill.teacher, meta.num_joints, device, input_size=input_size,
                                 split_ratio=cfg.codec.simcc_split_ratio)
    codec = build.build_codec(cfg.codec, input_size, teacher.output_stride, teacher.head_type, meta)
    train_set = build.build_dataset(cfg.data, codec, meta, train=True)
    cache = build.open_teacher_cache(teacher, cfg.distill, train_set, device)
    res = measure_cache_error(teacher, cache, train_set, codec, samples=args.samples,
                              batch_size=cfg.distill.cache_batch_size, device=device, seed=args.seed)
    res["teacher"] = cfg.distill.teacher.model
    res["config"] = args.config
    for k, v in res.items():
        print(f"{k:<32} {v:.4f}" if isinstance(v, float) else f"{k:<32} {v}")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    return 0
