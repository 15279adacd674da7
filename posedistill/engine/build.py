"""Config -> objects. The only place where a `Config` section becomes explicit constructor arguments.

Each builder reads one section and calls a plain constructor / factory with keyword arguments, so
everything it builds can also be built by hand without a recipe: the network, its codec and
supervised loss, datasets and loaders, the task (supervised, or distillation with its teacher, terms
and teacher-output cache), optimisers and LR schedules.
"""
from __future__ import annotations

import bisect
import dataclasses
import os
import random

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler

from posedistill.errors import CheckpointError, InputError
from posedistill import __version__
from posedistill.codecs import CoordinateCodec, HeatmapCodec, SimCCCodec
from posedistill.codecs.grouping import GroupingParams
from posedistill.codecs.paf import PafCodec, PafLayout, coco_paf_layout, paf_layout_from_meta
from posedistill.data.bottomup import BottomUpDataset
from posedistill.data.coco import load_coco_instances
from posedistill.data.mpii import load_mpii_instances
from posedistill.data.topdown import TopDownDataset
from posedistill.distill.cache import TeacherOutputCache, build_cache, cache_directory
from posedistill.distill.config import DistillConfig, TeacherConfig, auto_gt_weight
from posedistill.distill.teacher import FrozenTeacher
from posedistill.distill.terms import TermContext, build_terms
from posedistill.engine import dist
from posedistill.engine.config import (CodecConfig, Config, DataConfig, EvalConfig, LossConfig, ModelConfig,
                                       OptimConfig, RefineConfig, config_to_dict)
from posedistill.data.coco import read_json
from posedistill.keypoints import DATASET_NAMES, KeypointMeta, get_meta, meta_from_category
from posedistill.losses.heatmap import JointsMSELoss
from posedistill.losses.paf import MultiStagePafLoss
from posedistill.losses.refine import ProgressivePoseLoss
from posedistill.losses.simcc import SimCCKLLoss
from posedistill.models import create_model_at
from posedistill.models.weights import load_weights
from posedistill.tasks import BottomUpTask, DistillationTask, OptimGroup, RefinerTask, SupervisedTask, Task

def build_model(cfg: ModelConfig, num_joints: int, input_size: tuple[int, int] | None = None,
                split_ratio: float | None = None, skeleton: list | None = None) -> nn.Module:
    """The registered model `cfg.name` with `cfg.kwargs`, optionally initialised from `cfg.checkpoint`.

    Factories that take `input_size` / `split_ratio` (SimCC heads) or `skeleton` (the IGP-GCN refiner)
    get the recipe's `data.input_size` / `codec.simcc_split_ratio` / keypoint skeleton unless
    `model.kwargs` sets them."""
    kwargs = dict(cfg.kwargs)
    kwargs.setdefault("num_joints", num_joints)
    try:
        model = create_model_at(cfg.name, kwargs, input_size, split_ratio, skeleton)
    except TypeError as e:
        raise InputError(f"model {cfg.name!r} rejected model.kwargs {cfg.kwargs}: {e}") from None
    if cfg.checkpoint:
        load_weights(model, cfg.checkpoint, strict=cfg.strict)
    return model


# model.kwargs that only initialise weights (a local ImageNet file): a model rebuilt to receive a
# checkpoint's weights does not read them, so the file may be gone by then
INIT_ONLY_KWARGS = ("imagenet_weights",)


def model_from_config(cfg, meta: KeypointMeta, with_init_weights: bool = True) -> nn.Module:
    """`build_model` for a whole Config (passes input size, SimCC split ratio and skeleton through); with
    `refine.student` the stage-1 checkpoint fills the refined model's student (strictly).
    with_init_weights=False: the caller loads a checkpoint next, so neither model.checkpoint nor the
    initialisation-only kwargs (INIT_ONLY_KWARGS) are read."""
    mcfg = cfg.model if with_init_weights else dataclasses.replace(
        cfg.model, checkpoint="", kwargs={k: v for k, v in cfg.model.kwargs.items() if k not in INIT_ONLY_KWARGS})
    model = build_model(mcfg, meta.num_joints, tuple(cfg.data.input_size), cfg.codec.simcc_split_ratio,
                        [list(e) for e in meta.skeleton])
    if with_init_weights and cfg.refine.student:
        if model.head_type != "coords":
            raise InputError(f"refine.student is set but model {cfg.model.name!r} has no refiner (head "
                             f"{model.head_type!r}); use model.name=simcc_igp_gcn with model.kwargs.student")
        load_weights(model.student, cfg.refine.student, strict=True)
    return model


def model_card(cfg: Config, meta: KeypointMeta, model: nn.Module) -> dict:
    """What a checkpoint (and an ONNX export) records so that it can be rebuilt and decoded without
    its recipe: model name and arguments, head, input size, codec, keypoint set, the whole resolved
    recipe and the toolkit version. Plain values only (checkpoints load `weights_only`)."""
    return {"format": 1, "posedistill_version": __version__,
            "model": {"name": cfg.model.name, "kwargs": dict(cfg.model.kwargs)},
            "head_type": model.head_type, "output_stride": int(model.output_stride),
            "num_joints": meta.num_joints, "input_size": [int(v) for v in cfg.data.input_size],
            "codec": dataclasses.asdict(cfg.codec), "keypoints": meta.to_dict(), "config": config_to_dict(cfg)}


def describe_card(card: dict) -> str:
    """A model card in a few words: `elpn_v2 (17 joints, heatmap 24x16)`."""
    w, h = card.get("input_size", (0, 0))
    stride = int(card.get("output_stride", 1)) or 1
    head = f"heatmap {w // stride}x{h // stride}" if card.get("head_type") == "heatmap" else \
        f"{card.get('head_type')} at {w}x{h} input"
    kwargs = card.get("model", {}).get("kwargs") or {}
    return f"{card.get('model', {}).get('name')}{f' {kwargs}' if kwargs else ''} ({card.get('num_joints')} joints, {head})"


def check_card(path: str, card: dict | None, wanted: dict) -> None:
    """Refuse, in words, a checkpoint whose card names another network than the one `wanted` describes
    (model, arguments, joints, head; the input size too for SimCC, whose heads depend on it). Files
    without a card (official releases) are left to the key-by-key check."""
    if not card:
        return
    fields = [card.get("model"), card.get("num_joints"), card.get("head_type")]
    expected = [wanted.get("model"), wanted.get("num_joints"), wanted.get("head_type")]
    if wanted.get("head_type") == "simcc":
        fields.append(card.get("input_size"))
        expected.append(wanted.get("input_size"))
    if fields != expected:
        raise CheckpointError(f"checkpoint {path} holds {describe_card(card)}; the config builds "
                              f"{describe_card(wanted)}",
                              hint="use the recipe the checkpoint was trained with (predict / export / serve "
                                   "need none: they read it from the checkpoint)")


def heatmap_size_for(input_size: tuple[int, int], output_stride: int) -> tuple[int, int]:
    w, h = input_size
    if w % output_stride or h % output_stride:
        raise InputError(f"data.input_size {list(input_size)} is not divisible by the model's output stride "
                         f"{output_stride}")
    return w // output_stride, h // output_stride


@torch.no_grad()
def check_output_shape(model: nn.Module, input_size: tuple[int, int]) -> None:
    """Fail early, with the sizes, when a heatmap model's output does not match input_size / stride
    (e.g. a ResNet-based model needs inputs divisible by 32)."""
    if model.head_type != "heatmap":
        return
    w, h = input_size
    stride = model.output_stride
    was_training = model.training
    model.eval()
    out = model(torch.zeros(1, 3, h, w, device=next(model.parameters()).device))
    model.train(was_training)
    expected = (h // stride, w // stride)
    if tuple(out.shape[-2:]) != expected:
        raise InputError(f"data.input_size {list(input_size)} (width, height): the model gives heatmaps "
                         f"{tuple(out.shape[-2:])} (h, w) but the codec expects {expected} = input / stride "
                         f"{stride}; use an input size the backbone divides evenly (multiples of 32 for ResNet)")


def paf_layout(meta: KeypointMeta) -> PafLayout:
    """CMU-Pose's 18-joint layout (COCO + neck) for COCO, else the keypoint set's own skeleton as limbs."""
    return coco_paf_layout() if meta.name == "coco" else paf_layout_from_meta(meta)


def build_codec(cfg: CodecConfig, input_size: tuple[int, int], output_stride: int, head_type: str,
                meta: KeypointMeta | None = None):
    """The codec matching the model's head (`model.head_type`): heatmap, SimCC, coordinates or PAF (which
    needs the keypoint set `meta` for its limbs)."""
    if cfg.type != head_type:
        raise InputError(f"codec.type is {cfg.type!r} but the model's head_type is {head_type!r}; "
                         f"set codec.type={head_type}")
    if cfg.type == "heatmap":
        return HeatmapCodec(input_size=tuple(input_size), heatmap_size=heatmap_size_for(input_size, output_stride),
                            sigma=cfg.sigma, dark=cfg.dark, udp=cfg.udp)
    if cfg.type == "simcc":
        return SimCCCodec(input_size=tuple(input_size), split_ratio=cfg.simcc_split_ratio, sigma=cfg.simcc_sigma,
                          label_smoothing=cfg.simcc_label_smoothing)
    if cfg.type == "coords":
        return CoordinateCodec(input_size=tuple(input_size))
    if cfg.type == "paf":
        if meta is None:
            raise InputError("codec.type paf needs the keypoint set (its skeleton gives the limbs)")
        grouping = GroupingParams(peak_threshold=cfg.paf_peak_threshold, min_mean_score=cfg.paf_min_mean_score)
        return PafCodec(paf_layout(meta), input_size=tuple(input_size), stride=output_stride, sigma=cfg.paf_sigma,
                        limb_width=cfg.paf_limb_width, grouping=grouping)
    raise InputError(f"codec.type: expected heatmap | simcc | coords | paf, got {cfg.type!r}")


def build_loss(cfg: LossConfig, codec) -> nn.Module:
    """The supervised loss that follows the codec: JointsMSELoss for heatmaps, SimCCKLLoss for SimCC."""
    if isinstance(codec, HeatmapCodec):
        return JointsMSELoss(use_target_weight=cfg.use_target_weight)
    if isinstance(codec, SimCCCodec):
        return SimCCKLLoss(use_target_weight=cfg.use_target_weight)
    if isinstance(codec, PafCodec):
        return MultiStagePafLoss()
    raise InputError(f"no supervised loss for codec {type(codec).__name__}")


def keypoint_meta(cfg: DataConfig) -> KeypointMeta:
    """The recipe's keypoint set: a built-in one by name, or (`dataset: custom`) the joints and
    skeleton of the annotation file's category with the recipe's sigmas / flip pairs / weights."""
    if cfg.dataset != "custom":
        return get_meta(cfg.dataset)
    path = cfg.train_ann if os.path.isfile(cfg.train_ann) else cfg.val_ann
    data = read_json(path)
    cats = [c for c in data.get("categories", []) if isinstance(c, dict) and isinstance(c.get("keypoints"), list)] \
        if isinstance(data, dict) else []
    if not cats:
        raise InputError(f"{path}: data.dataset is custom, so a category with a 'keypoints' list of joint "
                         f"names is expected in 'categories'; found none")
    name = str(cats[0].get("name") or "custom")
    return meta_from_category(cats[0], name=f"custom-{name}" if name in DATASET_NAMES else name,
                              where=f"{path} categories[{data['categories'].index(cats[0])}]",
                              sigmas=cfg.keypoint_sigmas, flip_pairs=cfg.flip_pairs,
                              joint_weights=cfg.keypoint_weights, upper_body=cfg.upper_body)


def _limit(instances: list, n: int) -> list:
    return instances[:n] if n > 0 else instances


def load_instances(cfg: DataConfig, meta: KeypointMeta, train: bool, boxes: str | None = None) -> list:
    """PersonInstance list of the training or validation split.

    boxes: "gt" or a detection results JSON for the validation split (default: cfg.val_boxes)."""
    ann = cfg.train_ann if train else cfg.val_ann
    images = cfg.train_images if train else cfg.val_images
    boxes = "gt" if train else (boxes if boxes is not None else cfg.val_boxes)
    if cfg.format == "coco":
        det = None if boxes == "gt" else boxes
        inst = load_coco_instances(ann, images, meta=meta, detections=det,
                                   det_score_thr=cfg.det_score_thr)
    elif cfg.format == "mpii":
        inst = load_mpii_instances(ann, images, meta=meta,
                                   head_boxes=(cfg.val_head_boxes or None) if not train else None)
    else:
        raise InputError(f"data.format: expected coco | mpii, got {cfg.format!r}")
    return _limit(inst, cfg.max_train_instances if train else cfg.max_val_instances)


def build_dataset(cfg: DataConfig, codec, meta: KeypointMeta, train: bool, boxes: str | None = None):
    """TopDownDataset over the split's instances, with augmentation only for training. Samples
    carry uint8 images, a quarter of the bytes for loader workers to hand over; the engine
    normalises them on the device (`loop.to_device` for training, `evaluate.predict` for evaluation)."""
    if isinstance(codec, PafCodec):
        return build_bottomup_dataset(cfg, codec, meta, train)
    instances = load_instances(cfg, meta, train, boxes)
    return TopDownDataset(instances, meta, codec, input_size=tuple(cfg.input_size), train=train,
                          flip=cfg.flip, scale_factor=cfg.scale_factor, rotation_factor=cfg.rotation_factor,
                          rotation_prob=cfg.rotation_prob, half_body_prob=cfg.half_body_prob,
                          half_body_min_joints=cfg.half_body_min_joints, use_joint_weights=cfg.use_joint_weights,
                          normalize=False, cache_mb=0.0 if train else cfg.val_cache_mb)


def build_bottomup_dataset(cfg: DataConfig, codec: PafCodec, meta: KeypointMeta, train: bool) -> BottomUpDataset:
    """Whole images of the split with all people's PAF targets (seed 004 augmentation for training)."""
    if cfg.format != "coco":
        raise InputError(f"bottom-up models read COCO-format keypoint files; data.format is {cfg.format!r}")
    if len(cfg.bottomup_scale) != 2 or not 0 < cfg.bottomup_scale[0] <= cfg.bottomup_scale[1]:
        raise InputError(f"data.bottomup_scale: expected [min, max] with 0 < min <= max, got {cfg.bottomup_scale}")
    if cfg.bottomup_min_keypoints < 0 or cfg.bottomup_min_area < 0:
        raise InputError(f"data.bottomup_min_keypoints / data.bottomup_min_area: expected >= 0, got "
                         f"{cfg.bottomup_min_keypoints} / {cfg.bottomup_min_area}")
    return BottomUpDataset(cfg.train_ann if train else cfg.val_ann, cfg.train_images if train else cfg.val_images,
                           codec, meta, tuple(cfg.input_size), train, flip_prob=0.5 if cfg.flip else 0.0,
                           max_rotation=cfg.rotation_factor, scale_range=tuple(cfg.bottomup_scale), normalize=False,
                           min_keypoints=cfg.bottomup_min_keypoints, min_area=cfg.bottomup_min_area)


def build_optimizer(group: OptimGroup, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimiser of one of the task's parameter groups: the recipe's (optim section), or the group's
    own Adam (`group.optimizer == "adam"`, its lr and betas)."""
    params = [p for p in group.params if p.requires_grad]
    if not params:
        raise InputError(f"the task's parameter group {group.name!r} has no trainable parameters")
    if group.optimizer == "adam":
        return torch.optim.Adam(params, lr=group.lr, betas=group.betas)
    if group.optimizer:
        raise InputError(f"parameter group {group.name!r}: unknown optimizer {group.optimizer!r} (expected adam)")
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise InputError(f"optim.optimizer: expected adam | adamw | sgd, got {cfg.optimizer!r}")


class MultiStepWarmup:
    """LR factor at an iteration: linear warm-up over the first `warmup_iters` iterations, then
    x gamma at every epoch milestone (MultiStepLR by epoch). Stepped once per iteration, so the
    schedule only needs the iteration count (what the checkpoint stores) to resume exactly."""

    def __init__(self, milestones: list[int], gamma: float, iters_per_epoch: int, warmup_iters: int = 0,
                 warmup_ratio: float = 0.001):
        if iters_per_epoch < 1:
            raise InputError(f"iters_per_epoch must be >= 1, got {iters_per_epoch}")
        if list(milestones) != sorted(milestones):
            raise InputError(f"optim.milestones must be increasing, got {list(milestones)}")
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
        raise InputError(f"optim.milestones {cfg.milestones} go past optim.epochs={cfg.epochs}")
    rule = MultiStepWarmup(cfg.milestones, cfg.gamma, iters_per_epoch, cfg.warmup_iters, cfg.warmup_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, rule)


def eval_kwargs(cfg: EvalConfig) -> dict:
    """Keyword arguments of evaluate_coco from the eval section."""
    return dict(oks_nms_thr=cfg.oks_nms_thr, keypoint_score_thr=cfg.keypoint_score_thr, soft_nms=cfg.soft_nms)


# --------------------------------------------------------------------------------------------------
# loaders


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: derive NumPy / random seeds from the worker's torch seed, which
    the loader draws from its seeded generator, so augmentation is reproducible with workers > 0."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_loader(dataset, batch_size: int, workers: int, *, train: bool, seed: int, info: dist.DistInfo,
                 drop_last: bool = False) -> tuple[DataLoader, torch.Generator]:
    """A DataLoader (DistributedSampler shard per rank) and the generator that orders its batches; the
    loop reseeds the generator every epoch so that a resumed run draws the same batches."""
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


# --------------------------------------------------------------------------------------------------
# teacher and task


def load_teacher(cfg: TeacherConfig, num_joints: int, device: torch.device | str = "cpu", *,
                 input_size: tuple[int, int] | None = None, split_ratio: float | None = None,
                 require_checkpoint: bool = True) -> FrozenTeacher:
    """The `distill.teacher` section -> FrozenTeacher on `device`: the registered model (same factory
    rules as the student's), its weights strictly loaded. No weights is an error unless
    `require_checkpoint=False`."""
    if not cfg.model:
        raise InputError("distill.teacher.model is empty: name a registered model for the teacher")
    if not cfg.checkpoint and require_checkpoint:
        raise InputError(f"distill.teacher.checkpoint is empty: a trained {cfg.model} weights file is "
                         f"needed (our best.pth or an official release)")
    kwargs = {"num_joints": num_joints, **cfg.model_kwargs}
    try:
        model = create_model_at(cfg.model, kwargs, input_size, split_ratio)
    except TypeError as e:
        raise InputError(f"distill.teacher.model {cfg.model!r} rejected distill.teacher.model_kwargs "
                         f"{cfg.model_kwargs}: {e}") from None
    if cfg.checkpoint:
        load_weights(model, cfg.checkpoint, strict=True)
    return FrozenTeacher(model, amp=cfg.amp).to(device)


def open_teacher_cache(teacher: FrozenTeacher, cfg: DistillConfig, train_set,
                       device: torch.device) -> TeacherOutputCache:
    """The teacher-output cache of (teacher, train_set), built first when absent: by rank 0 alone,
    the other ranks waiting at a barrier."""
    directory = cache_directory(cfg.cache_dir, cfg.teacher, train_set)
    if dist.is_main_process() and not (directory / "meta.json").is_file():
        build_cache(teacher, cfg.teacher, train_set, directory, batch_size=cfg.cache_batch_size,
                    workers=cfg.cache_workers, device=device)
    dist.barrier()
    return TeacherOutputCache(directory)


def build_distillation_task(cfg: DistillConfig, student: nn.Module, loss: nn.Module, codec, meta: KeypointMeta,
                            train_set, epochs: int, device: torch.device) -> DistillationTask:
    """Teacher, term modules and (with `distill.cache`) the cache -> DistillationTask."""
    input_size = tuple(train_set.input_size)
    split_ratio = getattr(codec, "split_ratio", None)
    teacher = load_teacher(cfg.teacher, meta.num_joints, device, input_size=input_size, split_ratio=split_ratio)
    terms = build_terms(cfg, TermContext(student, teacher, meta, input_size, torch.device(device)))
    cache = open_teacher_cache(teacher, cfg, train_set, device) if cfg.cache else None
    if cfg.label_correction == "pafs" or (cfg.label_correction != "none" and student.head_type != "heatmap"):
        raise InputError(f"distill.label_correction={cfg.label_correction}: a top-down {student.head_type} student "
                         f"can only have its heatmaps corrected (both / confidence_maps, heatmap students)")
    if cfg.kd_lambda > 0:
        raise InputError("distill.kd_lambda is the bottom-up (PAF) KD of seed 004; top-down students use the "
                         "logit term (distill.terms.logit)")
    return DistillationTask(student, teacher if cache is None else None, loss, codec.target_keys, terms=terms,
                            weights={k: float(v) for k, v in cfg.terms.items()}, gt_weight=auto_gt_weight(cfg),
                            decay=cfg.decay, epochs=epochs, cache=cache, feature_key=cfg.feature,
                            split_ratio=split_ratio, label_correction=cfg.label_correction != "none",
                            relative_terms=("adversarial",) if cfg.adversarial_scale == "relative" else ())


def build_refiner_task(cfg: RefineConfig, teacher: TeacherConfig, model: nn.Module, meta: KeypointMeta,
                       device: torch.device) -> RefinerTask:
    """Seed 002's stage 2: the refiner of `model` (student loaded from refine.student) against the
    teacher's pose or the ground truth."""
    if not cfg.student:
        raise InputError(f"model {type(model).__name__} is a student + refiner: refine.student must name the "
                         f"stage-1 checkpoint it refines (stage 2 never trains the student)")
    frozen = None
    if cfg.target == "teacher":
        frozen = load_teacher(teacher, meta.num_joints, device, input_size=model.input_size,
                              split_ratio=model.split_ratio)
    return RefinerTask(model, ProgressivePoseLoss(model.input_size, cfg.block_weights), target=cfg.target,
                       teacher=frozen)


def build_task(cfg: Config, model: nn.Module, codec, meta: KeypointMeta, train_set, device: torch.device) -> Task:
    """RefinerTask for a student + refiner, BottomUpTask for a PAF network (its teacher, or with
    `distill.cache` the teacher's cached outputs), DistillationTask when the recipe names a teacher,
    else SupervisedTask."""
    if model.head_type == "coords":
        return build_refiner_task(cfg.refine, cfg.distill.teacher, model, meta, device)
    loss = build_loss(cfg.loss, codec)
    if model.head_type == "paf":
        d = cfg.distill
        teacher = load_teacher(d.teacher, meta.num_joints, device) if d.teacher.model else None
        uses_teacher = d.kd_lambda > 0 or d.label_correction != "none"
        cache = (open_teacher_cache(teacher, d, train_set, device)
                 if teacher is not None and d.cache and uses_teacher else None)
        return BottomUpTask(model, loss, teacher if cache is None else None, kd_lambda=d.kd_lambda,
                            correct=d.label_correction, cache=cache)
    if cfg.distill.teacher.model:
        return build_distillation_task(cfg.distill, model, loss, codec, meta, train_set, cfg.optim.epochs, device)
    return SupervisedTask(model, loss, codec.target_keys, loss_weight=cfg.loss.loss_weight)
