"""`posedistill ablate CONFIG`: the distillation ablation of IKD Tables IV-V / MAPD Table 6.

For every seed it trains the student alone (baseline), the student with each distillation term of
the recipe alone, and with all of them together (`engine.loop.train`, one run per variant and
seed), all against the same teacher checkpoint; then it evaluates the teacher once and writes

    OUT/ablation.csv   one row per run (variant, seed, AP, AP50, AR, best AP, time)
    OUT/ablation.md    mean +- sample std over seeds per variant, difference to the baseline, teacher AP

The reported AP is the *final* epoch's (choosing the best epoch on the validation set would bias
every variant upwards). Runs already finished (OUT/VARIANT/seed_S/result.json) are reused, so an
interrupted ablation continues where it stopped. The teacher checkpoint comes from the recipe's
`distill.teacher.checkpoint`, or `--teacher-config` trains it once into OUT/teacher.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from posedistill.errors import InputError
from posedistill.distill.config import DistillConfig
from posedistill.engine import dist
from posedistill.engine.config import ConfigError, load_config
from posedistill.engine.evaluate import evaluate_checkpoint
from posedistill.engine.loop import train


def variants_for(terms: dict[str, float], chosen: list[str]) -> list[tuple[str, dict[str, float]]]:
    """[(name, terms)]: baseline, each chosen term alone, all chosen terms (when more than one)."""
    missing = [t for t in chosen if t not in terms]
    if missing:
        raise InputError(f"--terms {missing} are not in the recipe's distill.terms {sorted(terms)} (their weights "
                         f"come from there)")
    out = [("student", {})]
    out += [(t, {t: terms[t]}) for t in chosen]
    if len(chosen) > 1:
        out.append(("+".join(chosen), {t: terms[t] for t in chosen}))
    return out


def variant_config(cfg, terms: dict[str, float], seed: int, out_dir: Path):
    """The recipe with only `terms` (none: plain supervised training, no teacher), one seed, one folder."""
    if terms:
        decay = [d for d in cfg.distill.decay if d in terms]
        distill = dataclasses.replace(cfg.distill, terms=dict(terms), decay=decay)
    else:
        distill = DistillConfig()
    train = dataclasses.replace(cfg.train, seed=seed, out_dir=str(out_dir))
    return dataclasses.replace(cfg, distill=distill, train=train)


def teacher_eval_config(cfg):
    """The recipe with the teacher as the model (same data, codec and evaluation)."""
    model = dataclasses.replace(cfg.model, name=cfg.distill.teacher.model, kwargs=dict(cfg.distill.teacher.model_kwargs),
                                checkpoint="")
    return dataclasses.replace(cfg, model=model, distill=DistillConfig())


def _stats(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def write_tables(rows: list[dict], teacher: dict | None, out: Path, command: str) -> str:
    """ablation.csv (all runs) and ablation.md (mean +- std per variant); returns the markdown."""
    cols = ["variant", "terms", "seed", "AP", "AP50", "AR", "best_AP", "time_s"]
    with open(out / "ablation.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    order: list[str] = []
    for r in rows:
        if r["variant"] not in order:
            order.append(r["variant"])
    base = [r["AP"] for r in rows if r["variant"] == "student"]
    base_mean = _stats(base)[0] if base else None
    lines = [f"Command: `{command}`", "",
             "Final-epoch validation AP (x100), mean +- sample std over seeds.", "",
             "| variant | terms (weights) | seeds | AP | AP50 | AR | AP - student |",
             "|---|---|---|---|---|---|---|"]
    def cell(values: list[float]) -> str:
        mean, sd = _stats(values)
        return f"{mean:.2f} +- {sd:.2f}" if len(values) > 1 else f"{mean:.2f} (1 seed)"

    for v in order:
        rs = [r for r in rows if r["variant"] == v]
        ap = _stats([100 * r["AP"] for r in rs])[0]
        delta = f"{ap - 100 * base_mean:+.2f}" if base_mean is not None and v != "student" else ""
        lines.append(f"| {v} | {rs[0]['terms'] or 'none'} | {','.join(str(r['seed']) for r in rs)} | "
                     f"{cell([100 * r['AP'] for r in rs])} | {cell([100 * r['AP50'] for r in rs])} | "
                     f"{cell([100 * r['AR'] for r in rs])} | {delta} |")
    if teacher:
        lines.append(f"| teacher ({teacher['model']}) | - | - | {100 * teacher['AP']:.2f} | {100 * teacher['AP50']:.2f} | "
                     f"{100 * teacher.get('AR', float('nan')):.2f} | |")
    md = "\n".join(lines) + "\n"
    (out / "ablation.md").write_text(md)
    return md


def _teacher_checkpoint(cfg, teacher_cfg, out: Path) -> str:
    """The recipe's distill.teacher.checkpoint, or the teacher trained once into OUT/teacher by
    --teacher-config (reused when already there). Raises ConfigError when neither is possible."""
    if cfg.distill.teacher.checkpoint:
        return cfg.distill.teacher.checkpoint
    if teacher_cfg is None:
        raise ConfigError("distill.teacher.checkpoint is empty; give it, or --teacher-config to train the teacher first")
    if teacher_cfg.model.name != cfg.distill.teacher.model:
        raise ConfigError(f"--teacher-config trains {teacher_cfg.model.name!r} but distill.teacher.model is "
                          f"{cfg.distill.teacher.model!r}")
    tdir = out / "teacher"
    if (tdir / "best.pth").is_file():
        return str(tdir / "best.pth")
    print(f"[ablate] training the teacher ({teacher_cfg.model.name}) once into {tdir}", flush=True)
    res = train(dataclasses.replace(teacher_cfg, train=dataclasses.replace(teacher_cfg.train, out_dir=str(tdir))))
    return res["best_checkpoint"] or res["last_checkpoint"]


def _run_variant(cfg, name: str, terms: dict[str, float], seed: int, out: Path) -> dict:
    """One (variant, seed) run, or its result.json when an earlier ablation finished it."""
    run_dir = out / name / f"seed_{seed}"
    done = run_dir / "result.json"
    if done.is_file():
        row = json.loads(done.read_text())
        print(f"[ablate] {name} seed {seed}: reusing {done} (AP {row['AP']:.4f})", flush=True)
        return row
    print(f"[ablate] {name} seed {seed} -> {run_dir}", flush=True)
    t0 = time.perf_counter()
    res = train(variant_config(cfg, terms, seed, run_dir))
    m = res["last_metrics"]
    row = {"variant": name, "terms": " ".join(f"{k}={v:g}" for k, v in terms.items()), "seed": seed,
           "AP": float(m.get("AP", float("nan"))), "AP50": float(m.get("AP50", float("nan"))),
           "AR": float(m.get("AR", float("nan"))),
           "best_AP": float(res["best_metric"]) if res["best_metric"] is not None else float("nan"),
           "time_s": time.perf_counter() - t0}
    if dist.is_main_process():
        done.write_text(json.dumps(row, indent=1))
    return row


def _teacher_row(cfg, ckpt: str, out: Path) -> dict:
    """The teacher's metrics on the same validation split (OUT/teacher_eval.json, reused per checkpoint)."""
    teacher_file = out / "teacher_eval.json"
    if teacher_file.is_file() and json.loads(teacher_file.read_text()).get("checkpoint") == str(ckpt):
        return json.loads(teacher_file.read_text())
    metrics = evaluate_checkpoint(teacher_eval_config(cfg), str(ckpt), out_dir=str(out / "teacher_eval"))
    teacher = {"model": cfg.distill.teacher.model, "checkpoint": str(ckpt), **{k: float(v) for k, v in metrics.items()}}
    if dist.is_main_process():
        teacher_file.write_text(json.dumps(teacher, indent=1))
    return teacher


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="posedistill ablate",
                                description="Baseline, each distillation term alone and all together, over seeds; "
                                            "writes OUT/ablation.md and OUT/ablation.csv (mean +- std of AP).")
    p.add_argument("config", help="distillation recipe (its distill.terms give the terms and weights)")
    p.add_argument("overrides", nargs="*", help="dotted.key=value overrides applied to every run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    p.add_argument("--terms", nargs="+", help="terms to ablate (default: all of distill.terms)")
    p.add_argument("--out", default="runs/ablation", metavar="DIR", help="output folder (default runs/ablation)")
    p.add_argument("--teacher-config", metavar="CONFIG",
                   help="train the teacher with this recipe once (into OUT/teacher) when distill.teacher.checkpoint "
                        "is empty; the same overrides are applied")
    args = p.parse_intermixed_args(argv)
    out = Path(args.out)
    command = "posedistill ablate " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    cfg = load_config(args.config, args.overrides)
    if not cfg.distill.teacher.model or not cfg.distill.terms:
        raise ConfigError(f"{args.config}: distill.teacher.model and distill.terms must be set for an ablation")
    variants = variants_for(cfg.distill.terms, args.terms or list(cfg.distill.terms))
    teacher_cfg = load_config(args.teacher_config, args.overrides) if args.teacher_config else None
    out.mkdir(parents=True, exist_ok=True)
    ckpt = _teacher_checkpoint(cfg, teacher_cfg, out)
    cfg = dataclasses.replace(cfg, distill=dataclasses.replace(
        cfg.distill, teacher=dataclasses.replace(cfg.distill.teacher, checkpoint=str(ckpt))))
    rows: list[dict] = []
    for seed in args.seeds:
        for name, terms in variants:
            rows.append(_run_variant(cfg, name, terms, seed, out))
            write_tables(rows, None, out, command)
    md = write_tables(rows, _teacher_row(cfg, ckpt, out), out, command)
    dist.cleanup()
    if dist.is_main_process():
        print(md)
    return 0
