"""`posedistill demo --fast`: the whole main job in miniature (numbers meaningless, plumbing real)."""
from __future__ import annotations

import json
import math

import pytest

from posedistill.commands.demo import main


@pytest.mark.slow
def test_demo_fast_writes_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--out", str(out), "--fast"]) == 0
    report = (out / "report.md").read_text()
    for label in ("teacher", "student alone", "student distilled"):
        assert f"| {label} |" in report, label
    for name in ("learning_curves.png", "predictions.png", "results.json"):
        assert (out / name).stat().st_size > 0, name
    rows = {r["label"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    for label, folder in (("teacher", "teacher"), ("student alone", "student"),
                          ("student distilled", "student_distilled")):
        log = json.loads((out / folder / "log.json").read_text())
        assert rows[label]["AP"] == log[-1]["val_AP"] and math.isfinite(log[-1]["train_loss"]), label
        assert rows[label]["params"] > 0 and rows[label]["gmacs"] > 0
    distilled = json.loads((out / "student_distilled" / "log.json").read_text())[-1]
    assert distilled["train_logit"] > 0                   # the teacher's term was computed and logged
    assert distilled["train_loss"] == pytest.approx(0.25 * distilled["train_supervised"]
                                                    + 0.5 * distilled["train_logit"], rel=1e-5)
    assert str(out / "report.md") in capsys.readouterr().out
