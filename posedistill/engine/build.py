"""Config -> objects. The only place where a `Config` section becomes explicit constructor arguments.

Each builder reads one section and calls a plain constructor / factory with keyword arguments, so
everything it builds can also be built by hand without a recipe.
"""
from __future__ import annotations

import bisect

import torch
import torch.nn as nn

from posedistill.engine.config import CodecConfig, DataConfig, EvalConfig, LossConfig, ModelConfig, OptimConfig
from posedistill.keypoints import KeypointMeta


def build_model(cfg: ModelConfig, num_joints: int, input_size: tuple[int, int] | None = None,
                split_ratio: float | None = None) -> nn.Module:
    """The registered model `cfg.name` with `cfg.kwargs`, optionally initialised from `cfg.checkpoint`.

    Factories that take `input_size` / `split_ratio` (SimCC heads) get the recipe's
    `data.input_size` / `codec.simcc_split_ratio` unless `model.kwargs` sets them."""
    import inspect

    from posedistill.models import MODELS, create_model

    kwargs = dict(cfg.kwargs)
    kwargs.setdefault("num_joints", num_joints)
    params = inspect.signature(MODELS[cfg.name]).parameters if cfg.name in MODELS else {}
    if input_size is not None and "input_size" in params:
        kwargs.setdefault("input_size", tuple(input_size))
    if split_ratio is not None and "split_ratio" in params:
        kwargs.setdefault("split_ratio", split_ratio)
    try:
        model = create_model(cfg.name, **kwargs)
    except TypeError as e:
        raise TypeError(f"model {cfg.name!r} rejected model.kwargs {cfg.kwargs}: {e}") from None
    if cfg.checkpoint:
        from posedistill.models.weights import load_checkpoint as load_weights

        load_weights(model, cfg.checkpoint, strict=cfg.strict)
    return model


def model_from_config(cfg, num_joints: int, with_init_weights: bool = True) -> nn.Module:
    """`build_model` for a whole Config (passes input size and SimCC split ratio through)."""
    import dataclasses

    mcfg = cfg.model if with_init_weights else dataclasses.replace(cfg.model, checkpoint="")
    return build_model(mcfg, num_joints, tuple(cfg.data.input_size), cfg.codec.simcc_split_ratio)


def heatmap_size_for(input_size: tuple[int, int], output_stride: int) -> tuple[int, int]:
    w, h = input_size
    if w % output_stride or h % output_stride:
        raise ValueError(f"data.input_size {list(input_size)} is not divisible by the model's output stride "
                         f"{output_stride}")
    return w // output_stride, h // output_stride


@torch.no_grad()
def check_output_shape(model: nn.Module, input_size: tuple[int, int]) -> None:
    """Fail early, with the sizes, when a heatmap model's output does not match input_size / stride
    (e.g. a ResNet-based model needs inputs divisible by 32)."""
    if getattr(model, "head_type", "heatmap") != "heatmap":
        return
    w, h = input_size
    stride = getattr(model, "output_stride", 4)
    was_training = model.training
    model.eval()
    out = model(torch.zeros(1, 3, h, w, device=next(model.parameters()).device))
    model.train(was_training)
    expected = (h // stride, w // stride)
    if tuple(out.shape[-2:]) != expected:
        raise ValueError(f"data.input_size {list(input_size)} (width, height): the model gives heatmaps "
                         f"{tuple(out.shape[-2:])} (h, w) but the codec expects {expected} = input / stride "
                         f"{stride}; use an input size the backbone divides evenly (multiples of 32 for ResNet)")


def build_codec(cfg: CodecConfig, input_size: tuple[int, int], output_stride: int, head_type: str):
    """HeatmapCodec or SimCCCodec matching the model's head (`model.head_type`)."""
    if cfg.type != head_type:
        raise ValueError(f"codec.type is {cfg.type!r} but the model's head_type is {head_type!r}; "
                         f"set codec.type={head_type}")
    if cfg.type == "heatmap":
        from posedistill.codecs.heatmap import HeatmapCodec

        return HeatmapCodec(input_size=tuple(input_size), heatmap_size=heatmap_size_for(input_size, output_stride),
                            sigma=cfg.sigma, dark=cfg.dark, udp=cfg.udp)
    if cfg.type == "simcc":
        from posedistill.codecs.simcc import SimCCCodec

        return SimCCCodec(input_size=tuple(input_size), split_ratio=cfg.simcc_split_ratio, sigma=cfg.simcc_sigma)
    raise ValueError(f"codec.type: expected heatmap | simcc, got {cfg.type!r}")


def build_loss(cfg: LossConfig, head_type: str) -> nn.Module:
    """JointsMSELoss for heatmaps, SimCCKLLoss for SimCC."""
    if head_type == "heatmap":
        from posedistill.losses.heatmap import JointsMSELoss

        return JointsMSELoss(use_target_weight=cfg.use_target_weight)
    if head_type == "simcc":
        from posedistill.losses.simcc import SimCCKLLoss

        return SimCCKLLoss(use_target_weight=cfg.use_target_weight)
    raise ValueError(f"no supervised loss for head_type {head_type!r} (expected heatmap | simcc)")


def _limit(instances: list, n: int) -> list:
    return instances[:n] if n > 0 else instances


def load_instances(cfg: DataConfig, meta: KeypointMeta, train: bool, boxes: str | None = None) -> list:
    """PersonInstance list of the training or validation split.

    boxes: "gt" or a detection results JSON for the validation split (default: cfg.val_boxes)."""
    ann = cfg.train_ann if train else cfg.val_ann
    images = cfg.train_images if train else cfg.val_images
    boxes = "gt" if train else (boxes if boxes is not None else cfg.val_boxes)
    if cfg.format == "coco":
        from posedistill.data.coco import load_coco_instances

        det = None if boxes == "gt" else boxes
        inst = load_coco_instances(ann, images, meta=meta, detections=det,
                                   det_score_thr=cfg.det_score_thr)
    elif cfg.format == "mpii":
        from posedistill.data.mpii import load_mpii_instances

        inst = load_mpii_instances(ann, images, meta=meta,
                                   head_boxes=(cfg.val_head_boxes or None) if not train else None)
    else:
        raise ValueError(f"data.format: expected coco | mpii, got {cfg.format!r}")
    return _limit(inst, cfg.max_train_instances if train else cfg.max_val_instances)


def build_dataset(cfg: DataConfig, codec, meta: KeypointMeta, train: bool, boxes: str | None = None):
    """TopDownDataset over the split's instances, with augmentation only for training. Samples
    carry uint8 images, a quarter of the bytes for loader workers to hand over; the engine
    normalises them on the device (`train.to_device` for training, `train.predict` for evaluation)."""
    from posedistill.data.topdown import TopDownDataset

    instances = load_instances(cfg, meta, train, boxes)
    return TopDownDataset(instances, meta, codec, input_size=tuple(cfg.input_size), train=train,
                          flip=cfg.flip, scale_factor=cfg.scale_factor, rotation_factor=cfg.rotation_factor,
                          rotation_prob=cfg.rotation_prob, half_body_prob=cfg.half_body_prob,
                          half_body_min_joints=cfg.half_body_min_joints, use_joint_weights=cfg.use_joint_weights,
                          normalize=False, cache_mb=0.0 if train else cfg.val_cache_mb)


def build_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("the task has no trainable parameters")
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"optim.optimizer: expected adam | adamw | sgd, got {cfg.optimizer!r}")


class MultiStepWarmup:
    """LR factor at an iteration: linear warm-up over the first `warmup_iters` iterations, then
    x gamma at every epoch milestone (MultiStepLR by epoch). Stepped once per iteration, so the
    schedule only needs the iteration count (what the checkpoint stores) to resume exactly."""

    def __init__(self, milestones: list[int], gamma: float, iters_per_epoch: int, warmup_iters: int = 0,
                 warmup_ratio: float = 0.001):
        if iters_per_epoch < 1:
            raise ValueError(f"iters_per_epoch must be >= 1, got {iters_per_epoch}")
        if list(milestones) != sorted(milestones):
            raise ValueError(f"optim.milestones must be increasing, got {list(milestones)}")
        self.milestones = list(milestones)
        self.gamma = gamma
        self.iters_per_epoch = iters_per_epoch
        self.warmup_iters = warmup_iters
        self.warmup_ratio = warmup_ratio

    def __call__(self, iteration: int) -> float:
        epoch = iteration // self.iters_per_epoch
        factor = self.gamma ** bisect.bisect_right(self.milestones, epoch)
        if iteration < self.warmup_iters:
            factor *= self.warmup_ratio + (1.0 - self.warmup_ratio) * iteration / self.warmup_iters
        return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, iters_per_epoch: int):
    """Per-iteration LambdaLR implementing warm-up + MultiStepLR (see `MultiStepWarmup`)."""
    if any(m > cfg.epochs for m in cfg.milestones):
        raise ValueError(f"optim.milestones {cfg.milestones} go past optim.epochs={cfg.epochs}")
    rule = MultiStepWarmup(cfg.milestones, cfg.gamma, iters_per_epoch, cfg.warmup_iters, cfg.warmup_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, rule)


def eval_kwargs(cfg: EvalConfig) -> dict:
    """Keyword arguments of evaluate_coco from the eval section."""
    return dict(oks_nms_thr=cfg.oks_nms_thr, keypoint_score_thr=cfg.keypoint_score_thr, soft_nms=cfg.soft_nms)
