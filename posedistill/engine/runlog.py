"""The run log: one row per epoch in log.csv, log.json and learning_curve.png (rank 0 only), and the
console line of each epoch."""
from __future__ import annotations

import csv
import json
from pathlib import Path


def fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class RunLog:
    """Per-epoch rows written to log.csv, log.json and learning_curve.png."""

    def __init__(self, out_dir: Path, rows: list[dict] | None = None):
        self.out_dir = out_dir
        self.rows: list[dict] = list(rows or [])

    def write(self) -> None:
        cols: list[str] = []
        for r in self.rows:
            cols += [k for k in r if k not in cols]
        with open(self.out_dir / "log.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(self.rows)
        (self.out_dir / "log.json").write_text(json.dumps(self.rows, indent=1))
        plot_learning_curve(self.rows, self.out_dir / "learning_curve.png")


def plot_learning_curve(rows: list[dict], path: Path, title: str = "") -> None:
    """Training loss per epoch (left axis) and validation AP / PCKh (right axis)."""
    if not rows:
        return
    import matplotlib  # imported here so that importing the engine does not load matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ep = [r["epoch"] for r in rows]
    ax.plot(ep, [r["train_loss"] for r in rows], "o-", color="tab:blue", ms=3, label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss", color="tab:blue")
    ax.set_yscale("log")
    evals = [r for r in rows if "val_AP" in r or "val_PCKh" in r]
    if evals:
        key = "val_AP" if "val_AP" in evals[0] else "val_PCKh"
        ax2 = ax.twinx()
        ax2.plot([r["epoch"] for r in evals], [r[key] for r in evals], "s-", color="tab:red", ms=4, label=key)
        ax2.set_ylabel(key.replace("val_", "val "), color="tab:red")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def scale_report_lines(rows: list, factor: float = 10.0) -> list[str]:
    """The start-of-run scale report (`Task.scale_report` rows): one line per weighted distillation term,
    then one warning per term that exceeds the supervised loss `factor`-fold in value or gradient norm."""
    if not rows:
        return []
    lines = ["[posedistill] distillation terms on the first batch, relative to the supervised loss "
             "(weighted value / gradient norm on the student):"]
    lines += [f"  {r.name} (weight {r.weight:g}): value x{r.value_ratio:.3g}, gradient x{r.grad_ratio:.3g}" for r in rows]
    lines += [f"[posedistill] warning: distillation term {r.name!r} at weight {r.weight:g} is "
              f"{max(r.value_ratio, r.grad_ratio):.3g}x the supervised loss (value x{r.value_ratio:.3g}, gradient "
              f"x{r.grad_ratio:.3g}); it may swamp the pose loss: see docs/loss_scales.md"
              for r in rows if r.dominates(factor)]
    return lines


def epoch_message(row: dict, epochs: int, metrics: dict[str, float]) -> str:
    """The console line of an epoch: loss, lr, speed, time, ETA, and the metrics when it evaluated."""
    msg = (f"[posedistill] epoch {row['epoch']}/{epochs} loss {row['train_loss']:.6f} lr {row['lr']:.2e} "
           f"{row['train_it_per_s']:.2f} it/s {row['epoch_time_s']:.1f}s "
           f"eta {fmt_time(row['epoch_time_s'] * (epochs - row['epoch']))}")
    if any(k.startswith("val_") for k in row):
        msg += "  " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k in ("AP", "AP50", "AR", "PCKh", "Mean"))
    return msg
