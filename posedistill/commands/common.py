"""What several commands share: loading a recipe at the command edge."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import torch

from posedistill.engine.config import Config, ConfigError, load_config


def load_recipe(prog: str, path: str, overrides: list[str],
                check: Callable[[Config, str], None] | None = None) -> Config | None:
    """The recipe at `path` with `overrides`, checked by `check(cfg, path)` when given, with torch's CPU
    threads set from `train.threads`; or None after printing `prog: <error>` (the command exits 2)."""
    try:
        cfg = load_config(path, overrides)
        if check is not None:
            check(cfg, path)
    except (ConfigError, ValueError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return None
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    return cfg


def require_teacher(cfg: Config, config_path: str) -> None:
    """`load_recipe` check of the commands that need a trained teacher (distill, cache)."""
    if not cfg.distill.teacher.model:
        raise ConfigError(f"{config_path}: distill.teacher.model is empty; this command needs a teacher "
                          f"(use `posedistill train` for plain training)")
    if not cfg.distill.teacher.checkpoint:
        raise ConfigError(f"{config_path}: distill.teacher.checkpoint is empty; give the teacher's weights file")
    if not Path(cfg.distill.teacher.checkpoint).is_file():
        raise ConfigError(f"{config_path}: distill.teacher.checkpoint {cfg.distill.teacher.checkpoint}: no such file")
