"""What several commands share: loading a recipe at the command edge."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import torch

from posedistill.engine.config import Config, ConfigError, load_config
from posedistill.errors import MissingFileError
from posedistill.inference.pipeline import BACKENDS, DETECTOR_PRESETS, PosePipeline, build_pipeline
from posedistill.inference.predictor import LoadedModel


def load_recipe(path: str, overrides: list[str], check: Callable[[Config, str], None] | None = None) -> Config:
    """The recipe at `path` with `overrides`, checked by `check(cfg, path)` when given, with torch's CPU
    threads set from `train.threads`. A bad recipe raises ConfigError (cli.py prints it in one line)."""
    cfg = load_config(path, overrides)
    if check is not None:
        check(cfg, path)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    return cfg


def require_teacher(cfg: Config, config_path: str) -> None:
    """`load_recipe` check of the commands that need a trained teacher (distill, cache)."""
    if not cfg.distill.teacher.model:
        raise ConfigError(f"{config_path}: distill.teacher.model is empty; this command needs a teacher "
                          f"(use `posedistill train` for plain training)")
    if not cfg.distill.teacher.checkpoint:
        raise ConfigError(f"{config_path}: distill.teacher.checkpoint is empty; give the teacher's weights file")
    if not Path(cfg.distill.teacher.checkpoint).is_file():
        raise ConfigError(f"{config_path}: distill.teacher.checkpoint {cfg.distill.teacher.checkpoint}: no such file")


def parse_size(text: str) -> tuple[int, int]:
    """argparse type of a WIDTHxHEIGHT option (`640x480`)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x480, got {text!r}") from None
    return w, h


def add_pipeline_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `predict` and `serve` that choose the model's backend and the person boxes."""
    p.add_argument("--config", metavar="C", help="recipe (only for checkpoints without a model card)")
    p.add_argument("--boxes", metavar="whole|FILE", help="person boxes: the whole image (default) or a COCO "
                   "detections JSON (entries matched by file_name, or image_id = numeric file name)")
    p.add_argument("--detector", metavar="F.onnx", help="an ONNX person detector (YOLOX / RTMDet layouts: "
                   "docs/person_detectors.md)")
    p.add_argument("--det-preset", choices=tuple(DETECTOR_PRESETS), default="yolox",
                   help="the detector's pre/post-processing: yolox (raw pixels, decoded boxes), yolox-grid "
                   "(YOLOX's default export, grid decoded here), rtmdet (MMDetection mean/std)")
    p.add_argument("--det-input", type=parse_size, metavar="WxH",
                   help="detector input size, for detectors exported with a dynamic input (e.g. 640x640)")
    p.add_argument("--det-score-thr", type=float, default=0.3, help="drop person boxes scoring below this")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="auto: ONNX Runtime for .onnx files")
    p.add_argument("--device", default="cpu", help="PyTorch device (cpu, cuda)")
    p.add_argument("--flip", action="store_true", help="flip test (average with the mirrored crop)")
    p.add_argument("--batch-size", type=int, default=16, help="crops per forward pass")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = library default)")


def pipeline_from_args(model: str, args: argparse.Namespace) -> tuple[PosePipeline, LoadedModel]:
    """`build_pipeline` from `add_pipeline_arguments`' options."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, []) if args.config else None   # ConfigError is a ValueError
    if not Path(model).is_file():
        raise MissingFileError(f"model file {model} does not exist")
    return build_pipeline(model, cfg, boxes=args.boxes, detector=args.detector, score_thr=args.det_score_thr,
                          detector_input=args.det_input, detector_preset=args.det_preset,
                          backend=args.backend, device=args.device, flip_test=args.flip,
                          batch_size=args.batch_size, threads=args.threads)
