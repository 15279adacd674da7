"""Prediction and scoring: a model over a loader -> keypoints in image pixels -> COCO OKS AP/AR or
MPII PCKh; and the evaluation of a checkpoint against a recipe's validation split (`posedistill eval`).

Multi-process: each rank predicts its shard, predictions are gathered (padded duplicates dropped by
instance index), rank 0 scores, and every rank gets the metrics back.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from posedistill.data.transforms import apply_affine, crop_to_image, normalize_images
from posedistill.engine import build, dist
from posedistill.engine.checkpoint import read_checkpoint
from posedistill.engine.config import Config
from posedistill.errors import InputError
from posedistill.evaluation.coco_eval import evaluate_coco
from posedistill.evaluation.pckh import evaluate_pckh
from posedistill.keypoints import KeypointMeta
from posedistill.models.weights import load_state
from posedistill.tensors import amp_dtype, to_float


def autocast(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast for `dtype`, or a context that changes nothing for None (float32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def use_progress(enabled: bool) -> bool:
    """A tqdm bar only on rank 0 and only when stderr is a terminal."""
    return enabled and dist.is_main_process() and sys.stderr.isatty()


def _records(batch: dict, coords: np.ndarray, scores: np.ndarray) -> list[dict]:
    """One prediction dict per sample of `batch` (see `predict`)."""
    out = []
    for b in range(coords.shape[0]):
        out.append({
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
    return out


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, codec, meta: KeypointMeta, device: torch.device, *,
            flip_test: bool = False, amp: torch.dtype | None = None, channels_last: bool = False,
            progress: bool = False) -> list[dict]:
    """Predictions in image pixels for every instance of `loader`'s dataset, gathered from all ranks.

    Each prediction: {"index", "image_id", "ann_id", "keypoints" [K, 3] (x, y, score), "center",
    "scale", "area", "bbox_score", "head_size"}. Ranks' padded duplicates are dropped by "index"."""
    was_training = model.training
    model.eval()
    preds: list[dict] = []
    for batch in tqdm(loader, desc="eval", disable=not progress, leave=False, dynamic_ncols=True):
        images = normalize_images(batch["image"].to(device, non_blocking=True))
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            out = to_float(model(images))
            out_flip = to_float(model(images.flip(3))) if flip_test else None
        if flip_test:
            out = codec.flip_test_average(out, out_flip, meta.flip_index)
        coords, scores = codec.decode(out)
        coords = crop_to_image(np.asarray(coords, dtype=np.float64), batch["affine"].double().numpy())
        preds += _records(batch, coords, np.asarray(scores, dtype=np.float64))
    model.train(was_training)
    unique: dict[int, dict] = {}
    for rank_preds in dist.all_gather_object(preds):
        for p in rank_preds:
            unique.setdefault(p["index"], p)
    return [unique[i] for i in sorted(unique)]


def people_records(batch: dict, i: int, people: np.ndarray, scores: np.ndarray) -> list[dict]:
    """Prediction dicts of the people found in sample `i` of a bottom-up batch, in image pixels."""
    inverse = batch["inverse_affine"][i].double().numpy()
    out = []
    for j, (kp, score) in enumerate(zip(people, scores)):
        found = kp[:, 2] > 0
        xy = np.where(found[:, None], apply_affine(kp[:, :2].astype(np.float64), inverse), 0.0)
        span = xy[found].max(0) - xy[found].min(0) if found.any() else np.zeros(2)
        out.append({"index": int(batch["index"][i]), "person": j, "image_id": int(batch["image_id"][i]),
                    "keypoints": np.concatenate([xy, kp[:, 2:3]], axis=1).astype(np.float32),
                    "score": float(score), "area": float(span[0] * span[1]), "bbox_score": 1.0})
    return out


def _forward_maps(model: nn.Module, images: torch.Tensor, codec, flip_test: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The last stage's (confidence maps, PAFs), averaged with the flipped-back maps of the mirrored input
    when `flip_test`."""
    maps, pafs = to_float(model(images)[-1])
    if flip_test:
        f_maps, f_pafs = codec.flip_back(*to_float(model(images.flip(3))[-1]))
        maps, pafs = 0.5 * (maps + f_maps), 0.5 * (pafs + f_pafs)
    return maps, pafs


def bottomup_maps(model: nn.Module, images: torch.Tensor, codec, *, flip_test: bool = False,
                  scales: Sequence[float] = (1.0,)) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps of a normalised batch at the output size of scale 1, averaged over `scales` (CMU-Pose's
    multi-scale test: the input resized by each scale, to a multiple of the stride, and every output
    resized back bicubically before the average) and over flips."""
    if not scales or any(not s > 0 for s in scales):
        raise InputError(f"eval.scales: expected a non-empty list of positive input scales, got {list(scales)}")
    h, w = images.shape[-2:]
    stride = codec.stride
    out_size = (h // stride, w // stride)
    total_maps = total_pafs = None
    for s in scales:
        size = (max(stride, round(h * s / stride) * stride), max(stride, round(w * s / stride) * stride))
        x = images if size == (h, w) else F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        maps, pafs = _forward_maps(model, x, codec, flip_test)
        if maps.shape[-2:] != out_size:
            maps = F.interpolate(maps, size=out_size, mode="bicubic", align_corners=False)
            pafs = F.interpolate(pafs, size=out_size, mode="bicubic", align_corners=False)
        total_maps = maps if total_maps is None else total_maps + maps
        total_pafs = pafs if total_pafs is None else total_pafs + pafs
    return total_maps / len(scales), total_pafs / len(scales)


@torch.no_grad()
def predict_bottomup(model: nn.Module, loader: DataLoader, codec, device: torch.device, *, flip_test: bool = False,
                     scales: Sequence[float] = (1.0,), amp: torch.dtype | None = None,
                     progress: bool = False) -> list[dict]:
    """People in image pixels for every image of a bottom-up loader, gathered from all ranks: the last
    stage's maps (`bottomup_maps`: over `scales`, and averaged with the flipped-back maps of the mirrored
    input when `flip_test`), grouped by the codec, mapped back by the sample's inverse affine. Each dict
    as `predict`'s, with the person score as "score" (scored as it is, no top-down rescoring) and
    "person" (its rank in the image)."""
    was_training = model.training
    model.eval()
    preds: list[dict] = []
    for batch in tqdm(loader, desc="eval", disable=not progress, leave=False, dynamic_ncols=True):
        images = normalize_images(batch["image"].to(device, non_blocking=True))
        with autocast(device, amp):
            maps, pafs = bottomup_maps(model, images, codec, flip_test=flip_test, scales=scales)
        for i in range(images.shape[0]):
            people, scores = codec.decode(maps[i], pafs[i])
            preds += people_records(batch, i, people, scores)
    model.train(was_training)
    unique: dict[tuple[int, int], dict] = {}
    for rank_preds in dist.all_gather_object(preds):
        for p in rank_preds:
            unique.setdefault((p["index"], p["person"]), p)
    return [unique[k] for k in sorted(unique)]


def score_predictions(predictions: list[dict], meta: KeypointMeta, data_format: str, ann_file: str,
                      out_dir: str | Path | None = None, eval_kwargs: dict | None = None,
                      head_boxes: str = "", allow_empty: bool = False) -> dict[str, float]:
    """COCO-style OKS AP/AR (COCO, CrowdPose, custom) or MPII PCKh@0.5 of image-pixel predictions;
    `allow_empty`: no predictions score 0 (bottom-up models may find nobody)."""
    if data_format == "mpii":
        return evaluate_pckh(predictions, ann_file, head_boxes=head_boxes or None)
    meta.require_sigmas(f"OKS evaluation against {ann_file}")
    return evaluate_coco(predictions, ann_file, meta=meta, out_dir=str(out_dir) if out_dir else None,
                         allow_empty=allow_empty, **(eval_kwargs or {}))


def primary_metric(metrics: dict[str, float]) -> tuple[str, float]:
    """The number `best.pth` is chosen by: AP for OKS metrics, PCKh mean for MPII."""
    for key in ("AP", "PCKh", "Mean"):
        if key in metrics:
            return key, float(metrics[key])
    raise KeyError(f"no AP / PCKh in metrics {sorted(metrics)}")


def evaluate(model: nn.Module, loader: DataLoader, codec, meta: KeypointMeta, device: torch.device, *,
             data_format: str, ann_file: str, flip_test: bool = False, out_dir: str | Path | None = None,
             eval_kwargs: dict | None = None, head_boxes: str = "", amp: torch.dtype | None = None,
             channels_last: bool = False, progress: bool = False, scales: Sequence[float] = (1.0,)
             ) -> dict[str, float]:
    """Predict on every rank, score on rank 0, and return the metrics on every rank. `scales`: the
    bottom-up multi-scale test (top-down models: (1.0,) only)."""
    if model.head_type == "paf":
        preds = predict_bottomup(model, loader, codec, device, flip_test=flip_test, scales=scales, amp=amp,
                                 progress=progress)
    else:
        if list(scales) != [1.0]:
            raise InputError(f"eval.scales={list(scales)}: the multi-scale test is for bottom-up (PAF) models; "
                             f"a {model.head_type} model takes [1.0]")
        preds = predict(model, loader, codec, meta, device, flip_test=flip_test, amp=amp,
                        channels_last=channels_last, progress=progress)
    metrics = None
    if dist.is_main_process():
        metrics = score_predictions(preds, meta, data_format, ann_file, out_dir, eval_kwargs, head_boxes,
                                    allow_empty=model.head_type == "paf")
        metrics = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.floating))}
        metrics["instances"] = float(len(preds))  # people predicted, all ranks together
    return dist.broadcast_object(metrics)


def load_model_weights(model: nn.Module, path: str, wanted_card: dict | None = None) -> None:
    """Weights from a posedistill checkpoint, refused in words when its model card names another network
    than `wanted_card` (`build.check_card`), or from an official / MMPose release (key layout checked by
    `models.weights.load_weights`: prefixes handled, mismatches counted and named)."""
    state = read_checkpoint(path)
    if wanted_card is not None:
        build.check_card(path, state.get("card"), wanted_card)
    load_state(model, state, path, strict=True)


def evaluate_checkpoint(cfg: Config, checkpoint: str, *, flip: bool | None = None, boxes: str | None = None,
                        out_dir: str | None = None) -> dict[str, float]:
    """Evaluate `checkpoint` on the recipe's validation split; returns the metrics (all ranks)."""
    info = dist.init_distributed(cfg.train.device)
    device = info.device
    meta = build.keypoint_meta(cfg.data)
    model = build.model_from_config(cfg, meta, with_init_weights=False)
    load_model_weights(model, checkpoint, build.model_card(cfg, meta, model))
    codec = build.build_codec(cfg.codec, tuple(cfg.data.input_size), model.output_stride, model.head_type, meta)
    val_set = build.build_dataset(cfg.data, codec, meta, train=False, boxes=boxes)
    loader, _ = build.build_loader(val_set, cfg.eval.batch_size, cfg.train.workers, train=False,
                                   seed=cfg.train.seed, info=info)
    model.to(device)
    channels_last = cfg.train.channels_last and device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    out = Path(out_dir) if out_dir else Path(checkpoint).resolve().parent / "eval"
    return evaluate(model, loader, codec, meta, device, data_format=cfg.data.format, ann_file=cfg.data.val_ann,
                    flip_test=cfg.eval.flip_test if flip is None else flip,
                    out_dir=out if info.is_main else None, eval_kwargs=build.eval_kwargs(cfg.eval),
                    head_boxes=cfg.data.val_head_boxes, amp=amp_dtype(cfg.train.amp, device),
                    channels_last=channels_last, progress=use_progress(cfg.train.progress), scales=cfg.eval.scales)
