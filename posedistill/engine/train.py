"""The training loop, evaluation, and the `posedistill train` / `posedistill eval` commands.

One loop for every method: a *task* turns a batch into `{"loss": total, "<part>": value, ...}`
(`SupervisedTask` here, `DistillationTask` in `posedistill.distill`), the loop backprops `loss`,
clips, steps the optimiser and the per-iteration LR schedule, and calls `task.aux_step()` when the
task has one. `train(cfg)` wires data, model, codec, loss and task from a recipe (see
`engine/config.py`), evaluates every `train.eval_interval` epochs, keeps `best.pth` by AP (PCKh on
MPII) and `last.pth` for `--resume`, and logs to TensorBoard, `log.csv`, `log.json` and
`learning_curve.png` in the run directory.

Multi-process: start with `torchrun --nproc_per_node N -m posedistill.cli train CONFIG`; each rank
trains on its DistributedSampler shard, rank 0 logs and writes checkpoints, predictions are gathered
across ranks before scoring.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler

from posedistill.data.transforms import normalize_images
from posedistill.engine import build, dist
from posedistill.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from posedistill.engine.config import Config, ConfigError, load_config, save_config
from posedistill.keypoints import KeypointMeta, get_meta


# --------------------------------------------------------------------------------------------------
# task


class SupervisedTask(nn.Module):
    """Plain supervised training: model output vs. codec targets.

    heatmap head: loss(heatmaps_pred [B,K,h,w], batch["heatmaps"], batch["target_weight"])
    simcc head:   loss((x_logits, y_logits), batch["simcc_x"], batch["simcc_y"], batch["target_weight"])
    """

    def __init__(self, model: nn.Module, loss: nn.Module, loss_weight: float = 1.0):
        super().__init__()
        self.model = model
        self.loss = loss
        self.loss_weight = loss_weight

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.model(batch["image"])
        value = supervised_loss(self.loss, getattr(self.model, "head_type", "heatmap"), out, batch)
        return {"loss": self.loss_weight * value, "supervised": value.detach()}

    def optim_parameters(self) -> Iterable[nn.Parameter]:
        return self.model.parameters()


def supervised_loss(loss: nn.Module, head_type: str, out: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Call the supervised loss with the target tensors its head type needs."""
    if head_type == "heatmap":
        return loss(out.float(), batch["heatmaps"], batch["target_weight"])
    if head_type == "simcc":
        x_logits, y_logits = out
        return loss(x_logits.float(), y_logits.float(), batch["simcc_x"], batch["simcc_y"], batch["target_weight"])
    raise ValueError(f"unknown head_type {head_type!r} (expected heatmap | simcc)")


# --------------------------------------------------------------------------------------------------
# helpers


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    else:
        torch.backends.cudnn.benchmark = True


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: derive NumPy / random seeds from the worker's torch seed, which
    the loader draws from its seeded generator, so augmentation is reproducible with workers > 0."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def to_device(batch: dict, device: torch.device, channels_last: bool = False) -> dict:
    """Tensors of a batch moved to `device`; a uint8 `image` (TopDownDataset(normalize=False)) is
    normalised there."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if k == "image":
                v = normalize_images(v)
                if channels_last:
                    v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


def amp_dtype_for(amp: str, device: torch.device) -> torch.dtype | None:
    """bf16 / fp16 autocast on CUDA only; None means full precision."""
    if amp not in ("none", "bf16", "fp16"):
        raise ValueError(f"train.amp: expected none | bf16 | fp16, got {amp!r}")
    if amp == "none" or device.type != "cuda":
        return None
    return torch.bfloat16 if amp == "bf16" else torch.float16


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _use_progress(enabled: bool) -> bool:
    return enabled and dist.is_main_process() and sys.stderr.isatty()


def _fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# --------------------------------------------------------------------------------------------------
# one epoch


def train_one_epoch(task: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, scheduler,
                    device: torch.device, *, epoch: int, iteration: int = 0, scaler=None,
                    amp_dtype: torch.dtype | None = None, channels_last: bool = False, grad_clip: float = 0.0,
                    max_iters: int = 0, progress: bool = False, log_interval: int = 50, writer=None,
                    num_epochs: int | None = None) -> tuple[dict[str, float], int]:
    """Train `task` for one pass over `loader` (or `max_iters` batches).

    Returns (mean of every returned loss part over the epoch, iteration count after the epoch).
    The scheduler is stepped once per iteration; `task.aux_step()` runs after each optimiser step."""
    from tqdm import tqdm

    task.train()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    total = len(loader) if max_iters <= 0 else min(max_iters, len(loader))
    sums: dict[str, float] = {}
    count = 0
    bar = tqdm(total=total, desc=f"epoch {epoch + 1}" + (f"/{num_epochs}" if num_epochs else ""),
               disable=not progress, dynamic_ncols=True, leave=False)
    start = time.perf_counter()
    for i, batch in enumerate(loader):
        if i >= total:
            break
        batch = to_device(batch, device, channels_last)
        with _autocast(device, amp_dtype):
            out = task(batch)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"epoch {epoch + 1} iteration {iteration}: loss is {loss.item()}; "
                                     f"parts: { {k: float(v) for k, v in out.items()} }")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            if grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
        scheduler.step()
        if hasattr(task, "aux_step"):
            task.aux_step()
        iteration += 1
        count += 1
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss.detach()):.5f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        if writer is not None and (iteration % log_interval == 0 or i == 0):
            for k, v in out.items():
                writer.add_scalar(f"train_iter/{k}", float(v.detach()), iteration)
            writer.add_scalar("train_iter/lr", optimizer.param_groups[0]["lr"], iteration)
        if not progress and log_interval > 0 and (i + 1) % log_interval == 0 and dist.is_main_process():
            elapsed = time.perf_counter() - start
            rate = (i + 1) / elapsed
            print(f"  epoch {epoch + 1} [{i + 1}/{total}] loss {float(loss.detach()):.6f} "
                  f"{rate:.2f} it/s eta {_fmt_time((total - i - 1) / rate)}", flush=True)
    bar.close()
    if count == 0:
        raise RuntimeError("the training loader produced no batches (empty dataset or batch_size too large "
                           "with drop_last)")
    means = {k: v / count for k, v in sums.items()}
    means["it_per_s"] = count / max(time.perf_counter() - start, 1e-9)
    return means, iteration


# --------------------------------------------------------------------------------------------------
# evaluation


def crop_to_image(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Map crop-pixel points [B, K, 2] back to image pixels with the inverse of each sample's
    image->crop affine [B, 2, 3]."""
    full = np.zeros((affine.shape[0], 3, 3), dtype=np.float64)
    full[:, :2] = affine
    full[:, 2, 2] = 1.0
    inv = np.linalg.inv(full)[:, :2]                                     # [B, 2, 3]
    homo = np.concatenate([points, np.ones_like(points[..., :1])], axis=-1)  # [B, K, 3]
    return np.einsum("bij,bkj->bki", inv, homo)


def _average_outputs(a: Any, b: Any) -> Any:
    if isinstance(a, (tuple, list)):
        return type(a)(_average_outputs(x, y) for x, y in zip(a, b))
    return (a + b) * 0.5


def _to_float(out: Any) -> Any:
    if isinstance(out, (tuple, list)):
        return type(out)(_to_float(o) for o in out)
    return out.float()


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, codec, meta: KeypointMeta, device: torch.device, *,
            flip_test: bool = False, amp_dtype: torch.dtype | None = None, channels_last: bool = False,
            progress: bool = False) -> list[dict]:
    """Predictions in image pixels for every instance of `loader`'s dataset, gathered from all ranks.

    Each prediction: {"index", "image_id", "ann_id", "keypoints" [K, 3] (x, y, score), "center",
    "scale", "area", "bbox_score", "head_size"}. Ranks' padded duplicates are dropped by "index"."""
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    flip_index = meta.flip_index
    preds: list[dict] = []
    for batch in tqdm(loader, desc="eval", disable=not progress, leave=False, dynamic_ncols=True):
        images = normalize_images(batch["image"].to(device, non_blocking=True))
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp_dtype):
            out = _to_float(model(images))
            if flip_test:
                out_flip = _to_float(model(images.flip(3)))
        if flip_test:
            out = _average_outputs(out, codec.flip_back(out_flip, flip_index))
        coords, scores = codec.decode(out)
        coords = crop_to_image(np.asarray(coords, dtype=np.float64), batch["affine"].double().numpy())
        scores = np.asarray(scores, dtype=np.float64)
        for b in range(coords.shape[0]):
            preds.append({
                "index": int(batch["index"][b]),
                "image_id": int(batch["image_id"][b]),
                "ann_id": int(batch["ann_id"][b]),
                "keypoints": np.concatenate([coords[b], scores[b][:, None]], axis=1).astype(np.float32),
                "center": batch["center"][b].numpy().astype(np.float32),
                "scale": batch["scale"][b].numpy().astype(np.float32),
                "area": float(batch["area"][b]),
                "bbox_score": float(batch["bbox_score"][b]),
                "head_size": float(batch["head_size"][b]) if "head_size" in batch else 0.0,
            })
    model.train(was_training)
    gathered = dist.all_gather_object(preds)
    unique: dict[int, dict] = {}
    for rank_preds in gathered:
        for p in rank_preds:
            unique.setdefault(p["index"], p)
    return [unique[i] for i in sorted(unique)]


def score_predictions(predictions: list[dict], meta: KeypointMeta, data_format: str, ann_file: str,
                      out_dir: str | Path | None = None, eval_kwargs: dict | None = None,
                      head_boxes: str = "") -> dict[str, float]:
    """COCO-style OKS AP/AR (COCO, CrowdPose, custom) or MPII PCKh@0.5 of image-pixel predictions."""
    if data_format == "mpii":
        from posedistill.evaluation.pckh import evaluate_pckh

        return evaluate_pckh(predictions, ann_file, head_boxes=head_boxes or None)
    from posedistill.evaluation.coco_eval import evaluate_coco

    return evaluate_coco(predictions, ann_file, meta=meta, out_dir=str(out_dir) if out_dir else None,
                         **(eval_kwargs or {}))


def primary_metric(metrics: dict[str, float]) -> tuple[str, float]:
    """The number `best.pth` is chosen by: AP for OKS metrics, PCKh mean for MPII."""
    for key in ("AP", "PCKh", "Mean"):
        if key in metrics:
            return key, float(metrics[key])
    raise KeyError(f"no AP / PCKh in metrics {sorted(metrics)}")


def evaluate(model: nn.Module, loader: DataLoader, codec, meta: KeypointMeta, device: torch.device, *,
             data_format: str, ann_file: str, flip_test: bool = False, out_dir: str | Path | None = None,
             eval_kwargs: dict | None = None, head_boxes: str = "", amp_dtype: torch.dtype | None = None,
             channels_last: bool = False, progress: bool = False) -> dict[str, float]:
    """Predict on every rank, score on rank 0, and return the metrics on every rank."""
    preds = predict(model, loader, codec, meta, device, flip_test=flip_test, amp_dtype=amp_dtype,
                    channels_last=channels_last, progress=progress)
    metrics = None
    if dist.is_main_process():
        metrics = score_predictions(preds, meta, data_format, ann_file, out_dir, eval_kwargs, head_boxes)
        metrics = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.floating))}
        metrics["instances"] = float(len(preds))  # people predicted, all ranks together
    return dist.broadcast_object(metrics)


# --------------------------------------------------------------------------------------------------
# logging


class RunLog:
    """Per-epoch rows written to log.csv, log.json and learning_curve.png (rank 0 only)."""

    def __init__(self, out_dir: Path, rows: list[dict] | None = None):
        self.out_dir = out_dir
        self.rows: list[dict] = list(rows or [])

    def append(self, row: dict) -> None:
        self.rows.append(row)
        self.write()

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
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


# --------------------------------------------------------------------------------------------------
# train()


def make_loader(dataset, batch_size: int, workers: int, *, train: bool, seed: int, info: dist.DistInfo,
                drop_last: bool = False) -> tuple[DataLoader, torch.Generator]:
    g = torch.Generator()
    g.manual_seed(seed)
    sampler = None
    if info.distributed:
        sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=train,
                                     seed=seed, drop_last=False)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=(train and sampler is None), sampler=sampler,
                        num_workers=workers, pin_memory=info.device.type == "cuda", drop_last=drop_last,
                        worker_init_fn=seed_worker, generator=g, persistent_workers=False)
    return loader, g


def build_task(cfg: Config, model: nn.Module, loss: nn.Module, codec, meta: KeypointMeta, train_set,
               device: torch.device) -> nn.Module:
    """SupervisedTask, or the distillation package's task when a teacher is configured."""
    if cfg.distill.teacher.model:
        from posedistill.distill.task import build_distillation_task

        return build_distillation_task(cfg.distill, student=model, supervised_loss=loss, codec=codec, meta=meta,
                                       train_set=train_set, epochs=cfg.optim.epochs, device=device)
    if cfg.distill.terms:
        raise ConfigError(f"distill.terms {cfg.distill.terms} are set but distill.teacher.model is empty")
    return SupervisedTask(model, loss, loss_weight=cfg.loss.loss_weight)


def _task_extra_state(task: nn.Module) -> dict:
    """State a task keeps besides the student (e.g. an adversarial discriminator and its optimiser)."""
    fn = getattr(task, "extra_state_dict", None)
    return fn() if callable(fn) else {}


def train(cfg: Config, resume: str | None = None) -> dict:
    """Train per `cfg`; returns {"out_dir", "best_metric", "best_epoch", "last_metrics", "history",
    "last_checkpoint", "best_checkpoint", "iteration", "epochs", "time_s"}."""
    t_start = time.perf_counter()
    info = dist.init_distributed(cfg.train.device)
    device = info.device
    out_dir = Path(cfg.train.out_dir)
    seed = cfg.train.seed
    seed_everything(seed + info.rank, cfg.train.deterministic)

    meta = get_meta(cfg.data.dataset)
    model = build.model_from_config(cfg, meta.num_joints)
    head_type = getattr(model, "head_type", "heatmap")
    input_size = tuple(cfg.data.input_size)
    build.check_output_shape(model, input_size)
    codec = build.build_codec(cfg.codec, input_size, getattr(model, "output_stride", 4), head_type)
    loss = build.build_loss(cfg.loss, head_type)
    train_set = build.build_dataset(cfg.data, codec, meta, train=True)
    val_set = build.build_dataset(cfg.data, codec, meta, train=False)

    on_cuda = device.type == "cuda"
    channels_last = cfg.train.channels_last and on_cuda
    amp_dtype = amp_dtype_for(cfg.train.amp, device)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    bare_model = model
    if info.distributed:
        model = dist.ModelDDP(model, device_ids=[device.index] if on_cuda else None)
    task = build_task(cfg, model, loss, codec, meta, train_set, device).to(device)

    train_loader, train_gen = make_loader(train_set, cfg.train.batch_size, cfg.train.workers, train=True,
                                          seed=seed, info=info, drop_last=len(train_set) > cfg.train.batch_size)
    val_loader, _ = make_loader(val_set, cfg.eval.batch_size, cfg.train.workers, train=False, seed=seed, info=info)
    iters_per_epoch = len(train_loader) if cfg.train.max_iters_per_epoch <= 0 else \
        min(len(train_loader), cfg.train.max_iters_per_epoch)
    optimizer = build.build_optimizer(task.optim_parameters(), cfg.optim)
    scheduler = build.build_scheduler(optimizer, cfg.optim, iters_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    start_epoch, iteration = 0, 0
    best_value, best_epoch = -math.inf, -1
    history: list[dict] = []
    if resume:
        state = load_checkpoint(resume, map_location="cpu")
        missing = [k for k in ("model", "optimizer", "scheduler", "epoch", "iteration") if k not in state]
        if missing:
            raise KeyError(f"--resume {resume}: not a training checkpoint (missing {missing})")
        bare_model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state and state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        if state.get("task_extra") and hasattr(task, "load_extra_state_dict"):
            task.load_extra_state_dict(state["task_extra"])
        start_epoch, iteration = int(state["epoch"]), int(state["iteration"])
        best_value, best_epoch = float(state.get("best_metric", -math.inf)), int(state.get("best_epoch", -1))
        history = list(state.get("history", []))
        rngs = state.get("rng", [])
        if rngs:
            set_rng_state(rngs[info.rank] if info.rank < len(rngs) else rngs[0])

    writer = None
    log = None
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out_dir / "tb"))
        log = RunLog(out_dir, history)
        print(f"[posedistill] training {cfg.model.name} ({sum(p.numel() for p in bare_model.parameters()) / 1e6:.2f}M "
              f"params) on {len(train_set)} instances, {info.world_size} process(es), device {device}, "
              f"epochs {start_epoch + 1}..{cfg.optim.epochs}, out {out_dir}", flush=True)

    progress = _use_progress(cfg.train.progress)
    metrics: dict[str, float] = {}
    epochs = cfg.optim.epochs
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        # Reseed the shuffling / worker seeds from (seed, epoch): a resumed run draws the same batches.
        train_gen.manual_seed(seed * 100003 + epoch)
        if isinstance(train_loader.sampler, DistributedSampler):
            train_loader.sampler.set_epoch(epoch)
        if hasattr(task, "set_epoch"):
            task.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        means, iteration = train_one_epoch(task, train_loader, optimizer, scheduler, device, epoch=epoch,
                                           iteration=iteration, scaler=scaler, amp_dtype=amp_dtype,
                                           channels_last=channels_last, grad_clip=cfg.optim.grad_clip,
                                           max_iters=cfg.train.max_iters_per_epoch, progress=progress,
                                           log_interval=cfg.train.log_interval, writer=writer, num_epochs=epochs)
        means = dist.all_reduce_mean(means, device)
        row: dict[str, Any] = {"epoch": epoch + 1, "iteration": iteration, "lr": lr,
                               "train_loss": means.pop("loss")}
        row.update({f"train_{k}": v for k, v in means.items()})
        row["epoch_time_s"] = time.perf_counter() - t0
        is_last = epoch + 1 == epochs
        improved = False
        if cfg.train.eval_interval > 0 and ((epoch + 1) % cfg.train.eval_interval == 0 or is_last):
            metrics = evaluate(bare_model, val_loader, codec, meta, device, data_format=cfg.data.format,
                               ann_file=cfg.data.val_ann, flip_test=cfg.eval.flip_test,
                               out_dir=out_dir / "eval" if info.is_main else None,
                               eval_kwargs=build.eval_kwargs(cfg.eval), head_boxes=cfg.data.val_head_boxes,
                               amp_dtype=amp_dtype, channels_last=channels_last, progress=progress)
            row.update({f"val_{k}": v for k, v in metrics.items()})
            _, value = primary_metric(metrics)
            if value > best_value:
                best_value, best_epoch, improved = value, epoch + 1, True
        rngs = dist.all_gather_object(rng_state())
        history.append(row)
        if info.is_main:
            log.rows = history
            log.write()
            writer.add_scalar("train/loss", row["train_loss"], epoch + 1)
            writer.add_scalar("train/lr", lr, epoch + 1)
            for k, v in row.items():
                if k.startswith("val_"):
                    writer.add_scalar(f"val/{k[4:]}", v, epoch + 1)
            writer.flush()
            msg = f"[posedistill] epoch {epoch + 1}/{epochs} loss {row['train_loss']:.6f} lr {lr:.2e} " \
                  f"{means['it_per_s']:.2f} it/s {row['epoch_time_s']:.1f}s " \
                  f"eta {_fmt_time(row['epoch_time_s'] * (epochs - epoch - 1))}"
            if metrics and "val_" + primary_metric(metrics)[0] in row:
                msg += "  " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k in ("AP", "AP50", "AR", "PCKh", "Mean"))
            print(msg, flush=True)
            state = {"model": bare_model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                     "rng": rngs, "epoch": epoch + 1, "iteration": iteration, "best_metric": best_value,
                     "best_epoch": best_epoch, "history": history, "task_extra": _task_extra_state(task),
                     "model_name": cfg.model.name}
            if (epoch + 1) % max(cfg.train.save_interval, 1) == 0 or is_last:
                save_checkpoint(state, out_dir / "last.pth")
            if cfg.train.keep_every > 0 and (epoch + 1) % cfg.train.keep_every == 0:
                save_checkpoint(state, out_dir / f"epoch_{epoch + 1}.pth")
            if improved:
                save_checkpoint({"model": state["model"], "epoch": epoch + 1, "iteration": iteration,
                                 "best_metric": best_value, "metrics": metrics, "model_name": cfg.model.name},
                                out_dir / "best.pth")
        dist.barrier()

    if writer is not None:
        writer.close()
    result = {"out_dir": str(out_dir), "best_metric": best_value if best_epoch > 0 else None,
              "best_epoch": best_epoch, "last_metrics": metrics, "history": history,
              "last_checkpoint": str(out_dir / "last.pth"),
              "best_checkpoint": str(out_dir / "best.pth") if best_epoch > 0 else None,
              "iteration": iteration, "epochs": epochs, "time_s": time.perf_counter() - t_start,
              "model": bare_model}
    return result


# --------------------------------------------------------------------------------------------------
# commands


def _set_threads(n: int) -> None:
    if n > 0:
        torch.set_num_threads(n)


def run_training_cli(argv: list[str] | None, prog: str, description: str,
                     check: Callable[[Config, str], None] | None = None) -> int:
    """Shared command line of `posedistill train` and `posedistill distill`: parse CONFIG, overrides,
    --resume and --out, run `check(cfg, config_path)` (raises ConfigError/ValueError) and train."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("config", help="recipe YAML (configs/*.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted.key=value overrides, e.g. optim.lr=5e-4 train.batch_size=16")
    p.add_argument("--resume", metavar="CKPT", help="continue from a last.pth exactly where it stopped")
    p.add_argument("--out", metavar="DIR", help="run directory (overrides train.out_dir)")
    args = p.parse_intermixed_args(argv)
    overrides = list(args.overrides) + ([f"train.out_dir={args.out}"] if args.out else [])
    try:
        cfg = load_config(args.config, overrides)
        if check is not None:
            check(cfg, args.config)
    except (ConfigError, ValueError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    _set_threads(cfg.train.threads)
    try:
        result = train(cfg, resume=args.resume)
    finally:
        dist.cleanup()
    if dist.is_main_process():
        best = result["best_metric"]
        print(f"[posedistill] done in {result['time_s']:.1f}s; best {best if best is None else round(best, 4)} "
              f"at epoch {result['best_epoch']}; checkpoints in {result['out_dir']}")
    return 0


def main_train(argv: list[str] | None = None) -> int:
    return run_training_cli(argv, "posedistill train", "Train a model from a YAML recipe. Multi-GPU / "
                            "multi-process: torchrun --nproc_per_node N -m posedistill.cli train ...")


def load_model_weights(model: nn.Module, path: str) -> None:
    """Weights from a posedistill checkpoint ({"model": ...}, loaded strictly) or, failing that, an
    official / MMPose release through posedistill.models.weights (prefixes handled, keys named)."""
    state = load_checkpoint(path)
    if isinstance(state.get("model"), dict):
        model.load_state_dict(state["model"])
        return
    from posedistill.models.weights import load_checkpoint as load_weights

    load_weights(model, path, strict=True)


def run_eval(cfg: Config, checkpoint: str, *, flip: bool | None = None, boxes: str | None = None,
             out_dir: str | None = None) -> dict[str, float]:
    """Evaluate `checkpoint` on the recipe's validation split; returns the metrics (all ranks)."""
    info = dist.init_distributed(cfg.train.device)
    device = info.device
    meta = get_meta(cfg.data.dataset)
    model = build.model_from_config(cfg, meta.num_joints, with_init_weights=False)
    load_model_weights(model, checkpoint)
    head_type = getattr(model, "head_type", "heatmap")
    codec = build.build_codec(cfg.codec, tuple(cfg.data.input_size), getattr(model, "output_stride", 4), head_type)
    val_set = build.build_dataset(cfg.data, codec, meta, train=False, boxes=boxes)
    loader, _ = make_loader(val_set, cfg.eval.batch_size, cfg.train.workers, train=False, seed=cfg.train.seed,
                            info=info)
    model.to(device)
    channels_last = cfg.train.channels_last and device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    out = Path(out_dir) if out_dir else Path(checkpoint).resolve().parent / "eval"
    return evaluate(model, loader, codec, meta, device, data_format=cfg.data.format, ann_file=cfg.data.val_ann,
                    flip_test=cfg.eval.flip_test if flip is None else flip,
                    out_dir=out if info.is_main else None, eval_kwargs=build.eval_kwargs(cfg.eval),
                    head_boxes=cfg.data.val_head_boxes, amp_dtype=amp_dtype_for(cfg.train.amp, device),
                    channels_last=channels_last, progress=_use_progress(cfg.train.progress))


def main_eval(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="posedistill eval", description="Evaluate a checkpoint: COCO-style AP "
                                "(COCO, CrowdPose, synthetic) or PCKh (MPII) on the recipe's validation split.")
    p.add_argument("config", help="recipe YAML the checkpoint was trained with")
    p.add_argument("overrides", nargs="*", help="dotted.key=value overrides")
    p.add_argument("--checkpoint", required=True, metavar="F", help="best.pth / last.pth or released weights")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="flip test (default: eval.flip_test of the recipe)")
    p.add_argument("--boxes", metavar="gt|FILE", help="person boxes: ground truth or a detection results JSON")
    p.add_argument("--out", metavar="DIR", help="where results JSON goes (default: CHECKPOINT_DIR/eval)")
    args = p.parse_intermixed_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"posedistill eval: {e}", file=sys.stderr)
        return 2
    _set_threads(cfg.train.threads)
    try:
        metrics = run_eval(cfg, args.checkpoint, flip=args.flip, boxes=args.boxes, out_dir=args.out)
    finally:
        dist.cleanup()
    if dist.is_main_process():
        width = max(map(len, metrics)) if metrics else 0
        for k, v in metrics.items():
            print(f"{k:<{width}}  {v:.4f}")
    return 0
