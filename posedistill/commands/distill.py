"""`posedistill distill CONFIG [key=value ...] [--resume F] [--out DIR] [--rounds N]`: `posedistill train`
for a recipe that must name a teacher and its weights; `--rounds N` trains N times, each round's student
the next round's teacher (seed 004's iterative label correction)."""
from __future__ import annotations

from posedistill.commands.common import require_teacher
from posedistill.commands.train import training_main


def main(argv: list[str] | None = None) -> int:
    return training_main(argv, "posedistill distill",
                         "Train a student distilled from a frozen teacher (distill: section of the recipe; "
                         "see posedistill/distill/terms.py for the terms).", check=require_teacher,
                         rounds=True)
