"""Gaussian heatmap codec: targets for heatmap networks and keypoints from their outputs.

Coordinate convention (crop pixels <-> heatmap pixels), per axis:

* default (as the official SimpleBaseline / HRNet code): heatmap pixel `u` stands for crop pixel
  `u * stride` with `stride = input_size / heatmap_size` (4 for 256x192 -> 64x48, 1 for FR-SBN's
  full-resolution maps);
* `udp=True` (Unbiased Data Processing, MMPose `codecs/udp_heatmap.py`): the first and last pixels
  of both grids coincide, `stride = (input_size - 1) / (heatmap_size - 1)`.

Encoding puts an unnormalised Gaussian (peak 1, `sigma` in heatmap pixels) at the keypoint's
*sub-pixel* position `keypoint / stride`, evaluated only inside the +-3 sigma square window around
it. A joint gets target weight 0 when it is unlabelled or when that window misses the map entirely
(the official code's rule); its heatmap is then all zero. So a joint just outside the crop keeps
weight 1 and a Gaussian tail on the border, as in the official training; `drop_outside_crop=True`
instead zeroes every joint outside the crop [0, W_in - 1] x [0, H_in - 1].

Decoding takes the argmax of each map, then either
* the official quarter-pixel shift toward the higher neighbour (`lib/core/inference.py`; only
  when `1 < x < W-1` and `1 < y < H-1`, exactly the official condition), or
* `dark=True`: DARK (Zhang et al., CVPR 2020; MMPose `codecs/utils/refinement.py`): blur each map
  with a `dark_kernel` Gaussian rescaled to keep its maximum, take the log, and move the argmax by
  the Newton step -H^-1 g of the second-order Taylor expansion there (only when the 5x5
  neighbourhood lies inside the map, the Hessian is invertible and the step is at most 1 pixel;
  a longer step means the log-map is not locally quadratic, and MMPose would apply it anyway).
The score of a joint is the map's maximum; a map whose maximum is <= 0 decodes to (0, 0) as in the
official `get_max_preds`.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch

__all__ = ["HeatmapCodec"]

Array = np.ndarray


def _pair(value, name: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"HeatmapCodec: {name} must be (width, height), got {value!r}") from None
    if w < 1 or h < 1:
        raise ValueError(f"HeatmapCodec: {name} must be positive (width, height), got {value!r}")
    return w, h


def _to_numpy(x, what: str) -> Array:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError(f"HeatmapCodec.{what}: input contains NaN or infinite values")
    return x


def _flip_index(flip_index, num_channels: int) -> Array:
    idx = np.asarray(flip_index, dtype=np.int64).reshape(-1)
    if idx.shape[0] != num_channels or sorted(idx.tolist()) != list(range(num_channels)):
        raise ValueError(f"flip_back: flip_index must be a permutation of 0..{num_channels - 1} "
                         f"(KeypointMeta.flip_index), got {idx.tolist()}")
    return idx


def check_keypoints(keypoints, visible, who: str) -> tuple[Array, Array]:
    """(keypoints float64 [K, 2], visible [K]) of an `encode` call, or an error naming `who`."""
    kps = np.asarray(keypoints, dtype=np.float64)
    if kps.ndim != 2 or kps.shape[1] < 2:
        raise ValueError(f"{who}: keypoints must be [K, 2] crop pixels, got shape {kps.shape}")
    vis = np.asarray(visible).reshape(-1)
    if vis.shape[0] != kps.shape[0]:
        raise ValueError(f"{who}: visible has {vis.shape[0]} entries, expected one per keypoint ({kps.shape[0]})")
    return kps[:, :2], vis


class HeatmapCodec:
    """Gaussian heatmaps at any stride; argmax + quarter shift or DARK decoding; UDP; flip-back.

    input_size, heatmap_size: (width, height) of the network input crop and of its output maps.
    sigma: Gaussian standard deviation in heatmap pixels (2 at 64x48 in the official configs).
    dark: DARK refinement when decoding; dark_kernel: its (odd) blur kernel size (11 in MMPose).
    udp: size-1 based coordinate mapping (see the module docstring).
    drop_outside_crop: weight 0 for joints outside the input crop (default: the official 3-sigma rule)."""

    target_keys = ("heatmaps",)

    def __init__(self, input_size: Sequence[int] = (192, 256), heatmap_size: Sequence[int] = (48, 64),
                 sigma: float = 2.0, dark: bool = False, udp: bool = False, dark_kernel: int = 11,
                 drop_outside_crop: bool = False):
        self.input_size = _pair(input_size, "input_size")
        self.heatmap_size = _pair(heatmap_size, "heatmap_size")
        if not (float(sigma) > 0):
            raise ValueError(f"HeatmapCodec: sigma must be > 0 heatmap pixels, got {sigma!r}")
        if int(dark_kernel) < 3 or int(dark_kernel) % 2 == 0:
            raise ValueError(f"HeatmapCodec: dark_kernel must be an odd size >= 3, got {dark_kernel!r}")
        self.sigma = float(sigma)
        self.dark = bool(dark)
        self.udp = bool(udp)
        self.dark_kernel = int(dark_kernel)
        self.drop_outside_crop = bool(drop_outside_crop)
        (iw, ih), (hw, hh) = self.input_size, self.heatmap_size
        if self.udp:
            if hw < 2 or hh < 2:
                raise ValueError(f"HeatmapCodec: udp needs heatmaps of at least 2x2, got {self.heatmap_size}")
            self.stride = np.array([(iw - 1) / (hw - 1), (ih - 1) / (hh - 1)], dtype=np.float64)
        else:
            self.stride = np.array([iw / hw, ih / hh], dtype=np.float64)
        # Flipping the image maps crop x to (W_in - 1 - x), i.e. heatmap u to W_h - 1/stride - u, while
        # flipping the map array gives W_h - 1 - u: the flipped map sits (1 - 1/stride) px too far left.
        # The official code corrects by a whole pixel (0.75 px exact at stride 4; HRNet issue #22: COCO
        # AP 0.740 with the shift, 0.720 without). UDP grids flip exactly; stride 1 needs nothing.
        self.flip_shift = 0 if self.udp else int(1.0 - 1.0 / self.stride[0] + 0.5)
        self._pixels = np.arange(max(hw, hh), dtype=np.float64)     # heatmap pixel indices, encode()
        self._last_pixel = np.array([hw - 1, hh - 1], dtype=np.float64)

    def __repr__(self) -> str:
        return (f"HeatmapCodec(input_size={self.input_size}, heatmap_size={self.heatmap_size}, "
                f"sigma={self.sigma}, dark={self.dark}, udp={self.udp}, dark_kernel={self.dark_kernel}, "
                f"drop_outside_crop={self.drop_outside_crop})")

    # ------------------------------------------------------------------ encode
    def encode(self, keypoints: Array, visible: Array) -> dict[str, Array]:
        """keypoints [K, 2] in crop pixels, visible [K] (bool or >0 = labelled) ->
        {"heatmaps": float32 [K, h, w], "target_weight": float32 [K]}."""
        kps, vis = check_keypoints(keypoints, visible, "HeatmapCodec.encode")
        k = kps.shape[0]
        w, h = self.heatmap_size
        mu = kps / self.stride                                   # [K, 2] heatmap pixels
        radius = 3.0 * self.sigma
        finite = np.isfinite(mu).all(axis=1)
        mu = np.where(finite[:, None], mu, 0.0)
        # integer window lo <= i <= hi of the pixels within 3 sigma, per joint and axis; the joint
        # counts (official rule) when the window meets the map: lo <= size - 1 and hi >= 0
        lo, hi = np.ceil(mu - radius), np.floor(mu + radius)
        inside = ((lo <= self._last_pixel) & (hi >= 0)).all(axis=1)
        if self.drop_outside_crop:
            iw, ih = self.input_size
            inside &= (kps[:, 0] >= 0) & (kps[:, 0] <= iw - 1) & (kps[:, 1] >= 0) & (kps[:, 1] <= ih - 1)
        weight = ((vis > 0) & finite & inside).astype(np.float32)

        # Separable Gaussian, all joints at once: map[j] = outer(g_y[j], g_x[j]) where each 1-D factor
        # is exp(-(i - mu)^2 / (2 sigma^2)) on the window and 0 elsewhere (and for weight-0 joints).
        # Both axes share one [K, 2, max(w, h)] array (a per-joint loop cost ~3x more).
        on = weight > 0
        mu = np.where(on[:, None], mu, 0.0)   # far-away joints of weight 0 must not overflow the square
        i = self._pixels
        g = np.exp((-0.5 / (self.sigma * self.sigma)) * (i - mu[:, :, None]) ** 2)
        keep = (i >= lo[:, :, None]) & (i <= hi[:, :, None]) & on[:, None, None]
        g = np.where(keep, g, 0.0).astype(np.float32)
        heatmaps = np.empty((k, h, w), dtype=np.float32)
        # float32 product of the float32-rounded factors: within 1e-7 of the float64 outer product
        np.multiply(g[:, 1, :h, None], g[:, 0, None, :w], out=heatmaps)
        return {"heatmaps": heatmaps, "target_weight": weight}

    # ------------------------------------------------------------------ decode
    def decode(self, output) -> tuple[Array, Array]:
        """output: heatmaps [B, K, h, w] (tensor or array) -> (keypoints float32 [B, K, 2] in crop
        pixels, scores float32 [B, K] = each map's maximum)."""
        hm = _to_numpy(output, "decode")
        if hm.ndim != 4:
            raise ValueError(f"HeatmapCodec.decode: expected heatmaps [B, K, h, w], got shape {hm.shape}")
        b, k, h, w = hm.shape
        if (w, h) != self.heatmap_size:
            raise ValueError(f"HeatmapCodec.decode: heatmaps are {w}x{h} (w x h) but the codec was built for "
                             f"heatmap_size={self.heatmap_size}")
        flat = hm.reshape(b, k, h * w)
        idx = flat.argmax(axis=2)
        scores = np.take_along_axis(flat, idx[..., None], axis=2)[..., 0]
        px, py = idx % w, idx // w
        coords = np.stack([px, py], axis=-1).astype(np.float64)   # [B, K, 2]
        bi, ki = np.meshgrid(np.arange(b), np.arange(k), indexing="ij")
        if self.dark:
            coords += self._dark_offsets(hm, px, py, bi, ki)
        else:
            ok = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
            xp, xm = np.minimum(px + 1, w - 1), np.maximum(px - 1, 0)
            yp, ym = np.minimum(py + 1, h - 1), np.maximum(py - 1, 0)
            dx = hm[bi, ki, py, xp] - hm[bi, ki, py, xm]
            dy = hm[bi, ki, yp, px] - hm[bi, ki, ym, px]
            coords[..., 0] += np.where(ok, 0.25 * np.sign(dx), 0.0)
            coords[..., 1] += np.where(ok, 0.25 * np.sign(dy), 0.0)
        coords *= self.stride
        coords[scores <= 0] = 0.0
        return coords.astype(np.float32), scores.astype(np.float32)

    def _blur_keep_max(self, hm: Array) -> Array:
        """Gaussian blur (kernel `dark_kernel`, OpenCV's default sigma for it, zero border) of every
        map of [B, K, h, w], rescaled so that each map keeps its maximum."""
        g = cv2.getGaussianKernel(self.dark_kernel, 0)
        flat = np.ascontiguousarray(hm, dtype=np.float32).reshape(-1, *hm.shape[-2:])
        blur = np.empty_like(flat)
        for i in range(flat.shape[0]):          # OpenCV per map: ~10x faster than shifted numpy sums
            blur[i] = cv2.sepFilter2D(flat[i], -1, g, g, borderType=cv2.BORDER_CONSTANT)
        blur = blur.reshape(hm.shape)
        peak_before = hm.max(axis=(2, 3), keepdims=True)
        peak_after = blur.max(axis=(2, 3), keepdims=True)
        scale = np.where(peak_after > 0, peak_before / np.where(peak_after > 0, peak_after, 1.0), 1.0)
        return blur * scale

    def _dark_offsets(self, hm: Array, px: Array, py: Array, bi: Array, ki: Array) -> Array:
        h, w = hm.shape[-2:]
        lg = np.log(np.clip(self._blur_keep_max(hm), 1e-10, 50.0)).astype(np.float64)

        def at(dy: int, dx: int) -> Array:
            return lg[bi, ki, np.clip(py + dy, 0, h - 1), np.clip(px + dx, 0, w - 1)]

        c = at(0, 0)
        gx = 0.5 * (at(0, 1) - at(0, -1))
        gy = 0.5 * (at(1, 0) - at(-1, 0))
        hxx = 0.25 * (at(0, 2) - 2 * c + at(0, -2))
        hyy = 0.25 * (at(2, 0) - 2 * c + at(-2, 0))
        hxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
        det = hxx * hyy - hxy * hxy
        ok = (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2) & (np.abs(det) > 1e-12)
        safe = np.where(ok, det, 1.0)
        # offset = -H^-1 g with H^-1 = [[hyy, -hxy], [-hxy, hxx]] / det
        ox = -(hyy * gx - hxy * gy) / safe
        oy = -(-hxy * gx + hxx * gy) / safe
        off = np.stack([np.where(ok, ox, 0.0), np.where(ok, oy, 0.0)], axis=-1)
        # a Newton step longer than a pixel means the log-map is not locally quadratic: keep the argmax
        return np.where(np.abs(off).max(axis=-1, keepdims=True) <= 1.0, off, 0.0)

    # ------------------------------------------------------------------ flip
    def flip_back(self, output, flip_index, shift: bool = True):
        """Heatmaps [B, K, h, w] of the horizontally flipped crop -> aligned with the unflipped crop.

        Flips along W, swaps left/right channels (`flipped[:, j] = output[:, flip_index[j]]`) and, when
        `shift` (default, and only for non-UDP codecs with stride > 1), moves the maps 1 pixel right
        as the official code does; see `flip_shift` in `__init__` for why. Tensor in -> tensor out."""
        is_tensor = isinstance(output, torch.Tensor)
        if output.ndim != 4:
            raise ValueError(f"HeatmapCodec.flip_back: expected heatmaps [B, K, h, w], got shape {tuple(output.shape)}")
        idx = _flip_index(flip_index, output.shape[1])
        s = self.flip_shift if shift else 0
        if is_tensor:
            out = output.flip(3)[:, torch.as_tensor(idx, device=output.device)]
            if s:
                out = torch.cat([out[..., :s], out[..., :-s]], dim=3)
            return out
        out = np.asarray(output)[:, idx, :, ::-1]
        if s:
            out = np.concatenate([out[..., :s], out[..., :-s]], axis=3)
        return np.ascontiguousarray(out)

    def flip_test_average(self, model_out, flipped_out, flip_index):
        """Flip test: mean of the output for the crop and the flipped-back output for its mirror."""
        return 0.5 * (model_out + self.flip_back(flipped_out, flip_index))
