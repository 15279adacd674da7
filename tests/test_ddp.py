"""`torchrun --nproc_per_node 2` with gloo on CPU trains, checkpoints on rank 0 and evaluates
with predictions gathered across both ranks."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from posedistill.engine.checkpoint import read_checkpoint
from posedistill.engine.config import load_config
from posedistill.engine.evaluate import evaluate_checkpoint


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path):
    from posedistill.commands.demo import generate_data

    synth = generate_data(tmp_path, n_train=6, n_val=3, seed=0)
    (train_ann, train_img), (val_ann, val_img) = synth["train"], synth["val"]
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "posedistill.cli", "train", str(Path(__file__).resolve().parents[1] / "configs" / "synth_tiny.yaml"),
           f"data.train_ann={train_ann}", f"data.train_images={train_img}", f"data.val_ann={val_ann}",
           f"data.val_images={val_img}", "optim.epochs=2", "train.eval_interval=1", "train.device=cpu",
           f"train.out_dir={out}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=170, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout          # both ranks joined
    assert proc.stdout.count("epoch 2/2") == 1     # only rank 0 logs
    log = json.loads((out / "log.json").read_text())
    assert [r["epoch"] for r in log] == [1, 2]
    state = read_checkpoint(out / "last.pth")
    assert state["epoch"] == 2 and len(state["rng"]) == 2   # one RNG state per rank
    # predictions of both ranks' shards were gathered and scored: every val person counted once
    from posedistill.data.coco import load_coco_instances

    n_people = len(load_coco_instances(val_ann, val_img))
    assert n_people > 1 and all(r["val_instances"] == n_people for r in log)
    # the two ranks' gathered evaluation equals one process evaluating the final weights
    single = evaluate_checkpoint(load_config(out / "config.yaml"), str(out / "last.pth"), out_dir=str(tmp_path / "ev"))
    assert single["AP"] == pytest.approx(log[-1]["val_AP"], abs=1e-9)


@pytest.mark.slow
def test_torchrun_distillation_two_processes_gloo(tmp_path):
    """Distillation under DDP: the student, the aligned term's 1x1 adapter and the adversarial
    discriminator (its own optimiser group) train on two gloo ranks; rank 0 logs and saves."""
    import torch

    from posedistill.commands.demo import generate_data
    from posedistill.models import create_model

    synth = generate_data(tmp_path, n_train=6, n_val=3, seed=0)
    (train_ann, train_img), (val_ann, val_img) = synth["train"], synth["val"]
    teacher_file = tmp_path / "teacher.pth"
    torch.manual_seed(0)
    torch.save(create_model("elpn_v1").state_dict(), teacher_file)
    out = tmp_path / "ddp_distill"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "posedistill.cli", "distill", str(Path(__file__).resolve().parents[1] / "configs" / "synth_tiny.yaml"),
           f"data.train_ann={train_ann}", f"data.train_images={train_img}", f"data.val_ann={val_ann}",
           f"data.val_images={val_img}", "optim.epochs=2", "train.eval_interval=2", "train.device=cpu",
           f"train.out_dir={out}", "distill.teacher.model=elpn_v1", f"distill.teacher.checkpoint={teacher_file}",
           "distill.terms={logit: 0.5, aligned: 0.1, adversarial: 0.3}", "distill.disc_channels=8"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=170, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    assert proc.stdout.count("epoch 2/2") == 1
    log = json.loads((out / "log.json").read_text())
    assert [r["epoch"] for r in log] == [1, 2]
    assert all(math.isfinite(r["train_loss"]) for r in log)
    assert {"train_logit", "train_aligned", "train_adversarial", "train_adversarial_own"} <= set(log[-1])
    state = read_checkpoint(out / "last.pth")
    assert state["epoch"] == 2 and len(state["rng"]) == 2
    # the discriminator's own optimiser group stepped every iteration, its state and the adapter's are kept
    assert state["groups"]["adversarial"]["scheduler"]["last_epoch"] == state["iteration"] > 0
    assert state["groups"]["adversarial"]["optimizer"]["state"]
    assert set(state["task_extra"]["terms"]) == {"aligned", "adversarial"}
