"""HRNet (Sun et al., "Deep High-Resolution Representation Learning for Human Pose Estimation", CVPR 2019).

The state-dict layout equals the official code (`leoxiaobin/deep-high-resolution-net.pytorch`,
`lib/models/pose_hrnet.py`), so an official checkpoint such as `pose_hrnet_w32_256x192.pth` loads
with `strict=True`:

- stem `conv1, bn1, conv2, bn2` (two 3x3 stride-2 convs, 64 channels), `layer1` (4 Bottlenecks,
  torchvision names, `downsample.0/1`);
- `transition{1,2,3}.i`: for a kept branch whose width changes `Sequential(conv3x3, BN, ReLU)`, for a
  new branch `Sequential(Sequential(conv3x3 stride 2, BN, ReLU))` (so keys read `transition2.2.0.0`);
  `None` (no keys) where nothing changes;
- `stage{2,3,4}.m` (HighResolutionModule): `branches.i.b` blocks and `fuse_layers.i.j`:
  j > i: `Sequential(conv1x1, BN)` then nearest up-sampling (the official weightless `Upsample`
  at index 2 is done in `forward`, resizing to the exact size of branch i, so inputs need not be
  multiples of 32); j < i: `Sequential` of i-j stride-2 3x3 conv units, each
  `Sequential(conv, BN[, ReLU])`; the last module of stage 4 keeps only output 0;
- `final_layer`: conv to K heatmaps (bias) on the highest-resolution branch (stride 4).

The class takes its block types as arguments so that ELPN (`elpn.py`, seed 001) reuses the same
multi-resolution builder with other blocks, fewer modules and an extra context block.

Parameter counts at 17 joints (pinned in tests/test_models_hrnet.py): W32 28,536,113; W48 63,595,745.
MACs at 256x192 (torch.utils.flop_counter FLOPs / 2, `posedistill.tools.profile.count_gmacs`):
W32 7.645 G, W48 15.692 G. The HRNet paper's 7.1 / 14.6 "GFLOPs" are the same MACs divided by 2^30
instead of 1e9 (7.645e9 / 2^30 = 7.12; `count_official_summary_gflops` gives 7.12 / 14.61). Rerun:
`python -c "from posedistill.models import create_model as c; from posedistill.tools.profile import count_gmacs as g; print(g(c('hrnet_w32'), (192, 256)))"`.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from posedistill.models.pose_resnet import BN_MOMENTUM, BasicBlock, Bottleneck, init_head_
from posedistill.models.registry import register_model

# width -> settings; the official w32/w48 256x192 configs differ only in the branch widths.
HRNET_SPECS: dict[int, dict] = {
    32: dict(width=32, stage_modules=(1, 4, 3), branch_blocks=4),
    48: dict(width=48, stage_modules=(1, 4, 3), branch_blocks=4),
}

STEM_CHANNELS = 64      # stem convs and layer1 planes (layer1 outputs 64 * 4 = 256)
STAGE1_BLOCKS = 4       # Bottlenecks in layer1


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                               nn.BatchNorm2d(cout, momentum=BN_MOMENTUM)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def make_blocks(block: type[nn.Module], inplanes: int, planes: int, num_blocks: int) -> nn.Sequential:
    """`num_blocks` blocks at stride 1; a 1x1 conv + BN shortcut on the first when widths differ.

    `block(inplanes, planes, stride, downsample)` with a class attribute `expansion` (torchvision
    signature)."""
    downsample = None
    if inplanes != planes * block.expansion:
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes * block.expansion, 1, bias=False),
                                   nn.BatchNorm2d(planes * block.expansion, momentum=BN_MOMENTUM))
    layers = [block(inplanes, planes, 1, downsample)]
    layers += [block(planes * block.expansion, planes) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)


def make_transition(pre: Sequence[int], cur: Sequence[int]) -> nn.ModuleList:
    """Official transition layer from branch widths `pre` to `cur` (len(cur) = len(pre) + 1)."""
    layers: list[nn.Module | None] = []
    for i, c in enumerate(cur):
        if i < len(pre):
            layers.append(_conv_bn(pre[i], c, 3, 1, relu=True) if pre[i] != c else None)
        else:
            # New branch: downsample the lowest-resolution input (once per missing level).
            steps = i + 1 - len(pre)
            units = [_conv_bn(pre[-1], c if k == steps - 1 else pre[-1], 3, 2, relu=True) for k in range(steps)]
            layers.append(nn.Sequential(*units))
    return nn.ModuleList(layers)


class HighResolutionModule(nn.Module):
    """One exchange unit: a block stack per branch, then every output sums all branches resampled.

    Up-sampling: 1x1 conv + BN + nearest resize to branch i's size; down-sampling: chained stride-2 3x3 conv + BN
    (ReLU between, none after the last); ReLU after each sum (official `FUSE_METHOD: SUM`)."""

    def __init__(self, block: type[nn.Module], channels: Sequence[int], num_blocks: int, multi_scale_output: bool):
        super().__init__()
        self.num_branches = len(channels)
        self.branches = nn.ModuleList(make_blocks(block, c, c // block.expansion, num_blocks) for c in channels)
        self.fuse_layers = self._make_fuse_layers(channels, multi_scale_output) if self.num_branches > 1 else None
        self.relu = nn.ReLU(inplace=True)

    @staticmethod
    def _make_fuse_layers(channels: Sequence[int], multi_scale_output: bool) -> nn.ModuleList:
        fuse = []
        for i in range(len(channels) if multi_scale_output else 1):
            row: list[nn.Module | None] = []
            for j, cj in enumerate(channels):
                if j > i:
                    # The official Sequential ends with a weightless nn.Upsample(2**(j-i)); the
                    # forward resizes to branch i's exact size instead, which is the same for inputs
                    # divisible by 32 and also works for others (64x48 test crops).
                    row.append(nn.Sequential(nn.Conv2d(cj, channels[i], 1, bias=False),
                                             nn.BatchNorm2d(channels[i], momentum=BN_MOMENTUM)))
                elif j == i:
                    row.append(None)
                else:
                    units = [_conv_bn(cj, channels[i] if k == i - j - 1 else cj, 3, 2, relu=k != i - j - 1)
                             for k in range(i - j)]
                    row.append(nn.Sequential(*units))
            fuse.append(nn.ModuleList(row))
        return nn.ModuleList(fuse)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        out = []
        for i, row in enumerate(self.fuse_layers):
            y = xs[i]
            for j, layer in enumerate(row):
                if j > i:
                    y = y + F.interpolate(layer(xs[j]), size=y.shape[-2:], mode="nearest")
                elif j < i:
                    y = y + layer(xs[j])
            out.append(self.relu(y))
        return out


class HRNet(nn.Module):
    """Multi-resolution pose network; heatmaps [B, K, H/4, W/4].

    Args:
        num_joints: K.
        width: channels of the highest-resolution branch; branch r has width * 2**r.
        stage_modules: exchange units in stages 2, 3, 4 (official (1, 4, 3)).
        branch_blocks: blocks per branch in every exchange unit (official 4).
        stem_block: block type of layer1 (official `Bottleneck`, 4 of them with 64 planes).
        branch_block: block type inside the branches (official `BasicBlock`).
        final_context: optional factory `channels -> nn.Module` applied to the stage-4 output before
            `final_layer` (ELPN's GC block); stored as `final_context`, absent from the state dict
            when None.
        final_kernel: kernel of `final_layer` (official 1).

    `forward(x, return_features=True)` also returns feats["backbone"] (highest-resolution branch
    after stage 4), feats["head_in"] (input of `final_layer`; equals "backbone" unless
    `final_context` is set) and "c2", "c3", "c4": the three stage-3 branch outputs at strides 4, 8
    and 16 (named as ResNet's stages of those strides; the IGP-GCN refiner samples them).
    """

    head_type = "heatmap"
    output_stride = 4

    def __init__(self, num_joints: int = 17, width: int = 32, stage_modules: Sequence[int] = (1, 4, 3),
                 branch_blocks: int = 4, stem_block: type[nn.Module] = Bottleneck,
                 branch_block: type[nn.Module] = BasicBlock,
                 final_context: Callable[[int], nn.Module] | None = None, final_kernel: int = 1):
        super().__init__()
        if len(stage_modules) != 3 or min(stage_modules) < 1:
            raise ValueError(f"stage_modules must give >= 1 exchange unit for stages 2, 3, 4, got {tuple(stage_modules)}")
        if width < 1 or branch_blocks < 1:
            raise ValueError(f"width and branch_blocks must be positive, got width={width}, branch_blocks={branch_blocks}")
        if final_kernel not in (1, 3):
            raise ValueError(f"final_kernel must be 1 or 3, got {final_kernel}")
        self.num_joints = num_joints
        self.width = width
        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(STEM_CHANNELS, STEM_CHANNELS, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(STEM_CHANNELS, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = make_blocks(stem_block, STEM_CHANNELS, STEM_CHANNELS, STAGE1_BLOCKS)

        pre = [STEM_CHANNELS * stem_block.expansion]
        for s, num_modules in enumerate(stage_modules, start=2):
            cur = [width * 2 ** r * branch_block.expansion for r in range(s)]
            setattr(self, f"transition{s - 1}", make_transition(pre, cur))
            last_stage = s == 4
            modules = [HighResolutionModule(branch_block, cur, branch_blocks,
                                            multi_scale_output=not (last_stage and m == num_modules - 1))
                       for m in range(num_modules)]
            setattr(self, f"stage{s}", nn.Sequential(*modules))
            pre = cur
        self.head_channels = pre[0]
        if final_context is not None:
            self.final_context = final_context(self.head_channels)
        else:
            self.final_context = None
        self.final_layer = nn.Conv2d(self.head_channels, num_joints, final_kernel, 1, final_kernel // 2)
        self._init_weights()

    def _init_weights(self) -> None:
        # Official init_weights: N(0, 0.001) convs, zero biases, BN 1/0 (HRNet has no transposed
        # convs). Blocks with their own init (GC zero-init for identity start) get it back afterwards.
        init_head_(self)
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters") and not isinstance(
                    m, (nn.Conv2d, nn.BatchNorm2d, nn.LayerNorm, nn.Linear)):
                m.reset_parameters()

    def backbone_prefixes(self) -> tuple[str, ...]:
        """State-dict key prefixes of everything but the prediction layer."""
        return ("conv1.", "bn1.", "conv2.", "bn2.", "layer1.", "transition", "stage", "final_context.")

    def forward(self, x: torch.Tensor, return_features: bool = False):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        ys = [self.layer1(x)]
        for s in (2, 3, 4):
            transition = getattr(self, f"transition{s - 1}")
            xs = []
            for i, t in enumerate(transition):
                src = ys[i] if i < len(ys) else ys[-1]   # a new branch starts from the lowest resolution
                xs.append(src if t is None else t(src))
            ys = getattr(self, f"stage{s}")(xs)
            if s == 3:
                pyramid = ys      # stage-3 branches at strides 4, 8, 16 (the refiner's feature taps)
        backbone = ys[0]
        head_in = backbone if self.final_context is None else self.final_context(backbone)
        out = self.final_layer(head_in)
        if return_features:
            return out, {"backbone": backbone, "head_in": head_in,
                         "c2": pyramid[0], "c3": pyramid[1], "c4": pyramid[2]}
        return out


def hrnet(width: int, num_joints: int = 17) -> HRNet:
    """Official HRNet-W`width` (32 or 48) for `num_joints` keypoints."""
    if width not in HRNET_SPECS:
        raise ValueError(f"HRNet width {width} not supported; choose one of {sorted(HRNET_SPECS)}")
    return HRNet(num_joints=num_joints, **HRNET_SPECS[width])


@register_model
def hrnet_w32(num_joints: int = 17) -> HRNet:
    return hrnet(32, num_joints)


@register_model
def hrnet_w48(num_joints: int = 17) -> HRNet:
    return hrnet(48, num_joints)

