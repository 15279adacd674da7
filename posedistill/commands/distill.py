"""`posedistill distill CONFIG [key=value ...] [--resume F] [--out DIR]`: `posedistill train` for a
recipe that must name a teacher and its weights."""
from __future__ import annotations

from posedistill.commands.train import training_main
from posedistill.engine.config import Config, ConfigError


def _require_teacher(cfg: Config, config_path: str) -> None:
    if not cfg.distill.teacher.model:
        raise ConfigError(f"{config_path}: distill.teacher.model is empty; `posedistill distill` needs a teacher "
                          f"(use `posedistill train` for plain training)")
    if not cfg.distill.teacher.checkpoint:
        raise ConfigError(f"{config_path}: distill.teacher.checkpoint is empty; give the teacher's weights file")


def main(argv: list[str] | None = None) -> int:
    return training_main(argv, "posedistill distill",
                         "Train a student distilled from a frozen teacher (distill: section of the recipe; "
                         "see posedistill/distill/terms.py for the terms).", check=_require_teacher)
