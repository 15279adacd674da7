"""Coordinate codec: for networks that output keypoints directly (`head_type = "coords"`, the
student + IGP-GCN refiner of seed 002, `models/gcn_refiner.py`).

Model output: [B, K, 3] = (x, y) in crop pixels and a confidence per joint. Decoding splits it.
Encoding hands the crop keypoints through as the target "coords" [K, 2] with target weight 1
for labelled joints (the ground-truth supervision of Table IV's scheme 1).
Flip test: crop pixel x of the mirrored crop is x' = W - 1 - x (the image flip of `torch.flip`);
joints are swapped left / right, then coordinates and confidences are averaged.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from posedistill.codecs.heatmap import _flip_index, check_keypoints

__all__ = ["CoordinateCodec"]


class CoordinateCodec:
    target_keys = ("coords",)   # not "keypoints": the dataset's samples use that name for [K, 3]

    def __init__(self, input_size: Sequence[int]):
        w, h = (int(v) for v in input_size)
        if w < 1 or h < 1:
            raise ValueError(f"CoordinateCodec: input_size must be positive (width, height), got {input_size!r}")
        self.input_size = (w, h)

    def encode(self, keypoints: np.ndarray, visible: np.ndarray) -> dict[str, np.ndarray]:
        keypoints, visible = check_keypoints(keypoints, visible, "CoordinateCodec.encode")
        visible = visible.astype(bool)
        return {"coords": np.where(visible[:, None], keypoints, 0).astype(np.float32),
                "target_weight": visible.astype(np.float32)}

    def decode(self, output) -> tuple[np.ndarray, np.ndarray]:
        """[B, K, 3] -> (keypoints float32 [B, K, 2] crop pixels, scores float32 [B, K])."""
        out = output.detach().float().cpu().numpy() if isinstance(output, torch.Tensor) else np.asarray(output)
        if out.ndim != 3 or out.shape[2] != 3:
            raise ValueError(f"CoordinateCodec.decode: expected [B, K, 3] (x, y, score), got {out.shape}")
        return out[..., :2].astype(np.float32), out[..., 2].astype(np.float32)

    def flip_back(self, output, flip_index):
        """Output [B, K, 3] of the mirrored crop -> aligned with the unflipped crop (tensor or array)."""
        idx = _flip_index(flip_index, output.shape[1])
        if isinstance(output, torch.Tensor):
            out = output[:, torch.as_tensor(idx, device=output.device)].clone()
        else:
            out = np.array(output, dtype=np.float32)[:, idx]
        out[..., 0] = self.input_size[0] - 1 - out[..., 0]
        return out

    def flip_test_average(self, model_out, flipped_out, flip_index):
        return 0.5 * (model_out + self.flip_back(flipped_out, flip_index))
