"""SimCC head around any heatmap model (Li et al., "SimCC: a Simple Coordinate Classification
Perspective for Human Pose Estimation", ECCV 2022; the student of seed 002).

The wrapped model's K output maps [B, K, h, w] (h = H / stride, w = W / stride) are flattened to
[B, K, h*w] and two Linear layers classify each joint's x and y into W*k and H*k bins
(k = `split_ratio`, 2.0 on COCO), as in the official `leeyegy/SimCC` head (final 1x1 conv to K
maps, flatten, `mlp_head_x` / `mlp_head_y`). Output: `(x_logits [B, K, W*k], y_logits [B, K, H*k])`;
decoding (softmax / argmax / k) lives in `codecs/simcc.py`.

Because the Linear layers see a fixed h*w, the model is built for one `input_size`.
Features are the wrapped model's (`backbone`, `head_in`, ...) plus `simcc_in`, the K maps fed to
the two Linear layers.

Parameter count at 17 joints, 256x192 (pinned in tests/test_models_simcc.py): HRNet-W32
28,536,113 + Linear(3072 -> 384) 1,180,032 + Linear(3072 -> 512) 1,573,376 = 31,289,521;
7.69 GMACs (HRNet-W32 alone 7.65).
Seed 002 lists its HRNet-W32 SimCC student at 31M (the SimCC rows of its table copy HRNet's 28.5M).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from posedistill.models.hrnet import HRNet, hrnet_w32, hrnet_w48
from posedistill.models.pose_resnet import pose_resnet
from posedistill.models.registry import register_model


class SimCCHead(nn.Module):
    """`base` (a heatmap model) + flatten + Linear x / Linear y classifiers."""

    head_type = "simcc"

    def __init__(self, base: nn.Module, input_size: tuple[int, int], split_ratio: float = 2.0):
        super().__init__()
        if getattr(base, "head_type", None) != "heatmap":
            raise ValueError(f"SimCCHead wraps a heatmap model; {type(base).__name__}.head_type is "
                             f"{getattr(base, 'head_type', None)!r}")
        stride = int(base.output_stride)
        w, h = (int(v) for v in input_size)
        if w % stride or h % stride:
            raise ValueError(f"input_size {input_size} (width, height) must be divisible by the base "
                             f"model's output stride {stride}")
        if split_ratio <= 0:
            raise ValueError(f"split_ratio must be > 0, got {split_ratio}")
        self.base = base
        self.input_size = (w, h)
        self.split_ratio = float(split_ratio)
        self.output_stride = stride
        self.map_size = (w // stride, h // stride)  # (w, h) of the flattened maps
        self.num_x_bins = int(round(w * split_ratio))
        self.num_y_bins = int(round(h * split_ratio))
        in_features = self.map_size[0] * self.map_size[1]
        self.mlp_head_x = nn.Linear(in_features, self.num_x_bins)
        self.mlp_head_y = nn.Linear(in_features, self.num_y_bins)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        if return_features:
            maps, feats = self.base(x, return_features=True)
        else:
            maps = self.base(x)
        if tuple(maps.shape[-2:]) != (self.map_size[1], self.map_size[0]):
            raise ValueError(f"SimCC head built for input {self.input_size[1]}x{self.input_size[0]} (HxW) expects "
                             f"base maps of {self.map_size[1]}x{self.map_size[0]}, got "
                             f"{maps.shape[-2]}x{maps.shape[-1]} from input {x.shape[-2]}x{x.shape[-1]}")
        flat = maps.flatten(2)                      # [B, K, h*w]
        out = (self.mlp_head_x(flat), self.mlp_head_y(flat))
        if not return_features:
            return out
        feats = dict(feats)
        feats["simcc_in"] = maps
        return out, feats


def simcc(base: nn.Module, input_size: tuple[int, int] = (192, 256), split_ratio: float = 2.0) -> SimCCHead:
    """Wrap a heatmap model with a SimCC head for `input_size` (width, height)."""
    return SimCCHead(base, input_size, split_ratio)


@register_model
def simcc_hrnet_w32(num_joints: int = 17, input_size: tuple[int, int] = (192, 256),
                    split_ratio: float = 2.0) -> SimCCHead:
    """SimCC on HRNet-W32 (the seed-002 student; the official SimCC HRNet model)."""
    return SimCCHead(hrnet_w32(num_joints=num_joints), input_size, split_ratio)


@register_model
def simcc_hrnet_w48(num_joints: int = 17, input_size: tuple[int, int] = (192, 256),
                    split_ratio: float = 2.0) -> SimCCHead:
    """SimCC on HRNet-W48 (the seed-002 teacher; the official SimCC HRNet-W48 model)."""
    return SimCCHead(hrnet_w48(num_joints=num_joints), input_size, split_ratio)


@register_model
def simcc_r18(num_joints: int = 17, input_size: tuple[int, int] = (192, 256),
              split_ratio: float = 2.0) -> SimCCHead:
    """SimCC on SimpleBaseline-R18 (a small, fast student; deconv head kept)."""
    return SimCCHead(pose_resnet(18, num_joints), input_size, split_ratio)


@register_model
def simcc_r50(num_joints: int = 17, input_size: tuple[int, int] = (192, 256),
              split_ratio: float = 2.0) -> SimCCHead:
    """SimCC on SimpleBaseline-R50 (deconv head kept: stride-4 maps are flattened)."""
    return SimCCHead(pose_resnet(50, num_joints), input_size, split_ratio)



# CPU-sized HRNets for seed 002's synthetic experiments: one exchange unit per stage and two blocks per
# branch (HRNet: 1 / 4 / 3 units, 4 blocks). ELPN's depthwise and GC blocks are 5-10x slower per step
# on a CPU than these plain blocks at the same size, which is why these and not ELPN stand in for
# HRNet-W32 / HRNet-W48 there.
SMALL_HRNET = dict(stage_modules=(1, 1, 1), branch_blocks=2)


@register_model
def simcc_hrnet_w16_small(num_joints: int = 17, input_size: tuple[int, int] = (192, 256),
                          split_ratio: float = 2.0) -> SimCCHead:
    """SimCC on a small HRNet-W16 (SMALL_HRNET): the CPU stand-in for seed 002's HRNet-W32 student."""
    return SimCCHead(HRNet(num_joints=num_joints, width=16, **SMALL_HRNET), input_size, split_ratio)


@register_model
def simcc_hrnet_w32_small(num_joints: int = 17, input_size: tuple[int, int] = (192, 256),
                          split_ratio: float = 2.0) -> SimCCHead:
    """SimCC on a small HRNet-W32 (SMALL_HRNET): the CPU stand-in for seed 002's HRNet-W48 teacher."""
    return SimCCHead(HRNet(num_joints=num_joints, width=32, **SMALL_HRNET), input_size, split_ratio)
