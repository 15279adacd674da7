"""Drawing poses on images and tiling pictures into a grid (OpenCV, BGR uint8).

Works for any `KeypointMeta`: joints whose name starts with ``left_`` are drawn in one colour,
``right_`` in another and the rest (nose, neck, pelvis, ...) in a third, so a left/right swap is
visible at a glance. A limb takes its side's colour when both ends are on that side.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from posedistill.keypoints import KeypointMeta

LEFT_BGR = (0, 140, 255)     # orange
RIGHT_BGR = (255, 150, 0)    # blue
CENTER_BGR = (60, 210, 60)   # green


def joint_sides(meta: KeypointMeta) -> np.ndarray:
    """[K] int: 1 for left joints, -1 for right joints, 0 for the others (by joint name)."""
    return np.array([1 if n.startswith("left") else -1 if n.startswith("right") else 0 for n in meta.joints])


def _side_color(side: int) -> tuple[int, int, int]:
    return LEFT_BGR if side > 0 else RIGHT_BGR if side < 0 else CENTER_BGR


def draw_poses(image_bgr: np.ndarray, keypoints: np.ndarray, meta: KeypointMeta, score_thr: float = 0.3,
               radius: int | None = None, thickness: int | None = None, boxes: np.ndarray | None = None,
               copy: bool = True) -> np.ndarray:
    """Draw people's skeletons.

    image_bgr: [H, W, 3] uint8. keypoints: [N, K, 3] or [K, 3] as (x, y, score or COCO visibility);
    a joint is drawn when its third value is above `score_thr` (so with the default 0.3, COCO v=1 and
    v=2 are drawn and v=0 is not). boxes: optional [N, 4] (x, y, w, h) drawn in grey.
    Radius / thickness default to sizes proportional to the image. Returns the drawn image (a copy
    unless `copy=False`).
    """
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"draw_poses: image must be [H, W, 3] BGR, got shape {image_bgr.shape}")
    kps = np.asarray(keypoints, dtype=np.float64)
    if kps.ndim == 2:
        kps = kps[None]
    if kps.size == 0:
        kps = kps.reshape(0, meta.num_joints, 3)
    if kps.ndim != 3 or kps.shape[1:] != (meta.num_joints, 3):
        raise ValueError(f"draw_poses: keypoints must be [N, {meta.num_joints}, 3] for {meta.name!r}, "
                         f"got shape {tuple(np.shape(keypoints))}")
    img = image_bgr.copy() if copy else image_bgr
    h, w = img.shape[:2]
    r = radius if radius is not None else max(2, int(round(0.006 * max(h, w))))
    t = thickness if thickness is not None else max(1, int(round(r * 0.6)))
    sides = joint_sides(meta)
    if boxes is not None:
        for x, y, bw, bh in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
            cv2.rectangle(img, (int(round(x)), int(round(y))), (int(round(x + bw)), int(round(y + bh))),
                          (160, 160, 160), max(1, t // 2), cv2.LINE_AA)
    for person in kps:
        shown = person[:, 2] > score_thr
        for a, b in meta.skeleton:
            if shown[a] and shown[b]:
                side = sides[a] if sides[a] == sides[b] else 0
                cv2.line(img, (int(round(person[a, 0])), int(round(person[a, 1]))),
                         (int(round(person[b, 0])), int(round(person[b, 1]))), _side_color(side), t, cv2.LINE_AA)
        for j in np.flatnonzero(shown):
            c = (int(round(person[j, 0])), int(round(person[j, 1])))
            cv2.circle(img, c, r, _side_color(sides[j]), -1, cv2.LINE_AA)
            cv2.circle(img, c, r, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def save_grid(images: Sequence[np.ndarray], path: str | Path, cols: int = 3, cell_width: int | None = None,
              pad: int = 4, row_labels: Sequence[str] | None = None) -> np.ndarray:
    """Tile BGR images row by row into one picture and write it to `path` (format from the suffix).

    Every image is resized to `cell_width` (default: the first image's width) keeping its aspect
    ratio; cells are as tall as the tallest image. `row_labels` (one per row) are written at the left
    edge of each row. Returns the grid.
    """
    if not images:
        raise ValueError("save_grid: no images given")
    if cols < 1:
        raise ValueError(f"save_grid: cols must be >= 1, got {cols}")
    cw = int(cell_width or images[0].shape[1])
    cells = []
    for i, im in enumerate(images):
        if im.ndim == 2:
            im = cv2.cvtColor(im, cv2.COLOR_GRAY2BGR)
        if im.ndim != 3 or im.shape[2] != 3:
            raise ValueError(f"save_grid: image {i} must be [H, W, 3] or [H, W], got shape {im.shape}")
        ch = max(1, int(round(im.shape[0] * cw / im.shape[1])))
        cells.append(cv2.resize(im, (cw, ch), interpolation=cv2.INTER_AREA))
    rows = (len(cells) + cols - 1) // cols
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"save_grid: {len(row_labels)} row labels for {rows} rows")
    chh = max(c.shape[0] for c in cells)
    grid = np.full((rows * chh + (rows + 1) * pad, cols * cw + (cols + 1) * pad, 3), 255, np.uint8)
    for i, c in enumerate(cells):
        r, k = divmod(i, cols)
        y, x = pad + r * (chh + pad), pad + k * (cw + pad)
        grid[y:y + c.shape[0], x:x + cw] = c
    if row_labels is not None:
        scale = max(0.4, cw / 640)
        for r, text in enumerate(row_labels):
            org = (pad + 6, pad + r * (chh + pad) + int(24 * scale))
            cv2.putText(grid, str(text), org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 4, cv2.LINE_AA)
            cv2.putText(grid, str(text), org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), grid):
        raise OSError(f"save_grid: could not write {path} (is the suffix an image format OpenCV knows?)")
    return grid
