"""The training loop: `train_one_epoch` over a `Task`, and `train(cfg)` around it.

One loop for every method: a task (`posedistill/tasks/`) turns a batch into `{"loss": total,
"<part>": value, ...}`; the loop backpropagates `loss` once through one GradScaler path (a no-op
without fp16), clips and steps each of the task's optimiser groups, steps their per-iteration LR
schedules and calls the task's hooks (`set_epoch`, `after_step`). `train(cfg)` wires data, model,
codec and task from a recipe (`engine/build.py`), evaluates every `train.eval_interval` epochs
(`engine/evaluate.py`), keeps `best.pth` by AP (PCKh on MPII) and `last.pth` for `--resume`, and logs
to TensorBoard and the run log (`engine/runlog.py`).

Multi-process: `torchrun --nproc_per_node N -m posedistill.cli train CONFIG`; each rank trains on its
DistributedSampler shard with the task's trainable modules wrapped by `engine/dist.py`, rank 0 logs
and writes checkpoints.
"""
from __future__ import annotations

import math
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NoReturn

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler
from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from posedistill.data.topdown import SkippedSamples
from posedistill.data.transforms import normalize_images
from posedistill.engine import build, dist
from posedistill.engine.checkpoint import read_checkpoint, rng_state, save_checkpoint, set_rng_state
from posedistill.engine.config import Config, save_config
from posedistill.engine.evaluate import autocast, evaluate, primary_metric, use_progress
from posedistill.engine.runlog import RunLog, epoch_message, fmt_time, scale_report_lines
from posedistill.engine.stopping import HANDOVER_ERRORS, StopSignals, StopTraining, is_worker_failure
from posedistill.errors import CheckpointError, Interrupted, NonFiniteLossError, TrainingStopped
from posedistill.keypoints import KeypointMeta
from posedistill.tasks import OptimGroup, Task
from posedistill.tensors import amp_dtype


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


class Optimization:
    """The task's optimisers, one per `OptimGroup`, their per-iteration LR schedules and one GradScaler
    (enabled for fp16 only; disabled it passes everything through). `step(loss)` is the loop's only
    backward-and-step path: every group is clipped on its own (`grad_clip` > 0) and stepped under the
    same scaler."""

    def __init__(self, groups: list[OptimGroup], optimizers: list[torch.optim.Optimizer], schedulers: list,
                 scaler: torch.amp.GradScaler, grad_clip: float = 0.0):
        self.names = [g.name for g in groups]
        self.optimizers = optimizers
        self.schedulers = schedulers
        self.scaler = scaler
        self.grad_clip = float(grad_clip)

    @property
    def lr(self) -> float:
        """Learning rate of the first (main) group."""
        return self.optimizers[0].param_groups[0]["lr"]

    def step(self, loss: torch.Tensor) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        for opt in self.optimizers:
            if self.grad_clip > 0:
                self.scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], self.grad_clip)
            self.scaler.step(opt)
        self.scaler.update()
        for sched in self.schedulers:
            sched.step()

    def state_dict(self) -> dict:
        """Main group under "optimizer" / "scheduler"; further groups under "groups" by name."""
        return {"optimizer": self.optimizers[0].state_dict(), "scheduler": self.schedulers[0].state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
                "groups": {name: {"optimizer": o.state_dict(), "scheduler": s.state_dict()}
                           for name, o, s in zip(self.names[1:], self.optimizers[1:], self.schedulers[1:])}}

    def load_state_dict(self, state: dict, path: str = "<checkpoint>") -> None:
        self.optimizers[0].load_state_dict(state["optimizer"])
        self.schedulers[0].load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        groups = state.get("groups", {})
        for name, opt, sched in zip(self.names[1:], self.optimizers[1:], self.schedulers[1:]):
            if name not in groups:
                raise KeyError(f"{path}: no optimiser state for parameter group {name!r} (has {sorted(groups)})")
            opt.load_state_dict(groups[name]["optimizer"])
            sched.load_state_dict(groups[name]["scheduler"])


def _log_iteration(writer, out: dict, lr: float, iteration: int) -> None:
    for k, v in out.items():
        writer.add_scalar(f"train_iter/{k}", float(v.detach()), iteration)
    writer.add_scalar("train_iter/lr", lr, iteration)


def train_one_epoch(task: Task, loader: DataLoader, optim: Optimization, device: torch.device, *, epoch: int,
                    iteration: int = 0, amp: torch.dtype | None = None, channels_last: bool = False,
                    max_iters: int = 0, progress: bool = False, log_interval: int = 50, writer=None,
                    num_epochs: int | None = None, resume_at: int = 0, resume_sums: dict[str, float] | None = None,
                    should_stop: Callable[[], int] | None = None,
                    skips: SkippedSamples | None = None) -> tuple[dict[str, float], int]:
    """Train `task` for one pass over `loader` (or `max_iters` batches).

    resume_at / resume_sums: continue an epoch stopped after `resume_at` batches whose loss sums were
    `resume_sums` (those batches are loaded again and dropped: see `_open_batches`). should_stop: asked
    before every batch; a non-zero answer (the signal number) raises StopTraining there, as does a
    DataLoader worker dying while the next batch is awaited. skips: collects the samples' `skipped_from`.

    Returns (mean of every returned loss part over the epoch, iteration count after the epoch)."""
    task.train()
    total = len(loader) if max_iters <= 0 else min(max_iters, len(loader))
    sums: dict[str, float] = dict(resume_sums or {})
    count = resume_at
    bar = tqdm(total=total, initial=resume_at, desc=f"epoch {epoch + 1}" + (f"/{num_epochs}" if num_epochs else ""),
               disable=not progress, dynamic_ncols=True, leave=False)
    start = time.perf_counter()
    batches = None
    try:
        for i in range(resume_at, total):
            signum = should_stop() if should_stop is not None else 0
            if signum:
                raise StopTraining("stop requested", signum, i, total, iteration, sums)
            if batches is None:
                batches = _open_batches(loader, resume_at)
            batch = _next_batch(batches, i, total, iteration, sums)
            if batch is None:
                break
            if skips is not None and "skipped_from" in batch:
                skips.add(batch["skipped_from"])
            batch = to_device(batch, device, channels_last)
            with autocast(device, amp):
                if iteration == 0 and dist.is_main_process():     # a fresh run's first batch
                    for line in scale_report_lines(task.scale_report(batch)):
                        print(line, flush=True)
                out = task(batch)
            loss = out["loss"]
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"epoch {epoch + 1} iteration {iteration}: loss is {loss.item()}; "
                                         f"parts: { {k: float(v.detach()) for k, v in out.items()} }",
                                         hint="lower optim.lr or set optim.grad_clip; --resume from last.pth "
                                              "continues from the last completed epoch")
            optim.step(loss)
            task.after_step()
            iteration += 1
            count += 1
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.5f}", lr=f"{optim.lr:.2e}")
            if writer is not None and (iteration % log_interval == 0 or i == 0):
                _log_iteration(writer, out, optim.lr, iteration)
            if not progress and log_interval > 0 and (i + 1) % log_interval == 0 and dist.is_main_process():
                rate = (i + 1 - resume_at) / (time.perf_counter() - start)
                print(f"  epoch {epoch + 1} [{i + 1}/{total}] loss {float(loss.detach()):.6f} "
                      f"{rate:.2f} it/s eta {fmt_time((total - i - 1) / rate)}", flush=True)
    finally:
        close_batches(batches)
    bar.close()
    if count == 0:
        raise RuntimeError("the training loader produced no batches (empty dataset or batch_size too large "
                           "with drop_last)")
    means = {k: v / count for k, v in sums.items()}
    means["it_per_s"] = (count - resume_at) / max(time.perf_counter() - start, 1e-9)
    return means, iteration


def close_batches(batches) -> None:
    """Shut a DataLoader iterator's workers down now. Left to the interpreter's exit (a stopped run's
    traceback keeps the iterator alive), workers killed by the same SIGTERM as the run make its shutdown
    fail with ConnectionResetError during finalisation, and the process exits 1 instead of 143."""
    if isinstance(batches, _MultiProcessingDataLoaderIter):
        try:
            batches._shutdown_workers()
        except (OSError, EOFError):      # the workers are already gone: nothing left to shut down
            pass


def _open_batches(loader: DataLoader, skip: int):
    """An iterator over `loader` past its first `skip` batches, which are loaded and dropped: the sampler
    order (drawn from the loader's generator), the workers' RNG streams and, restored afterwards, this
    process's RNG (augmentation with workers=0) then continue exactly as in the run that trained on them."""
    batches = iter(loader)
    if skip:
        saved = rng_state()
        for _ in range(skip):
            next(batches)
        set_rng_state(saved)
    return batches


def _next_batch(batches, done: int, total: int, iteration: int, sums: dict[str, float]):
    """The next batch, None at the end; a DataLoader worker that died meanwhile becomes StopTraining at this
    iteration boundary, where the model and optimiser state are consistent."""
    try:
        return next(batches)
    except StopIteration:
        return None
    except (RuntimeError, *HANDOVER_ERRORS) as e:
        if is_worker_failure(e):
            raise StopTraining(str(e) or type(e).__name__, 0, done, total, iteration, sums) from e
        raise


# --------------------------------------------------------------------------------------------------
# train(cfg)


@dataclass
class Run:
    """Everything `train` sets up from a recipe."""
    cfg: Config
    info: dist.DistInfo
    model: nn.Module                  # the bare network (checkpoints, evaluation)
    codec: Any
    meta: KeypointMeta
    task: Task
    train_len: int
    train_loader: DataLoader
    train_gen: torch.Generator        # reseeded every epoch: a resumed run draws the same batches
    val_loader: DataLoader
    optim: Optimization
    amp: torch.dtype | None
    channels_last: bool
    skips: SkippedSamples             # training samples whose image could not be read

    @property
    def card(self) -> dict:
        """The model card every checkpoint carries (`build.model_card`)."""
        return build.model_card(self.cfg, self.meta, self.model)


@dataclass
class Progress:
    """Where training stands; what `last.pth` restores."""
    epoch: int = 0                    # epochs completed
    iteration: int = 0                # optimiser steps so far
    best_value: float = -math.inf
    best_epoch: int = -1
    history: list[dict] = field(default_factory=list)
    epoch_iter: int = 0               # batches of epoch `epoch` already trained (a mid-epoch last.pth)
    epoch_sums: dict[str, float] = field(default_factory=dict)  # their loss sums (this rank's)


def setup_run(cfg: Config, resuming: bool = False) -> Run:
    """Model, codec, datasets, task, loaders and optimisers of `cfg` on this process's device. `resuming`:
    the checkpoint's weights come next, so the recipe's initial weights are not read."""
    info = dist.init_distributed(cfg.train.device)
    device = info.device
    seed_everything(cfg.train.seed + info.rank, cfg.train.deterministic)
    meta = build.keypoint_meta(cfg.data)
    if cfg.data.format == "coco":
        meta.require_sigmas(f"data.dataset={cfg.data.dataset} ({cfg.data.train_ann})")  # evaluation needs them
    model = build.model_from_config(cfg, meta, with_init_weights=not resuming)
    input_size = tuple(cfg.data.input_size)
    build.check_output_shape(model, input_size)
    codec = build.build_codec(cfg.codec, input_size, model.output_stride, model.head_type, meta)
    train_set = build.build_dataset(cfg.data, codec, meta, train=True)
    val_set = build.build_dataset(cfg.data, codec, meta, train=False)
    channels_last = cfg.train.channels_last and device.type == "cuda"
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    task = build.build_task(cfg, model, codec, meta, train_set, device).to(device)
    if info.distributed:
        task.prepare_distributed(lambda module: dist.wrap_ddp(module, device))
    train_loader, train_gen = build.build_loader(train_set, cfg.train.batch_size, cfg.train.workers, train=True,
                                                 seed=cfg.train.seed, info=info,
                                                 drop_last=len(train_set) > cfg.train.batch_size)
    val_loader, _ = build.build_loader(val_set, cfg.eval.batch_size, cfg.train.workers, train=False,
                                       seed=cfg.train.seed, info=info)
    iters = len(train_loader) if cfg.train.max_iters_per_epoch <= 0 else \
        min(len(train_loader), cfg.train.max_iters_per_epoch)
    amp = amp_dtype(cfg.train.amp, device)
    groups = task.optim_groups()
    optimizers = [build.build_optimizer(g, cfg.optim) for g in groups]
    optim = Optimization(groups, optimizers, [build.build_scheduler(o, cfg.optim, iters) for o in optimizers],
                         torch.amp.GradScaler("cuda", enabled=amp == torch.float16), cfg.optim.grad_clip)
    return Run(cfg, info, model, codec, meta, task, len(train_set), train_loader, train_gen, val_loader, optim,
               amp, channels_last, SkippedSamples(train_set, cfg.train.max_skipped_fraction))


def restore(run: Run, path: str) -> Progress:
    """Continue from a `last.pth`: network, optimisers, schedules, scaler, task state, RNG, history."""
    state = read_checkpoint(path, map_location="cpu")
    missing = [k for k in ("model", "optimizer", "scheduler", "epoch", "iteration") if k not in state]
    if missing:
        raise CheckpointError(f"--resume {path}: not a training checkpoint (missing {missing})")
    build.check_card(path, state.get("card"), run.card)
    run.model.load_state_dict(state["model"])
    run.optim.load_state_dict(state, path)
    run.task.load_extra_state(state.get("task_extra") or {})
    rngs = state.get("rng", [])
    if rngs:
        set_rng_state(rngs[run.info.rank] if run.info.rank < len(rngs) else rngs[0])
    progress = Progress(int(state["epoch"]), int(state["iteration"]), float(state.get("best_metric", -math.inf)),
                        int(state.get("best_epoch", -1)), list(state.get("history", [])))
    progress.epoch_iter = int(state.get("epoch_iter", 0))
    if progress.epoch_iter:
        sums = state.get("epoch_sums") or []
        if len(sums) != run.info.world_size:
            raise CheckpointError(f"--resume {path}: saved in the middle of epoch {progress.epoch + 1} by "
                                  f"{len(sums)} process(es); resume it with the same number of processes "
                                  f"(this run has {run.info.world_size})")
        progress.epoch_sums = dict(sums[run.info.rank])
    return progress


def _evaluate(run: Run, out_dir: Path) -> dict[str, float]:
    cfg = run.cfg
    return evaluate(run.model, run.val_loader, run.codec, run.meta, run.info.device, data_format=cfg.data.format,
                    ann_file=cfg.data.val_ann, flip_test=cfg.eval.flip_test,
                    out_dir=out_dir / "eval" if run.info.is_main else None,
                    eval_kwargs=build.eval_kwargs(cfg.eval), head_boxes=cfg.data.val_head_boxes,
                    amp=run.amp, channels_last=run.channels_last, progress=use_progress(cfg.train.progress),
                    scales=cfg.eval.scales)


def run_epoch(run: Run, epoch: int, progress: Progress, writer,
              should_stop: Callable[[], int] | None = None) -> tuple[dict, dict[str, float], bool]:
    """Train one epoch (the rest of it after a mid-epoch last.pth) and evaluate when due; returns
    (log row, metrics or {}, improved best). StopTraining passes through (`train_one_epoch`)."""
    cfg, t0 = run.cfg, time.perf_counter()
    run.train_gen.manual_seed(cfg.train.seed * 100003 + epoch)
    if isinstance(run.train_loader.sampler, DistributedSampler):
        run.train_loader.sampler.set_epoch(epoch)
    run.task.set_epoch(epoch)
    lr = run.optim.lr
    means, progress.iteration = train_one_epoch(
        run.task, run.train_loader, run.optim, run.info.device, epoch=epoch, iteration=progress.iteration,
        amp=run.amp, channels_last=run.channels_last, max_iters=cfg.train.max_iters_per_epoch,
        progress=use_progress(cfg.train.progress), log_interval=cfg.train.log_interval, writer=writer,
        num_epochs=cfg.optim.epochs, resume_at=progress.epoch_iter, resume_sums=progress.epoch_sums,
        should_stop=should_stop, skips=run.skips)
    progress.epoch_iter, progress.epoch_sums = 0, {}
    run.skips.indices = set().union(*dist.all_gather_object(sorted(run.skips.indices)))
    means = dist.all_reduce_mean(means, run.info.device)
    row: dict[str, Any] = {"epoch": epoch + 1, "iteration": progress.iteration, "lr": lr,
                           "train_loss": means.pop("loss")}
    row.update({f"train_{k}": v for k, v in means.items()})
    row["epoch_time_s"] = time.perf_counter() - t0
    row.update(run.skips.summary())
    metrics: dict[str, float] = {}
    improved = False
    is_last = epoch + 1 == cfg.optim.epochs
    if cfg.train.eval_interval > 0 and ((epoch + 1) % cfg.train.eval_interval == 0 or is_last):
        metrics = _evaluate(run, Path(cfg.train.out_dir))
        row.update({f"val_{k}": v for k, v in metrics.items()})
        value = primary_metric(metrics)[1]
        if value > progress.best_value:
            progress.best_value, progress.best_epoch, improved = value, epoch + 1, True
    progress.epoch = epoch + 1
    progress.history.append(row)
    return row, metrics, improved


def _write_logs(run: Run, log: RunLog, writer, row: dict, metrics: dict[str, float], progress: Progress) -> None:
    log.rows = progress.history
    log.write()
    writer.add_scalar("train/loss", row["train_loss"], row["epoch"])
    writer.add_scalar("train/lr", row["lr"], row["epoch"])
    for k, v in row.items():
        if k.startswith("val_"):
            writer.add_scalar(f"val/{k[4:]}", v, row["epoch"])
    writer.flush()
    print(epoch_message(row, run.cfg.optim.epochs, metrics), flush=True)


def _train_state(run: Run, progress: Progress, rngs: list) -> dict:
    """What last.pth holds: everything `restore` needs to continue exactly."""
    return {"model": run.model.state_dict(), **run.optim.state_dict(), "rng": rngs, "epoch": progress.epoch,
            "iteration": progress.iteration, "best_metric": progress.best_value, "best_epoch": progress.best_epoch,
            "history": progress.history, "task_extra": run.task.extra_state(), "card": run.card}


def _save(run: Run, progress: Progress, rngs: list, metrics: dict[str, float], improved: bool) -> None:
    """last.pth (every `save_interval` epochs and the last), epoch_N.pth (`keep_every`), best.pth."""
    cfg, out_dir, epoch = run.cfg, Path(run.cfg.train.out_dir), progress.epoch
    state = _train_state(run, progress, rngs)
    if epoch % max(cfg.train.save_interval, 1) == 0 or epoch == cfg.optim.epochs:
        save_checkpoint(state, out_dir / "last.pth")
    if cfg.train.keep_every > 0 and epoch % cfg.train.keep_every == 0:
        save_checkpoint(state, out_dir / f"epoch_{epoch}.pth")
    if improved:
        save_checkpoint({"model": state["model"], "epoch": epoch, "iteration": progress.iteration,
                         "best_metric": progress.best_value, "metrics": metrics, "card": run.card},
                        out_dir / "best.pth")


_WORKER_HINT = ("a DataLoader worker killed by a signal was most likely ended by the out-of-memory killer "
                "(dmesg says); fewer train.workers or a smaller train.batch_size need less memory")


def _resume_hint(run: Run, progress: Progress, first_epoch: int, resume: str | None) -> str:
    """Where to continue from when the state at the moment of stopping could not be saved: the last
    epoch-end last.pth this run wrote, else the checkpoint it started from."""
    every = max(run.cfg.train.save_interval, 1)
    saved = [e for e in range(first_epoch + 1, progress.epoch + 1) if e % every == 0]
    if saved:
        path = Path(run.cfg.train.out_dir) / "last.pth"
        return f"continue from the end of epoch {saved[-1]} with --resume {path}"
    if resume:
        return f"continue with --resume {resume} (where this run started)"
    return "no checkpoint was written yet (no epoch completed): start again"


def _failure(e: RuntimeError, stop: StopSignals, progress: Progress, hint: str) -> Exception | None:
    """What to raise for `e` met away from an iteration boundary (inside a step, at evaluation or a save;
    that moment is not saved): a DataLoader worker death (Interrupted when a stop signal, which may have
    ended the workers, came first), a failed collective, or None for any other error."""
    what = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    where = f"in epoch {progress.epoch + 1}"
    if is_worker_failure(e) and stop.requested:
        return Interrupted(f"{stop.name}: training stopped {where} (the signal also ended DataLoader workers: "
                           f"{what}); that moment is not saved; {hint}", exit_code=stop.exit_code)
    if is_worker_failure(e):
        return TrainingStopped(f"training stopped {where}: a DataLoader worker process died ({what}) away from an "
                               f"iteration boundary, so that moment is not saved; {hint}", hint=_WORKER_HINT)
    if dist.is_collective_failure(e):
        return TrainingStopped(f"training stopped {where}: another process of the distributed run failed, was "
                               f"killed or stopped answering ({type(e).__name__}: {what}); {hint}, on every process")
    return None


def _stopped(run: Run, progress: Progress, e: StopTraining, stop: StopSignals, hint: str) -> NoReturn:
    """Save last.pth at the iteration boundary `e` stopped at, where every process stopped (a signal, agreed
    by all) or where the only process is (a dead DataLoader worker), then raise what the user is told:
    Interrupted (exit code 128 + signal; also when workers died of the signal) or TrainingStopped.
    `restore` continues that epoch exactly."""
    path = Path(run.cfg.train.out_dir) / "last.pth"
    where = f"epoch {progress.epoch + 1} after {e.done}/{e.total} iterations"
    if e.signum or not run.info.distributed:
        progress.iteration = e.iteration
        gathered = dist.all_gather_object((rng_state(), e.sums))
        if run.info.is_main:
            state = _train_state(run, progress, [g[0] for g in gathered])
            state.update(epoch_iter=e.done, epoch_sums=[g[1] for g in gathered])
            save_checkpoint(state, path)
        dist.barrier()
        hint = f"saved {path}; continue with --resume {path}"
    signum = e.signum or stop.signum
    if signum:
        raise Interrupted(f"{signal.Signals(signum).name}: training stopped at {where}; {hint}",
                          exit_code=128 + signum)
    raise TrainingStopped(f"training stopped at {where}: a DataLoader worker process died ({e.reason}); {hint}",
                          hint=_WORKER_HINT)


def train(cfg: Config, resume: str | None = None) -> dict:
    """Train per `cfg`; returns {"out_dir", "best_metric", "best_epoch", "last_metrics", "history",
    "last_checkpoint", "best_checkpoint", "iteration", "epochs", "time_s", "model"}."""
    t_start = time.perf_counter()
    run = setup_run(cfg, resuming=resume is not None)
    progress = restore(run, resume) if resume else Progress()
    out_dir = Path(cfg.train.out_dir)
    writer = log = None
    if run.info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
        writer = SummaryWriter(str(out_dir / "tb"))
        log = RunLog(out_dir, progress.history)
        print(f"[posedistill] training {cfg.model.name} ({sum(p.numel() for p in run.model.parameters()) / 1e6:.2f}M "
              f"params) on {run.train_len} instances, {run.info.world_size} process(es), device {run.info.device}, "
              f"epochs {progress.epoch + 1}..{cfg.optim.epochs}, out {out_dir}", flush=True)
    last_metrics: dict[str, float] = {}
    first_epoch = progress.epoch
    with StopSignals() as stop:  # SIGINT / SIGTERM: stop at the next iteration boundary, saving last.pth

        def should_stop() -> int:  # every process stops at the same boundary
            return dist.all_reduce_max(stop.signum or 0, run.info.device)

        try:
            for epoch in range(progress.epoch, cfg.optim.epochs):
                row, metrics, improved = run_epoch(run, epoch, progress, writer, should_stop)
                last_metrics = metrics or last_metrics
                rngs = dist.all_gather_object(rng_state())
                if run.info.is_main:
                    _write_logs(run, log, writer, row, metrics, progress)
                    _save(run, progress, rngs, metrics, improved)
                dist.barrier()
                run.skips.check(str(out_dir / "last.pth"))   # the same on every process (gathered)
        except StopTraining as e:
            _stopped(run, progress, e, stop, _resume_hint(run, progress, first_epoch, resume))
        except RuntimeError as e:
            failure = _failure(e, stop, progress, _resume_hint(run, progress, first_epoch, resume))
            if failure is None:
                raise
            raise failure from e
    if writer is not None:
        writer.close()
    if run.skips.indices and run.info.is_main:
        summary = run.skips.summary()
        print(f"[posedistill] skipped {summary['skipped']} training samples with unreadable images "
              f"({100 * summary['skipped_fraction']:.2f}%): {summary['skipped_examples']}", flush=True)
    best = progress.best_epoch > 0
    return {"out_dir": str(out_dir), "best_metric": progress.best_value if best else None,
            "best_epoch": progress.best_epoch, "last_metrics": last_metrics, "history": progress.history,
            "last_checkpoint": str(out_dir / "last.pth"), "best_checkpoint": str(out_dir / "best.pth") if best else None,
            "iteration": progress.iteration, "epochs": cfg.optim.epochs, "time_s": time.perf_counter() - t_start,
            "model": run.model}
