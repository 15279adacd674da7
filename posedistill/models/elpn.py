"""ELPN: Effective and Lightweight Pose Network (seed 001, "Lightweight and Effective Human Pose
Estimation Model Based on Multi-Angle Knowledge Distillation", Sec. 3.2, Fig. 4-5).

ELPN is HRNet (`hrnet.HRNet`, built by the same code with other block types) with
- the four layer1 Bottlenecks replaced by "Efficient Bottleneck Blocks": a standard Bottleneck with
  a Global Context block after its last conv (Fig. 4b);
- every branch BasicBlock replaced by a "Lightweight Basic Block" whose two 3x3 convs are
  depthwise-separable convs (Fig. 4d), two blocks per branch instead of four;
- exchange units per stage 2/3/4: (1, 2, 2) for V1, (1, 4, 3) for V2; branch widths 16/32/64/128
  (V1) and 32/64/128/256 (V2);
- one GC block on the stage-4 output before the final 1x1 conv.

Choices the paper leaves open (following HRNet / GCNet / MobileNet where it is silent):
- Stem: HRNet's two 3x3 stride-2 convs with 64 channels and layer1 with 64 planes (256 out) in
  both versions; the paper only says the first stage is unchanged apart from the GC blocks.
- GC blocks: GCNet layout (`blocks.GlobalContextBlock`), ratio 1/16, placed after bn3 and before
  the residual add (GCNet's bottleneck placement), zero-initialised (identity start). Hidden
  widths: 16 in layer1 (256 channels); 4 for the head block of both versions, the block's floor,
  since C/16 = 1 (V1) or 2 (V2) would make its LayerNorm constant or sign-like and the context
  unused (105 / 134 parameters more than ratio 1/16 taken literally).
- "Lightweight Basic Block": each 3x3 conv of the BasicBlock becomes depthwise 3x3 + BN + ReLU +
  pointwise 1x1 + BN (`blocks.DepthwiseSeparableConv`); ReLU after the first separable conv and
  after the residual add, as in BasicBlock. No GC block inside it.
- Transitions and exchange-unit fuse layers stay HRNet's standard convs (the paper changes only
  the Bottleneck and Basic blocks).
- "GC block after the fourth stage": a single GC block on the fused highest-resolution output
  (HRNet's stage 4 fuses into that branch only); `feats["backbone"]` is the stage-4 output before
  it, `feats["head_in"]` the GC output fed to `final_layer`.
- Init: HRNet's (N(0, 0.001) convs, BN 1/0), then GC blocks back to their GCNet init.

Size at 17 joints, 256x192 (pinned in tests/test_models_elpn.py). GMACs = torch.utils.flop_counter
FLOPs / 2 / 1e9 (`posedistill.tools.profile.count_gmacs`); "paper unit" = the same MACs / 2^30, the
convention of the official HRNet summary tool (`count_official_summary_gflops`) that the paper's
table follows:

| model | params (here) | params (paper) | GMACs (here) | paper unit (here) | "GFLOPs" (paper Table 1) |
|---|---|---|---|---|---|
| ELPN-V1 | 1,108,146 | 1.1M | 1.303 | 1.21 | 1.2 |
| ELPN-V2 | 4,705,602 | 4.7M | 2.140 | 1.99 | 2.0 |

At 256x256 (the MPII setting) V1 gives 1.62 and V2 2.66 in the paper unit, against the paper's
1.6G (Table 6) and "2G" / "3G" (Table 3, rounded). The same builder with plain HRNet blocks gives
Table 4's rows (width 16: 7,445,889 params and 3.41 at 256x256, paper 7.4M / 3.4G; width 8: 2.14M /
1.84, paper 2.1M / 1.8G) and Table 5's within 0.8M params / 0.1G (exact for (1, 1, 3) and (1, 4, 3)).
Rerun:
`python -c "from posedistill.models import create_model as c; from posedistill.tools.profile import count_gmacs as g, count_params as p; m = c('elpn_v1'); print(p(m), g(m, (192, 256)))"`.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from posedistill.models.blocks import DepthwiseSeparableConv, GlobalContextBlock
from posedistill.models.hrnet import HRNet
from posedistill.models.pose_resnet import Bottleneck
from posedistill.models.registry import register_model

# version -> (width of the highest-resolution branch, exchange units in stages 2/3/4)
ELPN_SPECS: dict[str, dict] = {
    "v1": dict(width=16, stage_modules=(1, 2, 2)),
    "v2": dict(width=32, stage_modules=(1, 4, 3)),
}
BRANCH_BLOCKS = 2       # Lightweight Basic Blocks per branch in every exchange unit (HRNet: 4)
GC_RATIO = 1 / 16       # GCNet's bottleneck ratio


class EfficientBottleneck(Bottleneck):
    """Bottleneck (1x1, 3x3, 1x1 + BN) with a GC block after bn3, before the residual add (Fig. 4b).

    Same signature and parameter names as `Bottleneck`, plus `context` (a `GlobalContextBlock`)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__(inplanes, planes, stride, downsample)
        self.context = GlobalContextBlock(planes * self.expansion, GC_RATIO)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.context(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


class LightweightBasicBlock(nn.Module):
    """BasicBlock with both 3x3 convs made depthwise-separable (Fig. 4d):
    relu(DSConv(DSConv(x), no final ReLU) + shortcut). Torchvision block signature, expansion 1."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = DepthwiseSeparableConv(inplanes, planes, 3, stride, last_relu=True)
        self.conv2 = DepthwiseSeparableConv(planes, planes, 3, 1, last_relu=False)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + identity)


def _final_gc(channels: int) -> nn.Module:
    return GlobalContextBlock(channels, GC_RATIO)


def elpn(version: str, num_joints: int = 17) -> HRNet:
    """ELPN-V1 (`version="v1"`) or ELPN-V2 (`"v2"`): an `HRNet` with ELPN blocks; heatmaps at stride 4."""
    key = version.lower()
    if key not in ELPN_SPECS:
        raise ValueError(f"ELPN version {version!r} not supported; choose one of {sorted(ELPN_SPECS)}")
    return HRNet(num_joints=num_joints, branch_blocks=BRANCH_BLOCKS, stem_block=EfficientBottleneck,
                 branch_block=LightweightBasicBlock, final_context=_final_gc, **ELPN_SPECS[key])


@register_model
def elpn_v1(num_joints: int = 17) -> HRNet:
    return elpn("v1", num_joints)


@register_model
def elpn_v2(num_joints: int = 17) -> HRNet:
    return elpn("v2", num_joints)
