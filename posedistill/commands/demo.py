"""`posedistill demo`: the main job, end to end on built-in synthetic data, on a CPU.

1. generate a small synthetic multi-person train set and a held-out val set (posedistill.data.synthetic);
2. train a teacher (configs/demo_teacher.yaml);
3. train a small student alone (configs/demo_student.yaml);
4. train the same student distilled from the teacher (configs/demo_distill.yaml);
5. evaluate all three with COCO OKS AP on the val set (ground-truth boxes), profile them
   (params, GMACs via torch.utils.flop_counter, CPU images/s), draw their predictions on val images,
   and write OUT/report.md with the table, learning curves and the picture.

The three recipes are ordinary `posedistill train` recipes: the demo only fills in the data paths,
the run directories and the teacher checkpoint, so any part can be rerun by hand, e.g.

    posedistill train configs/demo_student.yaml data.train_ann=runs/demo/data/train/annotations/... 

`--fast` shrinks everything (a few images, one epoch, 64x64 input) for the test suite; its numbers
mean nothing.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from posedistill.data.synthetic import generate_dataset
from posedistill.engine import build
from posedistill.engine.config import Config, load_config
from posedistill.engine.dist import DistInfo
from posedistill.engine.evaluate import predict
from posedistill.engine.loop import train
from posedistill.tools.profile import profile_model
from posedistill.vis import draw_poses, save_grid

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"

# Sizes of the full demo (measured to fit 10 minutes on a 2-core CPU; see the README) and of --fast.
FULL = {"train_images": 240, "val_images": 40, "overrides": []}
FAST = {"train_images": 6, "val_images": 3,
        "overrides": ["optim.epochs=1", "optim.milestones=[]", "train.max_iters_per_epoch=2",
                      "train.batch_size=4", "train.workers=0", "data.input_size=[64, 64]",
                      "data.max_val_instances=6"]}


def _find_split(root: Path) -> tuple[str, str]:
    """(annotation file, image folder) of a dataset written by posedistill.data.synthetic."""
    anns = sorted((root / "annotations").glob("person_keypoints_*.json"))
    if len(anns) != 1:
        raise FileNotFoundError(f"{root}/annotations: expected one person_keypoints_*.json, found "
                                f"{[a.name for a in anns]}")
    return str(anns[0]), str(root / "images")


def generate_data(out: Path, n_train: int, n_val: int, seed: int = 0, difficulty: str = "easy"
                  ) -> dict[str, tuple[str, str]]:
    """Synthetic train (seed) and val (seed + 1) sets under OUT/data/{train,val}; kept if already there."""
    splits = {}
    for split, n, s in (("train", n_train, seed), ("val", n_val, seed + 1)):
        root = out / "data" / split
        if not (root / "annotations").is_dir():
            generate_dataset(str(root), num_images=n, seed=s, split=split, difficulty=difficulty)
        splits[split] = _find_split(root)
    return splits


def _data_overrides(splits: dict[str, tuple[str, str]]) -> list[str]:
    (train_ann, train_img), (val_ann, val_img) = splits["train"], splits["val"]
    return [f"data.train_ann={train_ann}", f"data.train_images={train_img}", f"data.val_ann={val_ann}",
            f"data.val_images={val_img}", "data.val_boxes=gt"]


def run_recipe(name: str, overrides: list[str]) -> tuple[Config, dict]:
    cfg = load_config(CONFIG_DIR / f"{name}.yaml", overrides)
    t0 = time.perf_counter()
    result = train(cfg)
    result["wall_s"] = time.perf_counter() - t0
    return cfg, result


def profile(model: torch.nn.Module, input_size: tuple[int, int], fast: bool) -> dict:
    model = model.cpu().eval()
    stats = profile_model(model, input_size=input_size, device="cpu", warmup=1, iters=2 if fast else 10,
                          batches=(8,))
    return {"params": stats["params"], "gmacs": stats["gmacs"], "images_per_s": stats["images_per_s"][8]}


@torch.no_grad()
def draw_predictions(runs: dict[str, tuple[Config, dict]], out_png: Path, num_images: int = 4) -> None:
    """One row per model, one column per val image: all people's predicted poses drawn."""
    first_cfg = next(iter(runs.values()))[0]
    ann = json.loads(Path(first_cfg.data.val_ann).read_text())
    image_ids = [im["id"] for im in ann["images"]][:num_images]
    files = {im["id"]: im["file_name"] for im in ann["images"]}
    meta = build.keypoint_meta(first_cfg.data)
    tiles, labels = [], []
    for label, (cfg, result) in runs.items():
        model = result["model"].cpu().eval()
        codec = build.build_codec(cfg.codec, tuple(cfg.data.input_size), model.output_stride, model.head_type)
        val_set = build.build_dataset(dataclasses.replace(cfg.data, max_val_instances=0), codec, meta, train=False)
        keep = [i for i, inst in enumerate(val_set.instances) if inst.image_id in image_ids]
        subset = torch.utils.data.Subset(val_set, keep)
        loader, _ = build.build_loader(subset, 16, 0, train=False, seed=0, info=DistInfo())
        preds = predict(model, loader, codec, meta, torch.device("cpu"), flip_test=cfg.eval.flip_test)
        for image_id in image_ids:
            img = cv2.imread(str(Path(cfg.data.val_images) / files[image_id]))
            kps = np.stack([p["keypoints"] for p in preds if p["image_id"] == image_id]) if any(
                p["image_id"] == image_id for p in preds) else np.zeros((0, meta.num_joints, 3), np.float32)
            tiles.append(draw_poses(img, kps, meta))
        labels.append(label)
    save_grid(tiles, str(out_png), cols=len(image_ids), row_labels=labels)


def plot_curves(runs: dict[str, tuple[Config, dict]], out_png: Path) -> None:
    import matplotlib  # imported here so that importing the command does not load matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    for label, (_, result) in runs.items():
        hist = result["history"]
        ax1.plot([r["epoch"] for r in hist], [r.get("train_supervised", r["train_loss"]) for r in hist], "o-",
                 ms=3, label=label)
        ev = [r for r in hist if "val_AP" in r]
        ax2.plot([r["epoch"] for r in ev], [r["val_AP"] for r in ev], "s-", ms=4, label=label)
    ax1.set(xlabel="epoch", ylabel="supervised train loss", yscale="log", title="training loss")
    ax2.set(xlabel="epoch", ylabel="COCO AP (val)", title="held-out AP")
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


def write_report(out: Path, rows: list[dict], runs: dict, info: dict) -> Path:
    lines = ["# posedistill demo report", "",
             f"Synthetic multi-person data (posedistill.data.synthetic): {info['train_images']} training images "
             f"({info['train_instances']} people), {info['val_images']} held-out val images "
             f"({info['val_instances']} people); ground-truth boxes; COCO OKS AP via pycocotools.",
             f"Machine: {info['machine']}; total wall time {info['total_s']:.0f} s "
             f"(data {info['data_s']:.0f} s). Command: `{info['command']}`.", "",
             "| model | recipe | AP | AP50 | AR | params (M) | GMACs | GFLOPs | CPU images/s | train time (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | `configs/{r['recipe']}.yaml` | {r['AP']:.3f} | {r['AP50']:.3f} | {r['AR']:.3f} | "
                     f"{r['params'] / 1e6:.2f} | {r['gmacs']:.3f} | {2 * r['gmacs']:.3f} | {r['images_per_s']:.0f} | "
                     f"{r['train_s']:.0f} |")
    lines += ["", f"GMACs / GFLOPs at the demo input size {info['input_size'][0]}x{info['input_size'][1]} (width x height), "
              "batch 1, counted with torch.utils.flop_counter (GFLOPs = 2 x GMACs; papers' \"GFLOPs\" are usually "
              "GMACs). Images/s: batch 8 on this CPU, float32.", ""]
    lines += ["## Learning curves", "", "![learning curves](learning_curves.png)", "",
              "## Predictions on held-out images", "", "Rows: " + ", ".join(runs) + ".", "",
              "![predictions](predictions.png)", "",
              "## Reproduce", "", "Each row's run directory (config.yaml, log.csv, TensorBoard, best.pth):", ""]
    for r in rows:
        lines.append(f"- {r['label']}: `{r['out_dir']}`")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def train_all(out: Path, common: list[str]) -> tuple[dict[str, tuple[Config, dict]], list[tuple[str, str]]]:
    """Teacher, student alone, student distilled from the teacher's best checkpoint, in that order;
    returns the runs by label and the (label, recipe) plan."""
    plan = [("teacher", "demo_teacher", [f"train.out_dir={out / 'teacher'}"]),
            ("student alone", "demo_student", [f"train.out_dir={out / 'student'}"])]
    runs: dict[str, tuple[Config, dict]] = {}
    for label, recipe, extra in plan:
        print(f"[demo] training {label} ({recipe}.yaml)", flush=True)
        runs[label] = run_recipe(recipe, common + extra)
    teacher_cfg, teacher_res = runs["teacher"]
    teacher_ckpt = teacher_res["best_checkpoint"] or teacher_res["last_checkpoint"]
    extra = [f"train.out_dir={out / 'student_distilled'}", f"distill.teacher.model={teacher_cfg.model.name}",
             f"distill.teacher.model_kwargs={json.dumps(teacher_cfg.model.kwargs)}",
             f"distill.teacher.checkpoint={teacher_ckpt}"]
    print("[demo] training student distilled from the teacher (demo_distill.yaml)", flush=True)
    plan.append(("student distilled", "demo_distill", extra))
    runs["student distilled"] = run_recipe("demo_distill", common + extra)
    return runs, [(label, recipe) for label, recipe, _ in plan]


def _counts(splits: dict[str, tuple[str, str]]) -> dict[str, int]:
    """Images and labelled people of each split."""
    info = {}
    for split in ("train", "val"):
        ann = json.loads(Path(splits[split][0]).read_text())
        info[f"{split}_images"] = len(ann["images"])
        info[f"{split}_instances"] = sum(1 for a in ann["annotations"] if a.get("num_keypoints", 1) > 0)
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="posedistill demo", description="Main job on synthetic data: teacher, "
                                "student alone, distilled student; writes OUT/report.md.")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--fast", action="store_true", help="tiny smoke run for tests (numbers are meaningless)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    size = FAST if args.fast else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"[demo] generating synthetic data in {out / 'data'}", flush=True)
    splits = generate_data(out, size["train_images"], size["val_images"])
    data_s = time.perf_counter() - t_start
    runs, plan = train_all(out, _data_overrides(splits) + size["overrides"])
    rows = []
    for label, recipe in plan:
        cfg, result = runs[label]
        m = result["last_metrics"]
        prof = profile(result["model"], tuple(cfg.data.input_size), args.fast)
        rows.append({"label": label, "recipe": recipe, "AP": m["AP"], "AP50": m["AP50"], "AR": m["AR"],
                     "train_s": result["wall_s"], "out_dir": result["out_dir"], **prof})
    plot_curves(runs, out / "learning_curves.png")
    draw_predictions(runs, out / "predictions.png")
    info = {**_counts(splits),
            "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
                       f"torch {torch.__version__}",
            "total_s": time.perf_counter() - t_start, "data_s": data_s, "input_size": runs["teacher"][0].data.input_size,
            "command": "posedistill demo" + (" --fast" if args.fast else "") + (f" --out {args.out}" if args.out != "runs/demo" else "")}
    (out / "results.json").write_text(json.dumps({"rows": rows, "info": info}, indent=1, default=str))
    report = write_report(out, rows, runs, info)
    for r in rows:
        print(f"[demo] {r['label']:<18} AP {r['AP']:.3f}  AP50 {r['AP50']:.3f}  AR {r['AR']:.3f}  "
              f"{r['params'] / 1e6:.2f}M params  {r['gmacs']:.3f} GMACs  {r['images_per_s']:.0f} img/s")
    print(f"[demo] done in {info['total_s']:.0f} s; report: {report}", flush=True)
    distilled = runs["student distilled"][1]
    student = distilled["best_checkpoint"] or distilled["last_checkpoint"]
    print(f"[demo] use it: posedistill predict {splits['val'][1]} -c {student} --out {out / 'predict'} "
          f"(export / serve: README, 'Use a trained model')", flush=True)
    return 0
