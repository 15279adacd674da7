"""Command mains: `posedistill distill` refuses recipes without a teacher or with bad terms, the
ablation's variants and table, and the command table of `posedistill`."""
from __future__ import annotations

import importlib
import json

from pathlib import Path

import pytest

from posedistill.cli import COMMANDS
from posedistill.cli import main as cli_main
from posedistill.commands import ablate
from posedistill.distill.config import TeacherConfig
from posedistill.commands.ablate import (load_plan, paired_difference, pooled_difference_sd, seeds_for_power,
                                         stage1_name, variant_config, variants_for, write_tables)
from posedistill.engine.config import load_config


def test_every_command_module_has_a_main(capsys):
    for name, (module, _) in COMMANDS.items():
        assert callable(importlib.import_module(module).main), name
    assert cli_main([]) == 0 and "ablate" in capsys.readouterr().out
    assert cli_main(["trian"]) == 2 and "unknown command 'trian'" in capsys.readouterr().err


def test_distill_command_requires_teacher(tmp_path, capsys):
    cfg = tmp_path / "r.yaml"
    cfg.write_text("model: {name: simplebaseline_r18}\n")
    assert cli_main(["distill", str(cfg)]) == 2
    assert "distill.teacher.model is empty" in capsys.readouterr().err
    cfg.write_text("distill: {teacher: {model: simplebaseline_r50, checkpoint: x.pth}, terms: {pairwise: 0.2}, cache: true}\n")
    assert cli_main(["distill", str(cfg)]) == 2
    assert "cannot serve the feature term" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["distill", "cache"])
def test_teacher_commands_name_a_missing_teacher_file(command, tmp_path, capsys):
    missing = tmp_path / "nope.pth"
    assert cli_main([command, "configs/distill_synth.yaml", f"distill.teacher.checkpoint={missing}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"posedistill {command}: ") and f"{missing}: no such file" in err
    assert cli_main([command, "configs/distill_synth.yaml"]) == 2
    assert "distill.teacher.checkpoint is empty" in capsys.readouterr().err


def test_distill_cli_rejects_recipe_without_teacher(capsys):
    assert cli_main(["distill", "configs/demo_base.yaml"]) == 2
    err = capsys.readouterr().err
    assert "distill.teacher.model is empty" in err and "configs/demo_base.yaml" in err


def test_distill_cli_rejects_unknown_key(capsys):
    assert cli_main(["distill", "configs/demo_base.yaml", "optim.lrr=0.1"]) == 2
    assert "optim.lr" in capsys.readouterr().err


def test_ablation_variants_and_table(tmp_path):
    terms = {"logit": 0.5, "pairwise": 0.2, "adversarial": 0.3}
    v = variants_for(terms, ["logit", "pairwise", "adversarial"])
    assert [n for n, _ in v] == ["student", "logit", "pairwise", "adversarial", "logit+pairwise+adversarial"]
    assert v[-1][1] == terms and v[1][1] == {"logit": 0.5}
    with pytest.raises(ValueError, match="mapd"):
        variants_for(terms, ["mapd"])
    cfg = load_config(None, ["distill.teacher.model=simplebaseline_r50", "distill.teacher.checkpoint=t.pth",
                             "distill.terms={logit: 0.5, pairwise: 0.2}", "distill.decay=[all]"])
    base = variant_config(cfg, {}, 3, tmp_path / "s")
    assert base.distill.teacher.model == "" and base.distill.terms == {} and base.train.seed == 3
    one = variant_config(cfg, {"pairwise": 0.2}, 1, tmp_path / "p")
    assert one.distill.terms == {"pairwise": 0.2} and one.distill.decay == ["pairwise"]
    assert one.distill.teacher.checkpoint == "t.pth" and one.train.out_dir == str(tmp_path / "p")
    rows = [{"variant": "student", "terms": "", "seed": s, "AP": ap, "AP50": 0.9, "AR": 0.5, "best_AP": ap, "time_s": 1}
            for s, ap in ((0, 0.50), (1, 0.52))]
    rows += [{"variant": "logit", "terms": "logit=0.5", "seed": s, "AP": ap, "AP50": 0.9, "AR": 0.5, "best_AP": ap,
              "time_s": 1} for s, ap in ((0, 0.53), (1, 0.55))]
    md = write_tables(rows, {"model": "r50", "AP": 0.6, "AP50": 0.95, "AR": 0.7}, tmp_path, "posedistill ablate x")
    assert "| student | none | 0,1 | 51.00 +- 1.41 |" in md
    assert "| logit | logit=0.5 | 0,1 | 54.00 +- 1.41 |" in md
    assert "| +3.00 [+3.00, +3.00] * |" in md            # paired: both seeds gain exactly 3 points
    assert "teacher (r50)" in md and (tmp_path / "ablation.csv").read_text().count("\n") == 5


def test_paired_difference_interval_by_hand():
    """Differences 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.3027 -> 2 +- 4.3027 / sqrt(3) = 2 +- 2.4841."""
    mean, lo, hi = paired_difference([11.0, 12.0, 13.0], [10.0, 10.0, 10.0])
    assert mean == pytest.approx(2.0) and lo == pytest.approx(-0.4841, abs=1e-4) and hi == pytest.approx(4.4841, abs=1e-4)


def test_ablation_plan_shares_stage1_runs_and_checks_names(tmp_path):
    terms = {"aligned": 5e-5, "pose": 0.1, "pose_l1": 0.1}
    variants, refine, reference = load_plan("configs/plans/seed002_table4.yaml", terms)
    assert [v.name for v in variants] == ["baseline"] + [f"scheme-{i}" for i in range(1, 7)] and reference == "baseline"
    assert refine.endswith("refine_seed002_synth.yaml") and Path(refine).is_file()
    by = {v.name: v for v in variants}
    assert by["scheme-6"].terms == {"aligned": 5e-5, "pose": 0.1} and by["scheme-6"].refine == "teacher"
    assert by["scheme-1"].refine == "gt" and stage1_name(by["scheme-1"].terms) == stage1_name(by["baseline"].terms)
    assert stage1_name(by["scheme-4"].terms) == stage1_name(by["scheme-6"].terms) == "aligned+pose"
    bad = tmp_path / "plan.yaml"
    # a mapping gives the weights (a tuned row beside the paper's): its own run, not the shared `pose` one
    bad.write_text("variants: {paper: {terms: [pose]}, tuned: {terms: {pose: 0.01}}}\n")
    paper, tuned = load_plan(str(bad), terms)[0]
    assert (paper.terms, paper.own_run) == ({"pose": 0.1}, False) and (tuned.terms, tuned.own_run) == ({"pose": 0.01}, True)
    bad.write_text("variants: {a: {terms: {pose: -1}}}\n")
    with pytest.raises(ValueError, match="variants.a.terms: expected positive numbers as weights"):
        load_plan(str(bad), terms)
    bad.write_text("variants: {a: {terms: [logit]}}\n")
    with pytest.raises(ValueError, match=r"variants.a.terms \['logit'\] are not in the recipe's distill.terms"):
        load_plan(str(bad), terms)
    bad.write_text("variants: {a: {terms: [], refine: student}}\n")
    with pytest.raises(ValueError, match="refine: expected teacher | gt"):
        load_plan(str(bad), terms)


def test_ablation_plan_variants_with_own_recipe_teacher_and_reference(tmp_path):
    """Seed 004's plan: LC / KD variants learn from an earlier variant's final checkpoint of the same seed
    and keep their own distill settings; each table row is compared with its own reference."""
    variants, refine, reference = load_plan("configs/plans/seed004_tables.yaml", {})
    by = {v.name: v for v in variants}
    assert refine is None and reference == "small-baseline" and by["cmu-lc-x2"].teacher == "cmu-lc"
    assert by["cmu-lc"].reference == "cmu-baseline" and by["small-lc"].own_run and by["small-lc"].config == ""
    assert Path(by["cmu-baseline"].config).is_file() and by["small-kd-lc"].overrides[:2] == (
        "distill.kd_lambda=0.5", "distill.label_correction=both")
    cfg = load_config("configs/seed004_synth_small.yaml", ["distill.teacher.model=cmu_pose_tiny",
                                                           *by["small-lc-pafs"].overrides])
    teacher = TeacherConfig(model="cmu_pose_tiny", checkpoint="t/last.pth")
    run = variant_config(cfg, {}, 2, tmp_path / "r", teacher)
    assert run.distill.label_correction == "pafs" and run.distill.teacher.checkpoint == "t/last.pth"
    assert variant_config(cfg, {}, 2, tmp_path / "r").distill.teacher.model == ""   # baseline: no teacher
    bad = tmp_path / "plan.yaml"
    bad.write_text("variants: {a: {teacher: b}, b: {}}\n")
    with pytest.raises(ValueError, match="variants.a.teacher 'b' must be a variant listed before it"):
        load_plan(str(bad), {})
    bad.write_text("variants: {a: {set: optim.lr}}\n")
    with pytest.raises(ValueError, match="variants.a.set: expected a list of dotted.key=value strings"):
        load_plan(str(bad), {})
    bad.write_text("variants: {a: {teachr: b}}\n")
    with pytest.raises(ValueError, match=r"variants.a: unknown keys \['teachr'\]"):
        load_plan(str(bad), {})
    bad.write_text("variants: {a: {}, b: {reference: c}}\n")
    with pytest.raises(ValueError, match="variants.b.reference 'c' is not one of the variants"):
        load_plan(str(bad), {})
    rows = [{"variant": v, "terms": "", "seed": s, "AP": ap} for v, s, ap in (
        ("t", 0, 0.5), ("t", 1, 0.5), ("t2", 0, 0.6), ("t2", 1, 0.7), ("s", 0, 0.1), ("s", 1, 0.2),
        ("s2", 0, 0.2), ("s2", 1, 0.3))]
    md = write_tables(rows, None, tmp_path, "x", {"t": "t", "t2": "t", "s": "s", "s2": "s"})
    assert "| +15.00 [-48.53, +78.53] (vs t) |" in md and "| +10.00 [+10.00, +10.00] * (vs s) |" in md


def test_ablation_run_resumes_a_cut_short_run_and_reuses_a_finished_one(tmp_path, monkeypatch):
    calls = []

    def fake_train(cfg, resume=None):
        calls.append(resume)
        return {"last_metrics": {"AP": 0.25}, "best_metric": 0.3}

    monkeypatch.setattr(ablate, "train", fake_train)
    run_dir = tmp_path / "v" / "seed_0"
    run_dir.mkdir(parents=True)
    (run_dir / "last.pth").write_bytes(b"")          # what a stopped ablation leaves behind
    row = ablate._run(None, "v", "", 0, run_dir)
    assert calls == [str(run_dir / "last.pth")] and row["AP"] == 0.25 and row["best_AP"] == 0.3
    assert ablate._run(None, "v", "", 0, run_dir)["AP"] == 0.25 and len(calls) == 1   # result.json reused


def test_ablate_report_tabulates_finished_runs_and_trains_nothing(tmp_path, capsys):
    out = tmp_path / "tables"
    args = ["ablate", "configs/seed004_synth_small.yaml", "--plan", "configs/plans/seed004_tables.yaml",
            "--seeds", "0", "1", "--out", str(out), "--report"]
    assert cli_main(args) == 2 and "does not exist" in capsys.readouterr().err
    for variant, seed, ap in (("small-baseline", 0, 0.04), ("small-baseline", 1, 0.05), ("small-lc", 0, 0.06),
                              ("small-lc", 1, 0.06)):
        (out / variant / f"seed_{seed}").mkdir(parents=True)
        (out / variant / f"seed_{seed}" / "result.json").write_text(
            json.dumps({"variant": variant, "terms": "", "seed": seed, "AP": ap}))
    assert cli_main(args) == 0
    md = (out / "ablation.md").read_text()
    assert "| small-baseline | none | 0,1 | 4.50 +- 0.71 |" in md and "small-kd" not in md
    assert "| small-lc | none | 0,1 | 6.00 +- 0.00 | +1.50 [-4.85, +7.85] |" in md   # diffs 2, 1: t(0.975, 1) = 12.706


def test_ablate_without_teacher_checkpoint_says_so(tmp_path, capsys):
    cfg = tmp_path / "r.yaml"
    cfg.write_text("distill: {teacher: {model: elpn_v2}, terms: {logit: 0.5}}\n")
    assert cli_main(["ablate", str(cfg), "--out", str(tmp_path / "a")]) == 2
    assert "--teacher-config" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["cache", "eval", "train"])
def test_recipe_errors_are_one_line_and_exit_2(command, capsys):
    """Every command that loads a recipe goes through commands/common.py load_recipe."""
    extra = ["--checkpoint", "x.pth"] if command == "eval" else []
    assert cli_main([command, "configs/demo_base.yaml", "optim.lrr=0.1", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"posedistill {command}: ") and "optim.lr" in err


def test_power_line_pools_the_paired_differences_by_hand(tmp_path):
    """Two variants against `student` over 3 seeds, AP x100 differences a: 1, 2, 3 (var 1) and b: 0, 2, 4
    (var 4): pooled var = (2 x 1 + 2 x 4) / 4 = 2.5, s = 1.5811, 4 degrees of freedom. With 3 seeds the
    half-width is t(0.975, 2) x s / sqrt 3 = 4.3027 x 1.5811 / 1.7321 = 3.93; 80% power at 1 point:
    ((1.95996 + 0.84162) x 1.5811)^2 = 19.63 -> 20 seeds."""
    sd, df = pooled_difference_sd([[1.0, 2.0, 3.0], [0.0, 2.0, 4.0], [5.0]])   # the 1-seed group adds nothing
    assert sd == pytest.approx(1.5811, abs=1e-4) and df == 4
    assert seeds_for_power(sd) == 20 and seeds_for_power(0.1) == 2
    base = {0: 0.10, 1: 0.20, 2: 0.30}
    rows = [{"variant": "student", "terms": "", "seed": s, "AP": ap} for s, ap in base.items()]
    rows += [{"variant": "a", "terms": "", "seed": s, "AP": base[s] + (s + 1) / 100} for s in base]
    rows += [{"variant": "b", "terms": "", "seed": s, "AP": base[s] + 2 * s / 100} for s in base]
    md = write_tables(rows, None, tmp_path, "x")
    assert md.rstrip().endswith("pooled std is 1.58 points (4 degrees of freedom, over 2 variants), so 3 seeds "
                                "give a 95% interval of about +-3.93; 80% power to find a 1-point difference "
                                "needs about 20 seeds.")
