"""The training engine on tiny synthetic data: loss goes down, --resume is exact, eval gives AP."""
from __future__ import annotations

import json
import math

import pytest
import torch

from posedistill.engine import build
from posedistill.engine.checkpoint import load_checkpoint
from posedistill.engine.config import load_config
from posedistill.engine.train import SupervisedTask, amp_dtype_for, crop_to_image, main_eval, main_train, train


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A tiny synthetic COCO-format train / val pair (shared by the tests of this file)."""
    from posedistill.engine.demo import generate_data

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
    a = load_checkpoint(tmp_path / "full" / "last.pth")
    b = load_checkpoint(tmp_path / "resumed" / "last.pth")
    assert a["epoch"] == b["epoch"] == 3 and a["iteration"] == b["iteration"] == 6
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"])
    assert a["scheduler"] == b["scheduler"]
    assert [r["train_loss"] for r in full["history"]] == [r["train_loss"] for r in resumed["history"]]


def test_train_and_eval_commands(synth, tmp_path, capsys):
    out = tmp_path / "cli"
    args = tiny_overrides(synth, out, "optim.epochs=2", "train.eval_interval=1")
    assert main_train([str(_write_recipe(tmp_path)), *args]) == 0
    log = json.loads((out / "log.json").read_text())
    assert [r["epoch"] for r in log] == [1, 2]
    assert all(0.0 <= r["val_AP"] <= 1.0 for r in log)
    best = load_checkpoint(out / "best.pth")
    assert best["best_metric"] == max(r["val_AP"] for r in log)
    capsys.readouterr()
    assert main_eval([str(out / "config.yaml"), "--checkpoint", str(out / "best.pth"), "--flip",
                      "--boxes", "gt"]) == 0
    printed = capsys.readouterr().out
    ap_line = [ln for ln in printed.splitlines() if ln.split()[:1] == ["AP"]]
    assert ap_line and 0.0 <= float(ap_line[0].split()[1]) <= 1.0


def _write_recipe(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("model:\n  name: simplebaseline_r18\noptim:\n  lr: 2.0e-3\n")
    return path


def test_typo_on_command_line_is_rejected(tmp_path, capsys):
    assert main_train([str(_write_recipe(tmp_path)), "optim.lr_stpe=3"]) == 2
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


def test_crop_to_image_inverts_affine():
    affine = torch.tensor([[[0.5, 0.0, -10.0], [0.0, 0.5, -4.0]]]).numpy()
    crop = torch.tensor([[[5.0, 6.0], [0.0, 0.0]]]).numpy()
    img = crop_to_image(crop, affine)
    assert img[0].tolist() == [[30.0, 20.0], [20.0, 8.0]]


def test_supervised_task_maps_head_types():
    class Heat(torch.nn.Module):
        head_type = "heatmap"

        def forward(self, x):
            return x[:, :2]

    class Loss(torch.nn.Module):
        def forward(self, *args):
            self.args = args
            return args[0].sum() * 0

    loss = Loss()
    task = SupervisedTask(Heat(), loss)
    batch = {"image": torch.ones(1, 3, 4, 4), "heatmaps": torch.zeros(1, 2, 4, 4), "target_weight": torch.ones(1, 2)}
    out = task(batch)
    assert set(out) == {"loss", "supervised"} and len(loss.args) == 3
    assert list(task.optim_parameters()) == []


def test_amp_only_on_cuda():
    assert amp_dtype_for("bf16", torch.device("cpu")) is None
    assert amp_dtype_for("fp16", torch.device("cuda", 0)) is torch.float16
    with pytest.raises(ValueError, match="train.amp"):
        amp_dtype_for("half", torch.device("cpu"))
