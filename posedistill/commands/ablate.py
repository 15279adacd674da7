"""`posedistill ablate CONFIG`: a distillation ablation, every variant over seeds, in one command.

The variants are either
* by default, IKD Tables IV-V / MAPD Table 6: the student alone (`student`), each term of `--terms`
  alone and all of them together, every term at its recipe weight; or
* `--plan FILE`: named variants, each a set of stage-1 terms and optionally a seed 002 stage 2 (the
  IGP-GCN refiner on the frozen stage-1 student, supervised by the teacher or the ground truth), e.g.
  `configs/plans/seed002_table4.yaml` for seed 002's Table IV. Variants with the same terms share one
  stage-1 run; a stage 2 starts from its final `last.pth`. A plan variant may also name its own recipe
  (`config`), overrides (`set`), an earlier variant as its teacher (`teacher`: that variant's final
  checkpoint of the same seed, e.g. seed 004's label correction and its iterated rounds) and the
  variant it is compared with (`reference`): `configs/plans/seed004_tables.yaml`.

All against the same teacher checkpoint; then it evaluates the teacher once and writes

    OUT/ablation.csv   one row per run (variant, seed, every metric, best AP, time)
    OUT/ablation.md    mean +- sample std over seeds per variant, the teacher's row, and the *paired*
                       difference to the reference variant (same seed: same initialisation and data
                       order) with its 95% t interval; `*` marks an interval that excludes zero; and
                       a power line: the pooled std of the paired differences, the interval it gives at
                       the seeds run and the seeds 80% power at one point would need

The reported AP is the *final* epoch's (choosing the best epoch on the validation set would bias
every variant upwards). Runs already finished (OUT/RUN/seed_S/result.json) are reused and a run
that was cut short resumes from its last.pth, so an interrupted ablation continues where it stopped.
The teacher checkpoint comes from the recipe's `distill.teacher.checkpoint`, or `--teacher-config`
trains it once into OUT/teacher.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from scipy import stats

from posedistill.errors import InputError
from posedistill.distill.config import DistillConfig, TeacherConfig
from posedistill.engine import dist
from posedistill.engine.config import ConfigError, load_config
from posedistill.engine.evaluate import evaluate_checkpoint
from posedistill.engine.loop import train

# metrics shown in ablation.md, in this order, when the runs report them (CrowdPose adds AP(E/M/H));
# MPII runs report PCKh@0.5 per joint group and "Mean", already in percent
SHOWN_METRICS = ("AP", "AP(E)", "AP(M)", "AP(H)", "AP50", "AP75", "AR")
SHOWN_PCKH = ("Mean", "Mean@0.1", "Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle")


def primary_metric_of(row: dict) -> tuple[str, float]:
    """(the metric a table compares, its factor to percent): COCO-style OKS AP (a fraction) or MPII's
    PCKh@0.5 mean (already a percentage)."""
    return ("AP", 100.0) if "AP" in row else ("Mean", 1.0)
REFINE_TARGETS = ("teacher", "gt")


@dataclass(frozen=True)
class Variant:
    name: str
    terms: dict[str, float]         # stage-1 distillation terms (none: the student alone)
    refine: str = ""                # "" (stage 1 only) | teacher | gt: a stage-2 refiner trained on that target
    config: str = ""                # its own recipe ("" = the command's)
    overrides: tuple[str, ...] = () # its own dotted.key=value overrides (after the command's)
    teacher: str = ""               # an earlier variant whose final checkpoint (same seed) is the teacher
    reference: str = ""             # the variant its paired difference is taken to ("" = the plan's)
    own_weights: bool = False       # the plan gave the weights (a tuned row), not the recipe's distill.terms

    @property
    def own_run(self) -> bool:
        """True: a run of its own in OUT/NAME (not shared with the variants of the same terms)."""
        return bool(self.config or self.overrides or self.teacher or self.own_weights)


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


def stage1_name(terms: dict[str, float]) -> str:
    """Folder of a stage-1 run: `student` (no term) or the term names joined by '+'."""
    return "+".join(terms) if terms else "student"


def load_plan(path: str, terms: dict[str, float]) -> tuple[list[Variant], str | None, str]:
    """(variants, the stage-2 recipe path or None, the reference variant) of a plan file:

        refine_config: ../refine_seed002_synth.yaml   # stage-2 recipe, relative to the plan file
        reference: baseline                           # paired differences are taken to this variant
        variants:
          baseline: {terms: []}
          scheme-1: {terms: [], refine: gt}
          scheme-6: {terms: [aligned, pose], refine: teacher}
          lc: {config: ../seed004_synth_small.yaml, set: [distill.label_correction=both],
               teacher: cmu-baseline, reference: small-baseline}
          pairwise-tuned: {terms: {pairwise: 0.003}}  # weights given: a tuned row beside the paper's

    Term weights come from the stage-1 recipe's distill.terms (the papers' weights), unless `terms` is a
    mapping of name to weight, which gives the variant a run of its own. `config` (relative
    to the plan), `set` (overrides) and `teacher` (an earlier variant: its final checkpoint of the same
    seed teaches) give a variant a run of its own; `reference` its own paired comparison."""
    with open(path) as f:
        plan = yaml.safe_load(f)
    if not isinstance(plan, dict) or not isinstance(plan.get("variants"), dict) or not plan["variants"]:
        raise InputError(f"{path}: expected a mapping with a non-empty 'variants' mapping (name: {{terms: [...]}})")
    variants: list[Variant] = []
    for name, spec in plan["variants"].items():
        variants.append(_plan_variant(path, str(name), spec or {}, terms, [v.name for v in variants]))
    refine_config = plan.get("refine_config")
    if any(v.refine for v in variants) and not refine_config:
        raise InputError(f"{path}: a variant has 'refine' but the plan names no refine_config (the stage-2 recipe)")
    if refine_config:
        refine_config = str((Path(path).parent / refine_config))
    reference = str(plan.get("reference", variants[0].name))
    names = [v.name for v in variants]
    for where, ref in [("reference", reference)] + [(f"variants.{v.name}.reference", v.reference) for v in variants]:
        if ref and ref not in names:
            raise InputError(f"{path}: {where} {ref!r} is not one of the variants {names}")
    return variants, refine_config, reference


def _plan_variant(path: str, name: str, spec: dict, terms: dict[str, float], earlier: list[str]) -> Variant:
    """One entry of a plan's variants (see load_plan), checked."""
    unknown = sorted(set(spec) - {"terms", "refine", "config", "set", "teacher", "reference"})
    if unknown:
        raise InputError(f"{path}: variants.{name}: unknown keys {unknown} (expected terms, refine, config, set, "
                         f"teacher, reference)")
    given = spec.get("terms") if isinstance(spec.get("terms"), dict) else None
    chosen = list(spec.get("terms") or [])
    missing = [t for t in chosen if t not in terms]
    if missing:
        raise InputError(f"{path}: variants.{name}.terms {missing} are not in the recipe's distill.terms "
                         f"{sorted(terms)} (their weights come from there)")
    if given is not None and not all(isinstance(w, (int, float)) and w > 0 for w in given.values()):
        raise InputError(f"{path}: variants.{name}.terms: expected positive numbers as weights, got {given!r}")
    refine = str(spec.get("refine") or "")
    if refine and refine not in REFINE_TARGETS:
        raise InputError(f"{path}: variants.{name}.refine: expected teacher | gt, got {refine!r}")
    teacher = str(spec.get("teacher") or "")
    if teacher and teacher not in earlier:
        raise InputError(f"{path}: variants.{name}.teacher {teacher!r} must be a variant listed before it "
                         f"({earlier})")
    overrides = spec.get("set") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
        raise InputError(f"{path}: variants.{name}.set: expected a list of dotted.key=value strings, got {overrides!r}")
    config = str(Path(path).parent / spec["config"]) if spec.get("config") else ""
    weights = {t: float(given[t]) for t in chosen} if given is not None else {t: terms[t] for t in chosen}
    return Variant(name, weights, refine, config, tuple(overrides), teacher, str(spec.get("reference") or ""),
                   own_weights=given is not None)


def variant_config(cfg, terms: dict[str, float], seed: int, out_dir: Path, teacher: TeacherConfig | None = None):
    """The recipe with only `terms`, one seed, one folder. No terms and no `teacher`: plain supervised
    training (no teacher). `teacher` (a plan variant's teacher) replaces the recipe's and keeps the rest
    of its distill section (e.g. seed 004's label_correction / kd_lambda)."""
    decay = [d for d in cfg.distill.decay if d in terms]
    if teacher is not None:
        distill = dataclasses.replace(cfg.distill, terms=dict(terms), decay=decay, teacher=teacher)
    elif terms:
        distill = dataclasses.replace(cfg.distill, terms=dict(terms), decay=decay)
    else:
        distill = DistillConfig()
    train = dataclasses.replace(cfg.train, seed=seed, out_dir=str(out_dir))
    return dataclasses.replace(cfg, distill=distill, train=train)


def refine_variant_config(refine_cfg, student_ckpt: str, target: str, teacher_ckpt: str, seed: int, out_dir: Path):
    """The stage-2 recipe on one stage-1 checkpoint, one target, one seed, one folder."""
    teacher = dataclasses.replace(refine_cfg.distill.teacher, checkpoint=teacher_ckpt)
    distill = dataclasses.replace(refine_cfg.distill, teacher=teacher if target == "teacher" else
                                  dataclasses.replace(teacher, model="", checkpoint=""))
    refine = dataclasses.replace(refine_cfg.refine, student=str(student_ckpt), target=target)
    train = dataclasses.replace(refine_cfg.train, seed=seed, out_dir=str(out_dir))
    return dataclasses.replace(refine_cfg, distill=distill, refine=refine, train=train)


def check_refine_recipe(cfg, refine_cfg, path: str) -> None:
    """The stage-2 recipe must refine the stage-1 student and learn from the same teacher."""
    student = refine_cfg.model.kwargs.get("student")
    if refine_cfg.model.name != "simcc_igp_gcn" or student != cfg.model.name:
        raise InputError(f"{path}: the stage-2 recipe must build simcc_igp_gcn with model.kwargs.student="
                         f"{cfg.model.name} (the stage-1 student); it builds {refine_cfg.model.name} "
                         f"{dict(refine_cfg.model.kwargs)}")
    if refine_cfg.distill.teacher.model != cfg.distill.teacher.model:
        raise InputError(f"{path}: distill.teacher.model {refine_cfg.distill.teacher.model!r} differs from the "
                         f"stage-1 teacher {cfg.distill.teacher.model!r}")


def teacher_eval_config(cfg):
    """The recipe with the teacher as the model (same data, codec and evaluation)."""
    model = dataclasses.replace(cfg.model, name=cfg.distill.teacher.model, kwargs=dict(cfg.distill.teacher.model_kwargs),
                                checkpoint="")
    return dataclasses.replace(cfg, model=model, distill=DistillConfig())


def _stats(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def paired_difference(values: list[float], reference: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): mean of the per-seed differences and its 95% t interval (nan without two pairs)."""
    d = np.asarray(values, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    if d.size < 2:
        return float(d.mean()) if d.size else float("nan"), float("nan"), float("nan")
    half = stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def _seed_pairs(rs: list[dict], ref_rows: list[dict]) -> list[tuple[float, float]]:
    """[(variant, reference)] of the primary metric (in points), one pair per seed both have."""
    key, scale = primary_metric_of(rs[0])
    ref = {r["seed"]: scale * r[key] for r in ref_rows}
    return [(scale * r[key], ref[r["seed"]]) for r in rs if r["seed"] in ref]


def _delta_cell(rs: list[dict], ref_rows: list[dict]) -> str:
    pairs = _seed_pairs(rs, ref_rows)
    if not pairs:
        return ""
    mean, lo, hi = paired_difference([a for a, _ in pairs], [b for _, b in pairs])
    if np.isnan(lo):
        return f"{mean:+.2f}"
    return f"{mean:+.2f} [{lo:+.2f}, {hi:+.2f}]{' *' if lo > 0 or hi < 0 else ''}"


def pooled_difference_sd(groups: list[list[float]]) -> tuple[float, int]:
    """(s, df): the pooled sample std of paired differences over several groups (one per variant, its
    per-seed differences to its reference), s^2 = sum (n_g - 1) s_g^2 / sum (n_g - 1); groups with fewer
    than two seeds add nothing. (nan, 0) when no group has two."""
    used = [np.asarray(g, dtype=np.float64) for g in groups if len(g) > 1]
    df = sum(g.size - 1 for g in used)
    if not df:
        return float("nan"), 0
    return float(np.sqrt(sum((g.size - 1) * g.var(ddof=1) for g in used) / df)), df


def seeds_for_power(sd: float, effect: float = 1.0) -> int:
    """Seeds a paired comparison needs for 80% power to find `effect` at two-sided 5% (normal
    approximation: n = ((z_0.975 + z_0.8) sd / effect)^2, rounded up, at least 2)."""
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    return max(2, int(np.ceil((z * sd / effect) ** 2)))


def _power_line(rows: list[dict], refs: dict[str, str], order: list[str]) -> str:
    """What the table can resolve: the pooled std of its paired differences, the 95% half-width it gives
    at the seeds run, and the seeds 80% power at 1 point would need."""
    groups, seeds = [], []
    for v in order:
        if v == refs.get(v):
            continue
        rs = [r for r in rows if r["variant"] == v]
        d = [a - b for a, b in _seed_pairs(rs, [r for r in rows if r["variant"] == refs.get(v)])]
        groups.append(d)
        seeds += [len(d)] if len(d) > 1 else []
    sd, df = pooled_difference_sd(groups)
    if not df:
        return ""
    n = min(seeds)
    half = stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)
    dfs, vs = ("s" if df > 1 else ""), ("s" if len(seeds) > 1 else "")
    return (f"Power: the paired differences' pooled std is {sd:.2f} points ({df} degree{dfs} of freedom, over "
            f"{len(seeds)} variant{vs}), so {n} seeds give a 95% interval of about +-{half:.2f}; 80% power to "
            f"find a 1-point difference needs about {seeds_for_power(sd)} seeds.")


def _cell(values: list[float]) -> str:
    mean, sd = _stats(values)
    return f"{mean:.2f} +- {sd:.2f}" if len(values) > 1 else f"{mean:.2f} (1 seed)"


def write_tables(rows: list[dict], teacher: dict | None, out: Path, command: str,
                 reference: str | dict[str, str] = "student") -> str:
    """ablation.csv (all runs) and ablation.md (mean +- std per variant, paired difference to `reference`:
    one variant for all, or {variant: its reference}); returns the markdown."""
    key, scale = primary_metric_of(rows[0])
    metrics = [m for m in (SHOWN_METRICS if key == "AP" else SHOWN_PCKH) if any(m in r for r in rows)]
    cols = ["variant", "terms", "seed"] + [k for k in dict.fromkeys(k for r in rows for k in r)
                                           if k not in ("variant", "terms", "seed")]
    with open(out / "ablation.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    order = list(dict.fromkeys(r["variant"] for r in rows))
    refs = reference if isinstance(reference, dict) else {v: reference for v in order}
    single = len(set(refs.get(v, "") for v in order)) == 1
    name = "AP" if key == "AP" else "PCKh@0.5"
    last = f"{name} - {refs[order[0]]}" if single else f"{name} - reference"
    lines = [f"Command: `{command}`", "",
             f"Final-epoch validation metrics ({'x100' if scale == 100 else 'percent'}), mean +- sample std over "
             f"seeds. Last column: the paired difference in {name} to {'`' + refs[order[0]] + '`' if single else 'the variant named'} (same seeds), "
             "mean [95% t interval]; * = the interval excludes 0.", "",
             f"| variant | terms (weights) | seeds | {' | '.join(metrics)} | {last} |",
             "|---|---|---|" + "---|" * len(metrics) + "---|"]
    for v in order:
        rs = [r for r in rows if r["variant"] == v]
        cells = [_cell([scale * r[m] for r in rs if m in r]) for m in metrics]
        ref = refs.get(v, "")
        delta = _delta_cell(rs, [r for r in rows if r["variant"] == ref]) if ref and v != ref else ""
        if delta and not single:
            delta = f"{delta} (vs {ref})"
        lines.append(f"| {v} | {rs[0]['terms'] or 'none'} | {','.join(str(r['seed']) for r in rs)} | "
                     f"{' | '.join(cells)} | {delta} |")
    if teacher:
        cells = [f"{scale * teacher[m]:.2f}" if m in teacher else "" for m in metrics]
        lines.append(f"| teacher ({teacher['model']}) | - | - | {' | '.join(cells)} | |")
    power = _power_line(rows, refs, order)
    md = "\n".join(lines + (["", power] if power else [])) + "\n"
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


def _run(run_cfg, name: str, terms_text: str, seed: int, run_dir: Path) -> dict:
    """One training run and its row, or its result.json when an earlier ablation finished it."""
    done = run_dir / "result.json"
    if done.is_file():
        row = json.loads(done.read_text())
        key = primary_metric_of(row)[0]
        print(f"[ablate] {name} seed {seed}: reusing {done} ({key} {row[key]:.4f})", flush=True)
        return row
    last = run_dir / "last.pth"
    resume = str(last) if last.is_file() else None     # a run cut short by a stopped ablation goes on
    print(f"[ablate] {name} seed {seed} -> {run_dir}{' (resuming ' + str(last) + ')' if resume else ''}", flush=True)
    t0 = time.perf_counter()
    res = train(run_cfg, resume=resume)
    row = {"variant": name, "terms": terms_text, "seed": seed,
           **{k: float(v) for k, v in res["last_metrics"].items()},
           "best_AP": float(res["best_metric"]) if res["best_metric"] is not None else float("nan"),
           "time_s": time.perf_counter() - t0}
    if dist.is_main_process():
        done.write_text(json.dumps(row, indent=1))
    return row


def _terms_text(terms: dict[str, float]) -> str:
    return " ".join(f"{k}={v:g}" for k, v in terms.items())


def _run_variant(cfg, refine_cfg, v: Variant, seed: int, out: Path, teacher_ckpt: str) -> dict:
    """Stage 1 of `v` (shared by every variant with the same terms), then its stage 2 when it has one."""
    s1 = stage1_name(v.terms)
    run_dir = out / s1 / f"seed_{seed}"
    row = _run(variant_config(cfg, v.terms, seed, run_dir), s1, _terms_text(v.terms), seed, run_dir)
    if not v.refine:
        return {**row, "variant": v.name}
    r_dir = out / f"{s1}@refine-{v.refine}" / f"seed_{seed}"
    r_cfg = refine_variant_config(refine_cfg, str(run_dir / "last.pth"), v.refine, teacher_ckpt, seed, r_dir)
    text = f"{_terms_text(v.terms)} + IGP-GCN ({'teacher' if v.refine == 'teacher' else 'ground truth'})".strip()
    return {**_run(r_cfg, f"{s1}@refine-{v.refine}", text, seed, r_dir), "variant": v.name, "terms": text}


def _run_own_variant(cfg, v: Variant, seed: int, out: Path, models: dict[str, tuple[str, dict]]) -> dict:
    """A plan variant with its own recipe / overrides / teacher variant, in OUT/NAME/seed_S. `cfg` is its
    recipe with the overrides applied; `models` maps every variant to its (model name, kwargs)."""
    run_dir = out / v.name / f"seed_{seed}"
    teacher = None
    if v.teacher:
        name, kwargs = models[v.teacher]
        teacher = dataclasses.replace(cfg.distill.teacher, model=name, model_kwargs=dict(kwargs),
                                      checkpoint=str(out / v.teacher / f"seed_{seed}" / "last.pth"))
    if v.refine:
        raise InputError(f"variants.{v.name}: refine goes with the command's recipe only (no config / set / teacher)")
    text = " ".join([*v.overrides, *([_terms_text(v.terms)] if v.terms else []),
                     *([f"teacher={v.teacher}"] if v.teacher else [])])
    return {**_run(variant_config(cfg, v.terms, seed, run_dir, teacher), v.name, text, seed, run_dir),
            "variant": v.name}


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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="posedistill ablate",
                                description="Baseline, each distillation term alone and all together (or the "
                                            "variants of --plan), over seeds; writes OUT/ablation.md and "
                                            "OUT/ablation.csv (mean +- std, paired differences).")
    p.add_argument("config", help="distillation recipe (its distill.terms give the terms and weights)")
    p.add_argument("overrides", nargs="*", help="dotted.key=value overrides applied to every run (both stages)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    p.add_argument("--terms", nargs="+", help="terms to ablate (default: all of distill.terms)")
    p.add_argument("--plan", metavar="FILE", help="named variants with stage-1 terms and optional stage 2 (YAML; "
                                                  "see configs/plans/)")
    p.add_argument("--out", default="runs/ablation", metavar="DIR", help="output folder (default runs/ablation)")
    p.add_argument("--report", action="store_true",
                   help="train nothing: write the tables of the runs already finished in OUT (a table built over "
                        "several sittings)")
    p.add_argument("--teacher-config", metavar="CONFIG",
                   help="train the teacher with this recipe once (into OUT/teacher) when distill.teacher.checkpoint "
                        "is empty; the same overrides are applied")
    return p


def _own_recipes(args, cfg, variants: list[Variant]) -> dict[str, object]:
    """The recipe of every plan variant with a run of its own (its config, the command's overrides, then
    its own; a teacher variant's model named as distill.teacher.model, which LC / KD need on load)."""
    recipes: dict[str, object] = {}
    for v in variants:
        if not v.own_run:
            continue
        extra = []
        if v.teacher:
            extra = [f"distill.teacher.model={recipes.get(v.teacher, cfg).model.name}"]
        recipes[v.name] = load_config(v.config or args.config, [*args.overrides, *v.overrides, *extra])
    return recipes


def _result_file(v: Variant, seed: int, out: Path) -> Path:
    """Where `_run` leaves the row of variant `v`, seed `seed` (the folders of `_run_variant` /
    `_run_own_variant`)."""
    if v.own_run:
        return out / v.name / f"seed_{seed}" / "result.json"
    s1 = stage1_name(v.terms)
    return out / (f"{s1}@refine-{v.refine}" if v.refine else s1) / f"seed_{seed}" / "result.json"


def _finished_rows(variants: list[Variant], seeds: list[int], out: Path) -> list[dict]:
    """The rows of every (variant, seed) run already finished in OUT, plan order (`--report`)."""
    if not out.is_dir():
        raise InputError(f"--report: {out} does not exist (no ablation ran there)")
    rows = [{**json.loads(f.read_text()), "variant": v.name} for seed in seeds for v in variants
            if (f := _result_file(v, seed, out)).is_file()]
    if not rows:
        raise InputError(f"--report: no finished run (VARIANT/seed_S/result.json) of this plan in {out}")
    return rows


def _stored_teacher_row(out: Path) -> dict | None:
    teacher_file = out / "teacher_eval.json"
    return json.loads(teacher_file.read_text()) if teacher_file.is_file() else None


def _needs_recipe_teacher(variants: list[Variant]) -> bool:
    """Whether some variant learns from the recipe's teacher (terms or a stage 2, no teacher variant)."""
    return any((v.terms or v.refine) and not v.teacher for v in variants)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_intermixed_args(argv)
    out = Path(args.out)
    command = "posedistill ablate " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    cfg = load_config(args.config, args.overrides)
    if args.plan and args.terms:
        raise InputError("--plan and --terms both choose the variants; give one")
    refine_cfg, reference = None, "student"
    if args.plan:
        variants, refine_path, reference = load_plan(args.plan, cfg.distill.terms)
        refine_cfg = load_config(refine_path, args.overrides) if refine_path else None
        if refine_cfg is not None:
            check_refine_recipe(cfg, refine_cfg, refine_path)
    else:
        variants = [Variant(n, t) for n, t in variants_for(cfg.distill.terms, args.terms or list(cfg.distill.terms))]
    references = {v.name: v.reference or reference for v in variants}
    if args.report:
        md = write_tables(_finished_rows(variants, args.seeds, out), _stored_teacher_row(out), out, command,
                          references)
        print(md)
        return 0
    needs_teacher = _needs_recipe_teacher(variants) or not args.plan
    if needs_teacher and (not cfg.distill.teacher.model or not cfg.distill.terms):
        raise ConfigError(f"{args.config}: distill.teacher.model and distill.terms must be set for an ablation")
    recipes = _own_recipes(args, cfg, variants)
    models = {v.name: (recipes[v.name].model.name, recipes[v.name].model.kwargs) if v.name in recipes
              else (cfg.model.name, cfg.model.kwargs) for v in variants}
    teacher_cfg = load_config(args.teacher_config, args.overrides) if args.teacher_config else None
    out.mkdir(parents=True, exist_ok=True)
    ckpt = _teacher_checkpoint(cfg, teacher_cfg, out) if needs_teacher else ""
    cfg = dataclasses.replace(cfg, distill=dataclasses.replace(
        cfg.distill, teacher=dataclasses.replace(cfg.distill.teacher, checkpoint=str(ckpt))))
    rows: list[dict] = []
    for seed in args.seeds:
        for v in variants:
            rows.append(_run_own_variant(recipes[v.name], v, seed, out, models) if v.own_run
                        else _run_variant(cfg, refine_cfg, v, seed, out, str(ckpt)))
            write_tables(rows, None, out, command, references)
    md = write_tables(rows, _teacher_row(cfg, ckpt, out) if needs_teacher else None, out, command, references)
    dist.cleanup()
    if dist.is_main_process():
        print(md)
    return 0
