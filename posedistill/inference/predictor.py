"""A trained model rebuilt from its checkpoint (or ONNX file), run on whole images given person boxes.

`load_model` rebuilds network, codec and keypoint set from what a posedistill checkpoint records
(`engine.checkpoint.model_card`), so no recipe is needed; a recipe may still be given (required for
files without the record, such as official releases). `Predictor` crops each box as evaluation does
(`box_to_center_scale` + `get_affine`, padding 1.25), runs the crops of an image in batches through a
backend (PyTorch or ONNX Runtime: `inference.backends`), decodes with the codec outside the network,
and maps the joints back to image pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch.nn as nn

from posedistill.errors import InputError
from posedistill.data.bottomup import fit_affine, fit_image
from posedistill.data.transforms import (apply_affine, box_to_center_scale, crop_to_image, get_affine, invert_affine,
                                         normalize_image, warp_crop)
from posedistill.engine import build
from posedistill.engine.checkpoint import read_checkpoint
from posedistill.engine.config import Config, config_from_dict
from posedistill.evaluation.coco_eval import rescore
from posedistill.keypoints import KeypointMeta, meta_from_dict
from posedistill.models.weights import load_state
from posedistill.vis import draw_poses


@dataclass
class LoadedModel:
    """What `predict`, `export` and `serve` need of a trained model."""
    model: nn.Module | None   # None for an ONNX file (the graph runs in ONNX Runtime)
    codec: object
    meta: KeypointMeta
    cfg: Config
    input_size: tuple[int, int]   # network input (width, height)
    card: dict = field(default_factory=dict)   # the checkpoint's model card (embedded into ONNX exports)


def _parts(cfg: Config, card: dict) -> tuple[KeypointMeta, tuple[int, int]]:
    meta = meta_from_dict(card["keypoints"]) if card.get("keypoints") else build.keypoint_meta(cfg.data)
    return meta, (int(cfg.data.input_size[0]), int(cfg.data.input_size[1]))


def config_of(card: dict, cfg: Config | None, where: str) -> Config:
    """The recipe given on the command line, else the one the checkpoint / ONNX file records."""
    if cfg is not None:
        return cfg
    if not card.get("config"):
        raise InputError(f"{where} records no posedistill model card (an official release, or a checkpoint "
                         f"from before cards were saved): pass --config with the recipe it was trained with")
    return config_from_dict(card["config"], f"{where} (model card)")


def load_model(checkpoint: str | Path, cfg: Config | None = None) -> LoadedModel:
    """Network (eval mode, CPU), codec and keypoint set of a posedistill checkpoint; `cfg` overrides the
    recorded recipe and is required for files without a model card (official / MMPose releases)."""
    where = f"checkpoint {checkpoint}"
    state = read_checkpoint(checkpoint)
    card = state.get("card") if isinstance(state.get("card"), dict) else {}
    cfg = config_of(card, cfg, where)
    meta, input_size = _parts(cfg, card)
    model = build.model_from_config(cfg, meta, with_init_weights=False)
    build.check_card(str(checkpoint), card, build.model_card(cfg, meta, model))
    load_state(model, state, str(checkpoint), strict=True)
    model.eval()
    codec = build.build_codec(cfg.codec, input_size, model.output_stride, model.head_type, meta)
    return LoadedModel(model, codec, meta, cfg, input_size, card or {})


def load_onnx_card(card: dict, where: str, cfg: Config | None = None) -> LoadedModel:
    """Codec and keypoint set for an exported ONNX file from the model card embedded in it."""
    cfg = config_of(card, cfg, where)
    meta, input_size = _parts(cfg, card)
    head = card.get("head_type", cfg.codec.type)
    codec = build.build_codec(cfg.codec, input_size, int(card.get("output_stride", 4)), head, meta)
    return LoadedModel(None, codec, meta, cfg, input_size, card)


@dataclass
class Crops:
    """The network inputs of one image's boxes and the affines that made them."""
    images: np.ndarray     # [N, 3, H, W] float32, normalised
    affines: np.ndarray    # [N, 2, 3] image -> crop


def make_crops(image_bgr: np.ndarray, boxes: np.ndarray, input_size: tuple[int, int]) -> Crops:
    """Crop every (x, y, w, h, score) box as evaluation does: aspect fixed to the input's, padded 1.25."""
    w, h = input_size
    images = np.empty((len(boxes), 3, h, w), dtype=np.float32)
    affines = np.empty((len(boxes), 2, 3), dtype=np.float64)
    for i, box in enumerate(boxes):
        center, scale = box_to_center_scale(box[:4], w / h)
        affines[i] = get_affine(center, scale, 0.0, input_size)
        images[i] = normalize_image(warp_crop(image_bgr, affines[i], input_size), bgr=True)
    return Crops(images, affines)


class Predictor:
    """People's keypoints in one image from its person boxes (top-down).

    backend: callable [N, 3, H, W] float32 -> list of outputs (`inference.backends`)."""

    def __init__(self, backend, codec, meta: KeypointMeta, input_size: tuple[int, int], *,
                 flip_test: bool = False, batch_size: int = 16, keypoint_score_thr: float = 0.2):
        self.backend, self.codec, self.meta = backend, codec, meta
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.flip_test, self.batch_size = flip_test, max(1, int(batch_size))
        self.keypoint_score_thr = keypoint_score_thr

    def _run(self, images: np.ndarray):
        """Network outputs of a batch of crops (flip-averaged when `flip_test`), as the codec takes them."""
        def as_codec_input(outs):
            return outs[0] if len(outs) == 1 else tuple(outs)
        out = as_codec_input(self.backend(images))
        if self.flip_test:
            flipped = as_codec_input(self.backend(np.ascontiguousarray(images[..., ::-1])))
            out = self.codec.flip_test_average(out, flipped, self.meta.flip_index)
        return out

    def __call__(self, image_bgr: np.ndarray, boxes: np.ndarray, *, keep_outputs: bool = False) -> list[dict]:
        """People as dicts: "keypoints" [K, 3] (x, y, score) in image pixels, "box" (x, y, w, h), "score"
        (box score x mean of the joint scores above `keypoint_score_thr`, the official top-down
        rescoring), "box_score"; with `keep_outputs`, "heatmap" [H, W] in crop pixels and "affine"."""
        return self.predict_many([image_bgr], [boxes], keep_outputs=keep_outputs)[0]

    def predict_many(self, images_bgr: list[np.ndarray], boxes: list[np.ndarray], *,
                     keep_outputs: bool = False) -> list[list[dict]]:
        """`__call__` for several images at once: their crops share batches (the server's batching)."""
        boxes = [np.asarray(b, dtype=np.float32).reshape(-1, 5) for b in boxes]
        owner = np.concatenate([np.full(len(b), i) for i, b in enumerate(boxes)] + [np.zeros(0, int)]).astype(int)
        crops = [make_crops(img, b, self.input_size) for img, b in zip(images_bgr, boxes) if len(b)]
        people: list[list[dict]] = [[] for _ in images_bgr]
        if not crops:
            return people
        crops = Crops(np.concatenate([c.images for c in crops]), np.concatenate([c.affines for c in crops]))
        all_boxes = np.concatenate(boxes)
        for start in range(0, len(all_boxes), self.batch_size):
            out = self._run(crops.images[start:start + self.batch_size])
            coords, scores = self.codec.decode(out)
            affines = crops.affines[start:start + len(coords)]
            coords = crop_to_image(np.asarray(coords, dtype=np.float64), affines)
            for i in range(len(coords)):
                people[owner[start + i]].append(self._person(coords[i], scores[i], all_boxes[start + i]))
                if keep_outputs:
                    people[owner[start + i]][-1].update(heatmap=confidence_map(self.codec, out, i),
                                                        affine=affines[i])
        return people

    def _person(self, coords: np.ndarray, scores: np.ndarray, box: np.ndarray) -> dict:
        kps = np.concatenate([coords, np.asarray(scores, dtype=np.float64)[:, None]], axis=1)
        return {"keypoints": kps.astype(np.float32), "box": box[:4].copy(), "box_score": float(box[4]),
                "score": rescore(kps, box[4], self.keypoint_score_thr)}


class BottomUpPredictor:
    """People in whole images from a bottom-up (PAF) network: no boxes. Each image is fitted into the
    input as evaluation does (`data.bottomup.fit_affine`), the last stage's maps (flip-averaged when
    `flip_test`) are grouped by the codec, and the people mapped back to image pixels. Same person dicts
    as `Predictor`; "box" is the extent of the found joints and "score" the grouping's person score."""

    def __init__(self, backend, codec, meta: KeypointMeta, input_size: tuple[int, int], *, flip_test: bool = False):
        self.backend, self.codec, self.meta = backend, codec, meta
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.flip_test = flip_test

    def __call__(self, image_bgr: np.ndarray, boxes=None, *, keep_outputs: bool = False) -> list[dict]:
        return self.predict_many([image_bgr], keep_outputs=keep_outputs)[0]

    def _maps(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        maps, pafs = self.backend(image[None])
        if self.flip_test:
            f_maps, f_pafs = self.codec.flip_back(*self.backend(np.ascontiguousarray(image[None, ..., ::-1])))
            maps, pafs = 0.5 * (maps + f_maps), 0.5 * (pafs + f_pafs)
        return maps[0], pafs[0]

    def predict_many(self, images_bgr: list[np.ndarray], boxes=None, *, keep_outputs: bool = False) -> list[list[dict]]:
        """One list of people per image (`boxes` and `keep_outputs` are accepted and unused)."""
        out = []
        for image in images_bgr:
            affine = fit_affine(image.shape[1], image.shape[0], self.input_size)
            x = normalize_image(fit_image(image, affine, self.input_size), bgr=True)
            people, scores = self.codec.decode(*self._maps(x))
            inverse = invert_affine(affine)
            out.append([self._person(kp, float(sc), inverse) for kp, sc in zip(people, scores)])
        return out

    @staticmethod
    def _person(kp: np.ndarray, score: float, inverse: np.ndarray) -> dict:
        found = kp[:, 2] > 0
        xy = np.where(found[:, None], apply_affine(kp[:, :2].astype(np.float64), inverse), 0.0)
        lo, hi = xy[found].min(0), xy[found].max(0)
        kps = np.concatenate([xy, kp[:, 2:3]], axis=1).astype(np.float32)
        return {"keypoints": kps, "box": np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]], np.float32),
                "box_score": score, "score": score}


def confidence_map(codec, out, i: int) -> np.ndarray:
    """One crop's joints' confidence, max over joints, at input resolution [H, W] in 0..1: the
    heatmaps themselves, or for SimCC the outer product of the x and y softmax distributions."""
    w, h = codec.input_size
    if isinstance(out, tuple):
        px, py = (np.exp(v[i] - v[i].max(-1, keepdims=True)) for v in out)
        px, py = px / px.sum(-1, keepdims=True), py / py.sum(-1, keepdims=True)
        m = (py[:, :, None] * px[:, None, :]).max(0)
    else:
        m = np.asarray(out[i]).max(0)
    m = np.clip(m / max(float(m.max()), 1e-6), 0.0, 1.0).astype(np.float32)
    return np.asarray(warp_to(m, (w, h)))


def warp_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a map to (width, height) bilinearly (an identity affine scaled)."""
    sx, sy = size[0] / image.shape[1], size[1] / image.shape[0]
    return warp_crop(image, np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]]), size)


def crop_map_to_image(crop_map: np.ndarray, affine: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """A map in crop pixels back onto the image ([H, W] of `image_size` (width, height))."""
    return warp_crop(crop_map, invert_affine(affine), image_size)


def draw_prediction(image_bgr: np.ndarray, people: list[dict], meta: KeypointMeta, *, score_thr: float = 0.3,
                    show_heatmaps: bool = False) -> np.ndarray:
    """The image with each person's skeleton and box drawn; with `show_heatmaps`, the people's joint
    confidence (max over joints, from `Predictor(..., keep_outputs=True)`) blended in as a colour map."""
    out = image_bgr.copy()
    if show_heatmaps and people:
        h, w = out.shape[:2]
        conf = np.zeros((h, w), dtype=np.float32)
        for p in (p for p in people if "heatmap" in p):      # bottom-up people carry no crop map
            conf = np.maximum(conf, crop_map_to_image(p["heatmap"], p["affine"], (w, h)))
        colour = cv2.applyColorMap((conf * 255).astype(np.uint8), cv2.COLORMAP_JET)
        out = np.where(conf[..., None] > 0.05, cv2.addWeighted(out, 0.4, colour, 0.6, 0), out)
    if not people:
        return out
    kps = np.stack([p["keypoints"] for p in people])
    return draw_poses(out, kps, meta, score_thr=score_thr, boxes=np.stack([p["box"] for p in people]), copy=False)
