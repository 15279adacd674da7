"""`posedistill demo --fast`: the whole main job in miniature (numbers meaningless, plumbing real)."""
from __future__ import annotations

import json

import pytest

from posedistill.engine.demo import distillation_available, main


@pytest.mark.slow
def test_demo_fast_writes_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--out", str(out), "--fast"]) == 0
    report = (out / "report.md").read_text()
    assert "| teacher |" in report and "| student alone |" in report
    if distillation_available():
        assert "| student distilled |" in report
    for name in ("learning_curves.png", "predictions.png", "results.json"):
        assert (out / name).stat().st_size > 0, name
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert all(0.0 <= r["AP"] <= 1.0 and r["params"] > 0 and r["gmacs"] > 0 for r in rows)
    assert str(out / "report.md") in capsys.readouterr().out
