"""Geometry and pixel transforms of the top-down pipeline.

Conventions (docs/architecture.md): sizes are `(width, height)`; a person box becomes `center (2,)`
and `scale (2,)` where scale is the box size **in pixels** after fixing the aspect ratio to the
network input's and padding by 1.25 (the HRNet code stores the same size divided by 200).

The crop is one 2x3 affine `A` from image pixels to crop pixels:

    crop = S @ R(-rot) @ F @ (p - center) + c_out

* `S = diag(out_w / scale_w, out_h / scale_h)`, `c_out = (out_w / 2, out_h / 2)` -- the HRNet /
  SimpleBaseline `get_affine_transform` (three-point construction) written in closed form;
* with `udp=True` (unbiased data processing, Huang et al. 2020, MMPose `get_udp_warp_matrix`)
  sizes are counted between first and last pixel centre: `S = diag((out_w - 1) / scale_w, ...)`,
  `c_out = ((out_w - 1) / 2, (out_h - 1) / 2)`;
* `R(-rot)`: with the HRNet sign, a positive `rot` (degrees) turns the image content
  counter-clockwise in the crop (the image direction `R(rot) @ (0, -1)` becomes crop "up");
* `F = diag(-1, 1)` when `flip`: the HRNet code flips the whole image (`x -> W - 1 - x`, centre
  too) before cropping; that is the same as mirroring `p - center`, so the flip lives in the
  affine and the image is never flipped separately.

Random augmentation follows the HRNet training recipe (`lib/dataset/JointsDataset.py`): scale x
clip(N(0,1) * sf + 1, 1 - sf, 1 + sf) with sf = 0.35, rotation clip(N(0,1) * rf, -2 rf, 2 rf) with
rf = 45 applied with probability 0.6, horizontal flip with probability 0.5, and a half-body crop
with probability 0.3 when more than 8 joints are labelled.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from posedistill.keypoints import KeypointMeta

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BOX_PADDING = 1.25
HALF_BODY_PADDING = 1.5   # HRNet enlarges the half-body box by 1.5 instead of 1.25


# --------------------------------------------------------------------------------------------------
# boxes


def fix_aspect_ratio(width: float, height: float, aspect_ratio: float) -> tuple[float, float]:
    """Grow the shorter side so that width / height == aspect_ratio (never shrinks the box)."""
    if width > aspect_ratio * height:
        height = width / aspect_ratio
    else:
        width = height * aspect_ratio
    return width, height


def box_to_center_scale(box_xywh, aspect_ratio: float, padding: float = BOX_PADDING
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(x, y, w, h) box in image pixels -> (center (2,), scale (2,)) float32, scale in pixels.

    aspect_ratio: input width / height (0.75 for 192x256)."""
    x, y, w, h = (float(v) for v in box_xywh)
    if aspect_ratio <= 0:
        raise ValueError(f"aspect_ratio must be > 0, got {aspect_ratio}")
    center = np.array([x + 0.5 * w, y + 0.5 * h], dtype=np.float32)
    w, h = fix_aspect_ratio(w, h, aspect_ratio)
    scale = np.array([w * padding, h * padding], dtype=np.float32)
    return center, scale


def center_scale_to_box(center, scale, padding: float = BOX_PADDING) -> np.ndarray:
    """Inverse of `box_to_center_scale` up to the aspect fix: (x, y, w, h) of the unpadded box."""
    w, h = float(scale[0]) / padding, float(scale[1]) / padding
    return np.array([center[0] - 0.5 * w, center[1] - 0.5 * h, w, h], dtype=np.float32)


# --------------------------------------------------------------------------------------------------
# affine matrices


def get_affine(center, scale, rot: float, output_size: tuple[int, int], flip: bool = False,
               udp: bool = False) -> np.ndarray:
    """2x3 float64 affine from image pixels to crop pixels (see the module docstring).

    output_size: (width, height) of the crop; rot in degrees (HRNet sign); flip mirrors the box
    horizontally about its centre (HRNet's whole-image flip)."""
    out_w, out_h = output_size
    sw, sh = float(scale[0]), float(scale[1])
    if sw <= 0 or sh <= 0:
        raise ValueError(f"scale must be positive (box size in pixels), got {tuple(scale)}")
    if udp:
        sx, sy = (out_w - 1.0) / sw, (out_h - 1.0) / sh
        cx_out, cy_out = (out_w - 1.0) * 0.5, (out_h - 1.0) * 0.5
    else:
        sx, sy = out_w / sw, out_h / sh
        cx_out, cy_out = out_w * 0.5, out_h * 0.5
    theta = math.radians(rot)
    cs, sn = math.cos(theta), math.sin(theta)
    fx = -1.0 if flip else 1.0
    # S @ R(-theta) @ F, with R(-theta) = [[cs, sn], [-sn, cs]]; Python floats, one array at the end
    # (called twice per training sample)
    a, b, c, d = sx * cs * fx, sx * sn, -sy * sn * fx, sy * cs
    px, py = float(center[0]), float(center[1])
    return np.array([[a, b, cx_out - (a * px + b * py)], [c, d, cy_out - (c * px + d * py)]], dtype=np.float64)


def invert_affine(affine: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine (or a batch [..., 2, 3]) as 2x3 float64."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape == (2, 3):      # closed form: np.linalg.inv costs ~10 us, once per training sample
        (a, b, tx), (c, d, ty) = affine.tolist()
        det = a * d - b * c
        if det == 0.0:
            raise np.linalg.LinAlgError("Singular matrix")
        ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
        return np.array([[ia, ib, -(ia * tx + ib * ty)], [ic, id_, -(ic * tx + id_ * ty)]])
    lin, t = affine[..., :2], affine[..., 2:]
    inv_lin = np.linalg.inv(lin)
    return np.concatenate([inv_lin, -inv_lin @ t], axis=-1)


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2x3 affine of `outer(inner(p))`."""
    outer = np.asarray(outer, dtype=np.float64)
    inner = np.asarray(inner, dtype=np.float64)
    lin = outer[:, :2] @ inner[:, :2]
    return np.concatenate([lin, (outer[:, :2] @ inner[:, 2:] + outer[:, 2:])], axis=1)


def apply_affine(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Points [..., 2] mapped by one 2x3 affine (float64 out)."""
    pts = np.asarray(points, dtype=np.float64)
    affine = np.asarray(affine, dtype=np.float64)
    return pts @ affine[:, :2].T + affine[:, 2]


def crop_to_image(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Predicted crop-pixel keypoints back to image pixels with the inverse of the sample's
    image->crop `affine`. points [K, 2] with affine [2, 3], or batched [B, K, 2] with [B, 2, 3]."""
    pts = np.asarray(points, dtype=np.float64)
    affine = np.asarray(affine, dtype=np.float64)
    inv = invert_affine(affine)
    if affine.ndim == 2:
        return apply_affine(pts, inv)
    if pts.ndim != 3 or affine.ndim != 3 or pts.shape[0] != affine.shape[0]:
        raise ValueError(f"crop_to_image: expected points [B, K, 2] with affine [B, 2, 3], "
                         f"got {pts.shape} and {affine.shape}")
    return np.einsum("bij,bkj->bki", inv[..., :2], pts) + inv[:, None, :, 2]


def reduced_read_affine(factor: int) -> np.ndarray:
    """2x3 affine from the pixels of an image decoded at 1/factor (cv2.IMREAD_REDUCED_COLOR_*) to
    full-resolution pixels: reduced pixel i averages full pixels f*i .. f*i+f-1, centred at
    f*i + (f-1)/2."""
    off = (factor - 1) * 0.5
    return np.array([[factor, 0.0, off], [0.0, factor, off]], dtype=np.float64)


def source_rows(affine: np.ndarray, output_size: tuple[int, int]) -> tuple[int, int]:
    """Rows [y0, y1) of the source image that `warp_crop(image, affine, output_size)` reads.

    Bilinear sampling at source row y reads rows floor(y) and floor(y) + 1; the crop's pixel
    centres map to a parallelogram whose extreme rows are at its corners. One row of margin on
    each side absorbs OpenCV's fixed-point (1/32 pixel) coordinate rounding."""
    _, (c, d, ty) = invert_affine(affine).tolist()
    xs, ys = output_size[0] - 1.0, output_size[1] - 1.0
    corners = (ty, ty + c * xs, ty + d * ys, ty + c * xs + d * ys)
    return math.floor(min(corners)) - 1, math.floor(max(corners)) + 3


# --------------------------------------------------------------------------------------------------
# pixels


def warp_crop(image: np.ndarray, affine: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """Crop `image` (HxWxC uint8 or float) with `affine` to output_size (width, height); bilinear,
    zero border (as the HRNet / MMPose code)."""
    return cv2.warpAffine(image, np.asarray(affine, dtype=np.float64), (int(output_size[0]), int(output_size[1])),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _normalize_coeffs(mean, std) -> tuple[list[float], list[float]]:
    """Per-channel (alpha, beta) with (x / 255 - mean) / std == x * alpha + beta; shared by
    `normalize_image` (in the dataset) and `normalize_images` (on the device), which so give the
    same float32 values."""
    return [1.0 / (255.0 * float(s)) for s in std], [-float(m) / float(s) for m, s in zip(mean, std)]


_IMAGENET_COEFFS = _normalize_coeffs(IMAGENET_MEAN, IMAGENET_STD)


def normalize_image(image: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD, *, bgr: bool = False
                    ) -> np.ndarray:
    """HxWx3 uint8 RGB -> float32 3xHxW, (x / 255 - mean) / std (ImageNet statistics by default).

    Also takes HxWx4 (RGBX, as the 4-byte JPEG decode of `topdown.decode_image` gives; the 4th
    channel is ignored) and, with `bgr=True`, BGR / BGRX input, so the caller never converts colours."""
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"normalize_image: expected an HxWx3 RGB (or HxWx4 RGBX) image, got shape {image.shape}")
    default = mean is IMAGENET_MEAN and std is IMAGENET_STD
    alpha, beta = _IMAGENET_COEFFS if default else _normalize_coeffs(mean, std)
    # Contiguous colour planes (OpenCV copies a strided / reversed view itself), then one fused
    # x * alpha + beta pass per plane straight into the channels-first float32 buffer:
    # about half the time of numpy subtract + multiply on strided channel views.
    planes = cv2.split(image)
    if bgr:
        planes = planes[2::-1]
    out = np.empty((3, image.shape[0], image.shape[1]), dtype=np.float32)
    for c in range(3):
        # addWeighted(src1, alpha, src2, 0, beta) = src1 * alpha + beta; out[c] is a contiguous
        # float32 plane of the right size, so OpenCV writes into it in place
        cv2.addWeighted(planes[c], alpha[c], planes[c], 0.0, beta[c], dst=out[c], dtype=cv2.CV_32F)
    return out


def rgb_planes(image: np.ndarray, *, bgr: bool = False) -> np.ndarray:
    """HxWx3 RGB (or HxWx4 RGBX; BGR / BGRX with `bgr=True`) uint8 -> uint8 RGB 3xHxW, unnormalised:
    the training sample's `image` with `TopDownDataset(normalize=False)`, finished by
    `normalize_images` on the device (a quarter of the bytes for DataLoader workers to hand over)."""
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise ValueError(f"rgb_planes: expected an HxWx3|4 uint8 image, got {image.dtype} {image.shape}")
    planes = cv2.split(image)
    return np.stack(planes[2::-1] if bgr else planes[:3])


def normalize_images(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 RGB [..., 3, H, W] (from `rgb_planes`) -> float32 (x / 255 - mean) / std on the
    tensor's device, equal to `normalize_image` of the same pixels (up to float rounding).
    Float input is already normalised and comes back unchanged, so callers need not know which
    kind of dataset produced the batch."""
    if images.dtype != torch.uint8:
        return images
    if images.dim() < 3 or images.shape[-3] != 3:
        raise ValueError(f"normalize_images: expected uint8 RGB images [..., 3, H, W], got shape {tuple(images.shape)}")
    alpha, beta = _normalize_coeffs(mean, std)
    alpha = torch.tensor(alpha, dtype=torch.float32, device=images.device).view(3, 1, 1)
    beta = torch.tensor(beta, dtype=torch.float32, device=images.device).view(3, 1, 1)
    return torch.addcmul(beta, images.float(), alpha)


# --------------------------------------------------------------------------------------------------
# keypoints


def flip_keypoints(keypoints: np.ndarray, flip_index: np.ndarray, center_x: float | None = None,
                   width: float | None = None) -> np.ndarray:
    """Swap left/right joints (`meta.flip_index`) and, if given, mirror x.

    Mirror either about `center_x` (x -> 2 * center_x - x) or, HRNet style, in an image of
    `width` pixels (x -> width - 1 - x). With neither, only the joint order changes (use this when
    the flip is part of the affine). Unlabelled joints (v == 0) keep their coordinates unchanged
    apart from the swap. Applying the same call twice returns the input."""
    kps = np.asarray(keypoints)
    if kps.ndim != 2 or kps.shape[0] != len(flip_index):
        raise ValueError(f"flip_keypoints: expected keypoints [K={len(flip_index)}, 2|3], got {kps.shape}")
    out = kps[np.asarray(flip_index)].copy()
    if center_x is not None and width is not None:
        raise ValueError("flip_keypoints: give center_x or width, not both")
    if center_x is not None or width is not None:
        axis2 = 2.0 * center_x if center_x is not None else width - 1.0
        labelled = out[:, 2] > 0 if out.shape[1] > 2 else np.ones(len(out), bool)
        out[labelled, 0] = axis2 - out[labelled, 0]
    return out


def keypoints_to_crop(keypoints: np.ndarray, affine: np.ndarray, flip_index: np.ndarray | None = None
                      ) -> np.ndarray:
    """Image-pixel keypoints [K, 3] -> crop pixels [K, 3] float32 with the crop's affine. When the
    affine includes a horizontal flip, pass `flip_index` to swap left/right joints as well.
    Unlabelled joints (v == 0) are set to (0, 0, 0)."""
    kps = np.asarray(keypoints, dtype=np.float64)
    out = np.zeros((kps.shape[0], 3), dtype=np.float32)
    out[:, :2] = apply_affine(kps[:, :2], affine)
    out[:, 2] = kps[:, 2]
    out[kps[:, 2] <= 0] = 0.0
    if flip_index is not None:
        out = out[np.asarray(flip_index)]
    return out


def affine_has_flip(affine: np.ndarray) -> bool:
    """True when the 2x2 part has a negative determinant (a mirror)."""
    a = np.asarray(affine)
    return bool(a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0] < 0)


# --------------------------------------------------------------------------------------------------
# random augmentation


def random_scale_rotation(rng: np.random.Generator, scale_factor: float = 0.35, rotation_factor: float = 45.0,
                          rotation_prob: float = 0.6) -> tuple[float, float]:
    """HRNet training draw: (scale multiplier, rotation in degrees).

    multiplier = clip(N(0,1) * sf + 1, 1 - sf, 1 + sf); rotation = clip(N(0,1) * rf, -2 rf, 2 rf)
    with probability `rotation_prob`, else 0."""
    # Python min/max on scalars: np.clip costs ~5 us per call on a float
    s = min(max(rng.standard_normal() * scale_factor + 1.0, 1.0 - scale_factor), 1.0 + scale_factor)
    r = 0.0
    if rotation_factor > 0 and rng.random() < rotation_prob:
        r = min(max(rng.standard_normal() * rotation_factor, -2.0 * rotation_factor), 2.0 * rotation_factor)
    return float(s), float(r)


def half_body_center_scale(keypoints: np.ndarray, meta: KeypointMeta, aspect_ratio: float,
                           rng: np.random.Generator, padding: float = HALF_BODY_PADDING
                           ) -> tuple[np.ndarray, np.ndarray] | None:
    """Center/scale of the upper or lower body (HRNet's half-body augmentation, re-written).

    Picks the upper body with probability 0.5 when it has more than 2 labelled joints, else the
    lower body (falling back to the upper one when the lower has 2 or fewer). The box is the
    joints' extent around their mean, aspect-fixed and padded by 1.5. Returns None when fewer than
    2 joints remain."""
    kps = np.asarray(keypoints)
    labelled = kps[:, 2] > 0
    upper = [j for j in meta.upper_body if labelled[j]]
    lower = [j for j in meta.lower_body if labelled[j]]
    if rng.random() < 0.5 and len(upper) > 2:
        chosen = upper
    else:
        chosen = lower if len(lower) > 2 else upper
    if len(chosen) < 2:
        return None
    pts = kps[chosen, :2].astype(np.float64)
    center = pts.mean(axis=0)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    w, h = fix_aspect_ratio(float(hi[0] - lo[0]), float(hi[1] - lo[1]), aspect_ratio)
    if w <= 0 or h <= 0:
        return None
    return center.astype(np.float32), np.array([w * padding, h * padding], dtype=np.float32)
