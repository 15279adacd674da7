"""Images/s of one training step: plain student training, distillation with the teacher run online,
and distillation from cached teacher outputs (memmap read + batched affine warp), side by side on
the same batches in one run. Target: cached within 1.15x of plain training.

    .venv/bin/python benchmarks/distill_step.py                       # CPU-sized defaults
    .venv/bin/python benchmarks/distill_step.py --device cuda --input 192x256 --batch 64 --amp bf16

Batches are synthetic tensors already in memory (data loading is the same for all three and is
measured by benchmarks/data_pipeline.py); each sample gets a random index into the cache and a random
flip / scale / rotation `aug_affine`, so the cached path does all of its real work. The three modes are
timed in interleaved rounds and the median per-step time is reported.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from posedistill.distill.cache import TeacherOutputCache  # noqa: E402
from posedistill.distill.config import DistillConfig, auto_gt_weight  # noqa: E402
from posedistill.distill.teacher import FrozenTeacher  # noqa: E402
from posedistill.distill.terms import TermContext, build_terms  # noqa: E402
from posedistill.engine.build import build_optimizer  # noqa: E402
from posedistill.engine.config import OptimConfig  # noqa: E402
from posedistill.engine.loop import Optimization  # noqa: E402
from posedistill.keypoints import COCO  # noqa: E402
from posedistill.losses.heatmap import JointsMSELoss  # noqa: E402
from posedistill.models import create_model  # noqa: E402
from posedistill.tasks import DistillationTask, SupervisedTask, Task  # noqa: E402


def _aug_affine(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Random flip / scale / rotation about the crop centre, as TopDownDataset's aug_affine."""
    s = float(np.clip(rng.normal() * 0.35 + 1, 0.65, 1.35))
    r = float(np.clip(rng.normal() * 45, -90, 90)) if rng.random() < 0.6 else 0.0
    c, sn = math.cos(math.radians(r)) / s, math.sin(math.radians(r)) / s
    fx = -1.0 if rng.random() < 0.5 else 1.0
    lin = np.array([[c * fx, sn], [-sn * fx, c]])
    ctr = np.array([w / 2, h / 2])
    return np.concatenate([lin, (ctr - lin @ ctr)[:, None]], axis=1), fx < 0


def make_batches(n: int, batch: int, input_size, heatmap_size, k: int, cache_len: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    w, h = input_size
    out = []
    for _ in range(n):
        affs, flips = zip(*(_aug_affine(rng, w, h) for _ in range(batch)))
        out.append({"image": torch.randn(batch, 3, h, w), "heatmaps": torch.rand(batch, k, heatmap_size[1], heatmap_size[0]),
                    "target_weight": torch.ones(batch, k), "index": torch.from_numpy(rng.integers(0, cache_len, batch)),
                    "aug_affine": torch.from_numpy(np.stack(affs)).float(), "flipped": torch.tensor(flips)})
    return out


def write_cache(directory: Path, n: int, k: int, heatmap_size, input_size) -> TeacherOutputCache:
    """A cache of the right shape filled with random float16 (reading it costs what real outputs cost)."""
    directory.mkdir(parents=True, exist_ok=True)
    shape = (n, k, heatmap_size[1], heatmap_size[0])
    mm = np.memmap(directory / "heatmaps.f16", dtype=np.float16, mode="w+", shape=shape)
    rng = np.random.default_rng(0)
    for i in range(0, n, 64):
        mm[i:i + 64] = rng.random((min(64, n - i),) + shape[1:], dtype=np.float32).astype(np.float16)
    mm.flush()
    (directory / "meta.json").write_text(json.dumps({
        "version": 1, "head_type": "heatmap", "num_instances": n, "input_size": list(input_size), "udp": False,
        "split_ratio": 0.0, "flip_index": COCO.flip_index.tolist(), "arrays": {"heatmaps": list(shape)}}))
    return TeacherOutputCache(directory)


def optimization(task: Task) -> Optimization:
    """The training loop's optimiser step for `task` (Adam 1e-4 per group, constant LR, no scaler)."""
    groups = task.optim_groups()
    opts = [build_optimizer(g, OptimConfig(lr=1e-4)) for g in groups]
    return Optimization(groups, opts, [torch.optim.lr_scheduler.LambdaLR(o, lambda i: 1.0) for o in opts],
                        torch.amp.GradScaler("cuda", enabled=False))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--student", default="simplebaseline_r18")
    p.add_argument("--teacher", default="simplebaseline_r50")
    p.add_argument("--input", default="96x128", help="WIDTHxHEIGHT (default 96x128, the synthetic recipes)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=4, help="steps per mode per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--terms", nargs="+", default=["logit"], help="output terms used by both distillation modes")
    p.add_argument("--cache-len", type=int, default=2048, help="instances in the benchmark cache")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="none", help="student autocast on CUDA: none | bf16 | fp16")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    w, h = (int(v) for v in args.input.lower().split("x"))
    k = COCO.num_joints
    torch.manual_seed(0)
    student = create_model(args.student, num_joints=k).to(device)
    stride = student.output_stride
    hm = (w // stride, h // stride)
    teacher = FrozenTeacher(create_model(args.teacher, num_joints=k), amp="bf16").to(device)
    sup = JointsMSELoss(use_target_weight=True)
    cfg = DistillConfig(terms={t: {"logit": 0.5, "mapd": 1.0, "adversarial": 0.3}[t] for t in args.terms})
    batches = make_batches(args.iters, args.batch, (w, h), hm, k, args.cache_len)
    amp = None if device.type != "cuda" or args.amp == "none" else (torch.bfloat16 if args.amp == "bf16" else torch.float16)

    with tempfile.TemporaryDirectory() as tmp:
        cache = write_cache(Path(tmp) / "cache", args.cache_len, k, hm, (w, h))
        ctx = TermContext(student, teacher, COCO, (w, h), device)
        tasks = {
            "plain": SupervisedTask(student, sup, ("heatmaps",)),
            "online": DistillationTask(student, teacher, sup, ("heatmaps",), terms=build_terms(cfg, ctx),
                                       weights=dict(cfg.terms), gt_weight=auto_gt_weight(cfg)),
            "cached": DistillationTask(student, None, sup, ("heatmaps",), terms=build_terms(cfg, ctx),
                                       weights=dict(cfg.terms), gt_weight=auto_gt_weight(cfg), cache=cache),
        }
        optims = {name: optimization(t.to(device)) for name, t in tasks.items()}

        def step(name: str, batch: dict) -> None:
            task = tasks[name].to(device)
            batch = {kk: v.to(device, non_blocking=True) for kk, v in batch.items()}
            with torch.autocast(device_type=device.type, dtype=amp, enabled=amp is not None):
                loss = task(batch)["loss"]
            optims[name].step(loss)
            task.after_step()

        def sync():
            if device.type == "cuda":
                torch.cuda.synchronize()

        for name in tasks:                                  # warm-up: one step each
            tasks[name].train()
            step(name, batches[0])
        times: dict[str, list[float]] = {name: [] for name in tasks}
        names = list(tasks)
        for r in range(args.rounds):
            for name in names[r % 3:] + names[:r % 3]:       # rotate the order: no mode always runs first
                sync()
                t0 = time.perf_counter()
                for b in batches:
                    step(name, b)
                sync()
                times[name].append((time.perf_counter() - t0) / len(batches))
    per = {name: statistics.median(v) for name, v in times.items()}
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"student {args.student}, teacher {args.teacher}, input {w}x{h}, batch {args.batch}, terms {args.terms}, "
          f"{args.rounds} rounds x {args.iters} steps, median")
    print(f"{'mode':<8} {'ms/step':>9} {'images/s':>9} {'x plain':>8}")
    for name in tasks:
        print(f"{name:<8} {per[name] * 1e3:9.1f} {args.batch / per[name]:9.1f} {per[name] / per['plain']:8.3f}")
    ratio = per["cached"] / per["plain"]
    print(f"cached / plain = {ratio:.3f} (target <= 1.15: {'met' if ratio <= 1.15 else 'NOT met'}); "
          f"online / plain = {per['online'] / per['plain']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
