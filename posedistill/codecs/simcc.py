"""SimCC codec (seed 002; official `leeyegy/SimCC`, MMPose `codecs/simcc_label.py`).

Each axis of the input crop is split into `split_ratio` (k) bins per pixel: x has W*k bins, y H*k.
Bin `b` stands for crop pixel `b / k` (bin centres on integers), so a keypoint at crop x sits at
bin `x * k`.

Encoding: a 1-D Gaussian per axis at the keypoint's sub-bin position, `sigma` in bins (one value,
or (sigma_x, sigma_y)), divided by sigma * sqrt(2 pi) when `normalize` (as the official SimCC, so
each label sums to about 1), optionally mixed with the uniform distribution:
`(1 - label_smoothing) * label + label_smoothing / num_bins`. A joint gets target weight 0 (and
all-zero labels) when unlabelled or when its +-3 sigma window misses the bins of either axis (the
official rule; `drop_outside_crop=True` zeroes every joint outside the crop instead).

Decoding: softmax over the bins of each axis, argmax / k -> crop pixels; the joint's score is
min(max_x, max_y) of the *softmax* probabilities. (The official code takes the min of the two
maxima of the raw network output; softmax makes scores comparable across models and bounded in
[0, 1], which OKS rescoring thresholds assume. Note these probabilities are small for wide labels:
about 1 / (sigma sqrt(2 pi)) for an output that matches its label.)
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from posedistill.codecs.heatmap import _flip_index, check_keypoints

__all__ = ["SimCCCodec"]

Array = np.ndarray


def _softmax(x: Array, axis: int = -1) -> Array:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class SimCCCodec:
    """SimCC 1-D classification labels and argmax decoding.

    input_size: (width, height) of the crop; split_ratio: bins per pixel k (2 on COCO);
    sigma: label std in bins, float or (sigma_x, sigma_y) (6 in MMPose, 4-6 in SimCC);
    label_smoothing: weight of the uniform mix in [0, 1); normalize: divide by sigma sqrt(2 pi);
    drop_outside_crop: weight 0 for joints outside the input crop (default: the official 3-sigma rule)."""

    target_keys = ("simcc_x", "simcc_y")

    def __init__(self, input_size: Sequence[int] = (192, 256), split_ratio: float = 2.0,
                 sigma: float | Sequence[float] = (6.0, 6.0), label_smoothing: float = 0.0,
                 normalize: bool = True, drop_outside_crop: bool = False):
        try:
            w, h = (int(v) for v in input_size)
        except (TypeError, ValueError):
            raise ValueError(f"SimCCCodec: input_size must be (width, height), got {input_size!r}") from None
        if w < 1 or h < 1:
            raise ValueError(f"SimCCCodec: input_size must be positive, got {input_size!r}")
        if not float(split_ratio) > 0:
            raise ValueError(f"SimCCCodec: split_ratio must be > 0 bins per pixel, got {split_ratio!r}")
        sig = (float(sigma), float(sigma)) if np.isscalar(sigma) else tuple(float(s) for s in sigma)
        if len(sig) != 2 or min(sig) <= 0:
            raise ValueError(f"SimCCCodec: sigma must be > 0 or a pair (sigma_x, sigma_y) > 0, got {sigma!r}")
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"SimCCCodec: label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.input_size = (w, h)
        self.split_ratio = float(split_ratio)
        self.sigma = sig
        self.label_smoothing = float(label_smoothing)
        self.normalize = bool(normalize)
        self.drop_outside_crop = bool(drop_outside_crop)
        self.num_bins = (int(round(w * self.split_ratio)), int(round(h * self.split_ratio)))
        # Flipping the image maps crop x to W - 1 - x = bin W*k - k - b, flipping the bin array gives
        # W*k - 1 - b: the flipped bins sit (k - 1) bins too far right; flip_back moves them back.
        self.flip_shift = int(round(self.split_ratio - 1.0))

    def __repr__(self) -> str:
        return (f"SimCCCodec(input_size={self.input_size}, split_ratio={self.split_ratio}, sigma={self.sigma}, "
                f"label_smoothing={self.label_smoothing}, normalize={self.normalize}, "
                f"drop_outside_crop={self.drop_outside_crop})")

    def encode(self, keypoints: Array, visible: Array) -> dict[str, Array]:
        """keypoints [K, 2] crop pixels, visible [K] -> {"simcc_x": float32 [K, W*k],
        "simcc_y": float32 [K, H*k], "target_weight": float32 [K]}."""
        kps, vis = check_keypoints(keypoints, visible, "SimCCCodec.encode")
        mu = kps * self.split_ratio                                      # [K, 2] in bins
        finite = np.isfinite(mu).all(axis=1)
        mu = np.where(finite[:, None], mu, 0.0)
        weight = (vis > 0) & finite
        if self.drop_outside_crop:
            w, h = self.input_size
            weight &= (kps[:, 0] >= 0) & (kps[:, 0] <= w - 1) & (kps[:, 1] >= 0) & (kps[:, 1] <= h - 1)
        labels = []
        for axis in (0, 1):
            n, s = self.num_bins[axis], self.sigma[axis]
            weight &= (mu[:, axis] + 3 * s >= 0) & (mu[:, axis] - 3 * s <= n - 1)
            bins = np.arange(n, dtype=np.float64)
            lab = np.exp(-0.5 * ((bins[None, :] - mu[:, axis:axis + 1]) / s) ** 2)
            if self.normalize:
                lab /= s * math.sqrt(2.0 * math.pi)
            if self.label_smoothing > 0:
                lab = (1.0 - self.label_smoothing) * lab + self.label_smoothing / n
            labels.append(lab)
        weight = weight.astype(np.float32)
        x, y = (np.where(weight[:, None] > 0, lab, 0.0).astype(np.float32) for lab in labels)
        return {"simcc_x": x, "simcc_y": y, "target_weight": weight}

    def _split(self, output, what: str) -> tuple[Array, Array]:
        if not (isinstance(output, (tuple, list)) and len(output) == 2):
            raise ValueError(f"SimCCCodec.{what}: expected a tuple (x_logits [B, K, W*k], y_logits [B, K, H*k]), "
                             f"got {type(output).__name__}")
        arrs = []
        for name, o, n in zip(("x_logits", "y_logits"), output, self.num_bins):
            a = o.detach().float().cpu().numpy() if isinstance(o, torch.Tensor) else np.asarray(o, dtype=np.float32)
            if a.ndim != 3 or a.shape[2] != n:
                raise ValueError(f"SimCCCodec.{what}: {name} must be [B, K, {n}] for input_size={self.input_size} "
                                 f"and split_ratio={self.split_ratio}, got shape {a.shape}")
            if not np.isfinite(a).all():
                raise ValueError(f"SimCCCodec.{what}: {name} contains NaN or infinite values")
            arrs.append(a)
        if arrs[0].shape[:2] != arrs[1].shape[:2]:
            raise ValueError(f"SimCCCodec.{what}: x_logits {arrs[0].shape} and y_logits {arrs[1].shape} "
                             f"differ in [B, K]")
        return arrs[0], arrs[1]

    def decode(self, output) -> tuple[Array, Array]:
        """(x_logits [B, K, W*k], y_logits [B, K, H*k]) -> (keypoints float32 [B, K, 2] crop pixels,
        scores float32 [B, K] = min of the two softmax maxima)."""
        x, y = self._split(output, "decode")
        px, py = _softmax(x), _softmax(y)
        keypoints = np.stack([px.argmax(-1), py.argmax(-1)], axis=-1).astype(np.float32) / self.split_ratio
        scores = np.minimum(px.max(-1), py.max(-1)).astype(np.float32)
        return keypoints, scores

    def flip_back(self, output, flip_index, shift: bool = True):
        """(x, y) logits of the horizontally flipped crop -> aligned with the unflipped crop: x bins
        reversed and moved left by k - 1 bins (see `flip_shift`), channels swapped left/right; y only
        swapped. Tensors in -> tensors out."""
        if not (isinstance(output, (tuple, list)) and len(output) == 2):
            raise ValueError("SimCCCodec.flip_back: expected a tuple (x_logits, y_logits)")
        x, y = output
        if x.ndim != 3 or y.ndim != 3:
            raise ValueError(f"SimCCCodec.flip_back: logits must be [B, K, bins], got {tuple(x.shape)} and "
                             f"{tuple(y.shape)}")
        idx = _flip_index(flip_index, x.shape[1])
        s = self.flip_shift if shift else 0
        if isinstance(x, torch.Tensor):
            t = torch.as_tensor(idx, device=x.device)
            fx = x.flip(2)[:, t]
            if s:
                fx = torch.cat([fx[..., s:], fx[..., -s:]], dim=2)   # left by s, last bins repeated
            return fx, y[:, torch.as_tensor(idx, device=y.device)]
        fx = np.asarray(x)[:, idx, ::-1]
        if s:
            fx = np.concatenate([fx[..., s:], fx[..., -s:]], axis=2)
        return np.ascontiguousarray(fx), np.ascontiguousarray(np.asarray(y)[:, idx])

    def flip_test_average(self, model_out, flipped_out, flip_index):
        """Flip test: mean of the logits for the crop and the flipped-back logits of its mirror."""
        fx, fy = self.flip_back(flipped_out, flip_index)
        return 0.5 * (model_out[0] + fx), 0.5 * (model_out[1] + fy)
