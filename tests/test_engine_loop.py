"""The training loop on tiny synthetic data: loss goes down, --resume is exact (also with a second
optimiser group), the one scaler path clips each group; the train / eval commands."""
from __future__ import annotations

import json
import math

import pytest
import torch

from posedistill.cli import main as cli_main
from posedistill.commands.demo import generate_data
from posedistill.commands.eval import main as main_eval
from posedistill.commands.train import main as main_train
from posedistill.engine import build
from posedistill.engine.checkpoint import read_checkpoint
from posedistill.engine.config import load_config
from posedistill.engine.loop import Optimization, train
from posedistill.models import create_model
from posedistill.tasks import OptimGroup
from posedistill.tensors import amp_dtype


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A tiny synthetic COCO-format train / val pair (shared by the tests of this file)."""
    root = tmp_path_factory.mktemp("synth")
    return generate_data(root, n_train=8, n_val=3, seed=0)


def tiny_overrides(synth, out_dir, *extra) -> list[str]:
    (train_ann, train_img), (val_ann, val_img) = synth["train"], synth["val"]
    return [f"data.train_ann={train_ann}", f"data.train_images={train_img}", f"data.val_ann={val_ann}",
            f"data.val_images={val_img}", "data.val_boxes=gt", "data.input_size=[64, 64]",
            "model.name=simplebaseline_r18", "codec.sigma=1.5", "optim.lr=2e-3", "optim.milestones=[]",
            "train.batch_size=8", "train.workers=0", "train.eval_interval=0", "train.progress=false",
            "eval.batch_size=16", "eval.flip_test=false", f"train.out_dir={out_dir}", *extra]


def test_loss_goes_down(synth, tmp_path):
    """Fitting 4 fixed crops (no augmentation) for 20 iterations: the heatmap loss drops well below the
    all-zero prediction's loss, where a freshly initialised head starts."""
    cfg = load_config(None, tiny_overrides(synth, tmp_path / "run", "optim.epochs=20", "data.flip=false",
                                           "data.rotation_prob=0.0", "data.scale_factor=0.0", "optim.lr=1e-3",
                                           "data.half_body_prob=0.0", "data.max_train_instances=4",
                                           "train.batch_size=4"))
    result = train(cfg)
    losses = [r["train_loss"] for r in result["history"]]
    assert len(losses) == 20 and all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.7 * first, losses
    # per-epoch logs and the learning curve are written
    for name in ("log.csv", "log.json", "learning_curve.png", "config.yaml", "last.pth"):
        assert (tmp_path / "run" / name).is_file(), name
    assert list((tmp_path / "run" / "tb").iterdir())


def test_resume_is_exact(synth, tmp_path):
    """Resuming from a checkpoint taken after epoch 1 of 3 ends with bit-identical weights."""
    common = ["optim.epochs=3", "optim.milestones=[2]", "optim.warmup_iters=2", "train.keep_every=1",
              "train.max_iters_per_epoch=2", "train.batch_size=4", "optim.grad_clip=1.0"]
    full = train(load_config(None, tiny_overrides(synth, tmp_path / "full", *common)))
    resumed = train(load_config(None, tiny_overrides(synth, tmp_path / "resumed", *common)),
                    resume=str(tmp_path / "full" / "epoch_1.pth"))
    a = read_checkpoint(tmp_path / "full" / "last.pth")
    b = read_checkpoint(tmp_path / "resumed" / "last.pth")
    assert a["epoch"] == b["epoch"] == 3 and a["iteration"] == b["iteration"] == 6
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"])
    assert a["scheduler"] == b["scheduler"]
    assert [r["train_loss"] for r in full["history"]] == [r["train_loss"] for r in resumed["history"]]


def test_train_and_eval_commands(synth, tmp_path, capsys):
    """`posedistill train` logs and keeps the best epoch; `posedistill eval` of best.pth on the same
    split and settings reproduces that epoch's AP exactly."""
    out = tmp_path / "cli"
    args = tiny_overrides(synth, out, "optim.epochs=2", "train.eval_interval=1")
    assert main_train([str(_write_recipe(tmp_path)), *args]) == 0
    log = json.loads((out / "log.json").read_text())
    assert [r["epoch"] for r in log] == [1, 2]
    best = read_checkpoint(out / "best.pth")
    assert best["best_metric"] == max(r["val_AP"] for r in log)
    best_row = log[best["epoch"] - 1]
    capsys.readouterr()
    assert main_eval([str(out / "config.yaml"), "--checkpoint", str(out / "best.pth"), "--no-flip",
                      "--boxes", "gt"]) == 0
    printed = dict(ln.split() for ln in capsys.readouterr().out.splitlines() if len(ln.split()) == 2)
    assert float(printed["AP"]) == pytest.approx(best_row["val_AP"], abs=5e-5)
    assert float(printed["instances"]) == best_row["val_instances"] > 0


def _write_recipe(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("model:\n  name: simplebaseline_r18\noptim:\n  lr: 2.0e-3\n")
    return path


def test_typo_on_command_line_is_rejected(tmp_path, capsys):
    assert cli_main(["train", str(_write_recipe(tmp_path)), "optim.lr_stpe=3"]) == 2
    err = capsys.readouterr().err
    assert "optim.lr_stpe" in err and "did you mean" in err


def test_scheduler_warmup_and_steps():
    cfg = load_config(None, ["optim.epochs=4", "optim.milestones=[2, 3]", "optim.warmup_iters=4",
                             "optim.warmup_ratio=0.1", "optim.gamma=0.5"])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build.build_scheduler(opt, cfg.optim, iters_per_epoch=4)
    lrs = []
    for _ in range(16):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[2] == pytest.approx(0.55) and lrs[4:8] == [1.0] * 4
    assert lrs[8:12] == [0.5] * 4 and lrs[12:] == [0.25] * 4


def test_resume_with_adversarial_discriminator_group(synth, tmp_path):
    """A distillation run with the adversarial term (a second optimiser group, stepped under the same
    scaler and schedule) resumes bit-identically, discriminator and its Adam state included."""
    teacher = tmp_path / "teacher.pth"
    torch.manual_seed(0)
    torch.save(create_model("simplebaseline_r18", num_joints=17).state_dict(), teacher)
    common = ["optim.epochs=2", "train.keep_every=1", "train.max_iters_per_epoch=2", "train.batch_size=4",
              "distill.teacher.model=simplebaseline_r18", f"distill.teacher.checkpoint={teacher}",
              "distill.terms={logit: 0.5, adversarial: 0.3}", "distill.disc_channels=4", "optim.grad_clip=1.0"]
    full = train(load_config(None, tiny_overrides(synth, tmp_path / "full", *common)))
    train(load_config(None, tiny_overrides(synth, tmp_path / "resumed", *common)),
          resume=str(tmp_path / "full" / "epoch_1.pth"))
    a = read_checkpoint(tmp_path / "full" / "last.pth")
    b = read_checkpoint(tmp_path / "resumed" / "last.pth")
    assert set(a["groups"]) == {"adversarial"} and a["groups"]["adversarial"]["scheduler"]["last_epoch"] == 4
    disc_a, disc_b = a["task_extra"]["terms"]["adversarial"], b["task_extra"]["terms"]["adversarial"]
    for k, v in disc_a.items():
        assert torch.equal(v, disc_b[k]), k
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert {"train_adversarial", "train_adversarial_own"} <= set(full["history"][-1])


def test_optimization_clips_each_group_and_steps_its_schedule():
    """Two groups, grad_clip 1: each group's gradient is scaled to norm 1 on its own (the small one
    is left alone); both LR schedules step; the disabled scaler passes the loss through."""
    w1, w2 = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
    groups = [OptimGroup("a", [w1]), OptimGroup("b", [w2], optimizer="adam", lr=0.1)]
    cfg = load_config(None, ["optim.optimizer=sgd", "optim.lr=1.0", "optim.momentum=0.0", "optim.epochs=2",
                             "optim.milestones=[1]", "optim.gamma=0.5"])
    opts = [build.build_optimizer(g, cfg.optim) for g in groups]
    optim = Optimization(groups, opts, [build.build_scheduler(o, cfg.optim, 1) for o in opts],
                         torch.amp.GradScaler("cuda", enabled=False), grad_clip=1.0)
    optim.step(3.0 * w1[0] + 4.0 * w1[1] + 0.5 * w2[0])      # grad (3, 4): norm 5 -> (0.6, 0.8)
    assert w1.tolist() == pytest.approx([-0.6, -0.8])
    assert w2.grad.tolist() == [0.5]
    assert isinstance(opts[1], torch.optim.Adam) and w2.tolist() == pytest.approx([-0.1])
    assert [o.param_groups[0]["lr"] for o in opts] == pytest.approx([0.5, 0.05])


def test_amp_only_on_cuda():
    assert amp_dtype("bf16", torch.device("cpu")) is None
    assert amp_dtype("fp16", torch.device("cuda", 0)) is torch.float16
    with pytest.raises(ValueError, match="train.amp"):
        amp_dtype("half", torch.device("cpu"))
    with pytest.raises(ValueError, match="distill.teacher.amp"):
        amp_dtype("half", torch.device("cpu"), "distill.teacher.amp")
