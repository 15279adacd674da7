"""Expected failures reach the user as one line `posedistill COMMAND: error: ...` (and a hint line), exit 2,
no traceback; `--debug` / POSEDISTILL_DEBUG=1 shows it. Checkpoints say what they hold when they do not fit."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from posedistill.cli import main as cli_main
from posedistill.commands.demo import generate_data
from posedistill.engine.config import load_config
from posedistill.engine.loop import train
from posedistill.errors import CheckpointError, PosedistillError
from posedistill.inference import export as export_module

from helpers import tiny_run


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return generate_data(tmp_path_factory.mktemp("synth"), n_train=4, n_val=2, seed=0)


def _overrides(synth, out, *extra) -> list[str]:
    return tiny_run(synth, out, "train.max_iters_per_epoch=1", *extra)


@pytest.fixture(scope="module")
def checkpoint(synth, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    train(load_config(None, _overrides(synth, out)))
    return out / "last.pth"


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("posedistill ")]
    assert "Traceback" not in err, err
    assert lines and lines[0].startswith(f"posedistill {command}: error: "), err
    assert all(ln.startswith(f"posedistill {command}: ") for ln in lines) and len(lines) <= 2, err
    return lines[0]


def test_bad_annotation_unknown_model_and_bad_override(synth, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    data = json.loads(Path(synth["train"][0]).read_text())
    data["annotations"][1]["keypoints"] = data["annotations"][1]["keypoints"][:-3]   # one joint short
    bad.write_text(json.dumps(data))
    assert cli_main(["train", "configs/demo_base.yaml", *_overrides(synth, tmp_path / "a"),
                     f"data.train_ann={bad}"]) == 2
    line = _one_line_error(capsys, "train")
    assert "bad.json" in line and f"id {data['annotations'][1]['id']}" in line and "keypoints" in line
    assert cli_main(["train", "configs/demo_base.yaml", *_overrides(synth, tmp_path / "b"), "model.name=elpn_v9"]) == 2
    assert "unknown model 'elpn_v9'" in _one_line_error(capsys, "train")
    assert cli_main(["eval", "configs/demo_base.yaml", "optim.lr=fast", "--checkpoint", "x.pth"]) == 2
    assert "optim.lr" in _one_line_error(capsys, "eval")


def test_checkpoint_of_another_model_says_what_it_holds(synth, checkpoint, tmp_path, capsys):
    recipe = ["configs/demo_base.yaml", *_overrides(synth, tmp_path), "model.name=simplebaseline_r18"]
    assert cli_main(["eval", *recipe, "--checkpoint", str(checkpoint)]) == 2
    line = _one_line_error(capsys, "eval")
    assert "holds elpn_v1 (17 joints, heatmap 16x16); the config builds simplebaseline_r18 (17 joints, " \
           "heatmap 16x16)" in line
    # a file without a card (an official release) is checked by key layout: counted, keys only with --debug
    bare = tmp_path / "bare.pth"
    torch.save(torch.load(checkpoint, weights_only=True)["model"], bare)
    assert cli_main(["eval", *recipe, "--checkpoint", str(bare)]) == 2
    line = _one_line_error(capsys, "eval")
    assert "does not fit" in line and "missing keys (first:" in line
    with pytest.raises(CheckpointError):
        cli_main(["--debug", "eval", *recipe, "--checkpoint", str(bare)])
    assert "missing keys (" in capsys.readouterr().err          # the whole key list under --debug


class _Payload:   # any class: unpickling it means importing and calling code
    pass


def test_refused_and_corrupt_checkpoints(synth, checkpoint, tmp_path, capsys, monkeypatch):
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        torch.save({"model": _Payload()}, f)
    assert cli_main(["predict", "tests/data/coco", "-c", str(evil), "--out", str(tmp_path / "p")]) == 2
    line = _one_line_error(capsys, "predict")
    assert "was refused" in line and "_Payload" in line and "truncated or corrupt" not in line
    cut = tmp_path / "cut.pth"
    cut.write_bytes(checkpoint.read_bytes()[:5000])
    assert cli_main(["export", str(cut)]) == 2
    assert "truncated or corrupt" in _one_line_error(capsys, "export")
    monkeypatch.setenv("POSEDISTILL_DEBUG", "1")
    with pytest.raises(PosedistillError):
        cli_main(["export", str(cut)])


def test_non_finite_loss_and_missing_dependency(synth, checkpoint, tmp_path, capsys, monkeypatch):
    assert cli_main(["train", "configs/demo_base.yaml", *_overrides(synth, tmp_path / "r"),
                     "loss.loss_weight=.inf"]) == 2
    line = _one_line_error(capsys, "train")
    assert "loss is" in line and "parts" in line
    monkeypatch.setattr(export_module, "onnx", None)          # as if `onnx` were not installed
    assert cli_main(["export", str(checkpoint), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "pip install" in _one_line_error(capsys, "export")


def test_unexpected_errors_keep_their_traceback(monkeypatch):
    """A bug is not an expected failure: cli.py lets it through with its traceback."""
    def broken(argv):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr("posedistill.commands.profile.main", broken)
    with pytest.raises(ZeroDivisionError):
        cli_main(["profile", "elpn_v1"])


def test_unreadable_training_images_are_counted_and_stop_the_run_past_the_threshold(tmp_path, capsys):
    """A corrupt image: its people are skipped (replaced by readable ones), counted in log.json and the run's
    last line; above train.max_skipped_fraction the run stops with the list."""
    splits = generate_data(tmp_path / "data", n_train=4, n_val=2, seed=3)
    ann = json.loads(Path(splits["train"][0]).read_text())
    broken = ann["images"][0]
    (Path(splits["train"][1]) / broken["file_name"]).write_bytes(b"\xff\xd8 damaged")
    people = sum(a["image_id"] == broken["id"] for a in ann["annotations"])
    total = len(ann["annotations"])
    run = ["configs/demo_base.yaml", *tiny_run(splits, tmp_path / "ok", "data.flip=false", epochs=2, iters=20,
                                               batch=2), "train.max_skipped_fraction=0.9"]
    with pytest.warns(UserWarning, match=broken["file_name"]):
        assert cli_main(["train", *run]) == 0
    log = json.loads((tmp_path / "ok" / "log.json").read_text())
    assert log[-1]["skipped"] == people and broken["file_name"] in log[-1]["skipped_examples"]
    assert f"skipped {people} training samples" in capsys.readouterr().out
    with pytest.warns(UserWarning):
        assert cli_main(["train", *run, f"train.out_dir={tmp_path / 'stop'}", "train.max_skipped_fraction=0.01"]) == 2
    line = _one_line_error(capsys, "train")
    assert f"{people} of {total} training samples" in line and broken["file_name"] in line


def test_predict_and_custom_set_bad_options_are_one_line(synth, checkpoint, tmp_path, capsys):
    assert cli_main(["predict", "tests/data/coco", "-c", str(checkpoint), "--detector", str(tmp_path / "no.onnx"),
                     "--out", str(tmp_path / "p")]) == 2
    assert "no.onnx" in _one_line_error(capsys, "predict")
    not_onnx = tmp_path / "det.onnx"
    not_onnx.write_bytes(b"not a protobuf")
    assert cli_main(["serve", str(not_onnx)]) == 2
    assert "det.onnx" in _one_line_error(capsys, "serve")
    with pytest.raises(SystemExit):                      # argparse: usage + the option named
        cli_main(["predict", "tests/data/coco", "-c", str(checkpoint), "--det-input", "big"])
    assert "--det-input" in capsys.readouterr().err
    custom = ["configs/demo_base.yaml", *_overrides(synth, tmp_path / "c"), "data.dataset=custom",
              "data.flip_pairs=[[left_fin, right_fin]]"]
    assert cli_main(["train", *custom]) == 2
    assert "data.flip_pairs names joint 'left_fin'" in _one_line_error(capsys, "train")
