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
1.6G (Table 6) and "2G" / "3G" (Table 3, rounded).

Ablation networks (Sec. 4.3, Tables 4-5; MPII, 256x256): plain HRNet (`hrnet.HRNet` defaults:
Bottleneck layer1, BasicBlock branches, no GC block) with one knob changed, built from
`ELPN_ABLATION_SPECS` by `elpn_ablation(row)` and registered as `elpn_ablation_<row>`. Table 4 varies
the first-branch width at exchange units (1, 4, 3); Table 5 the exchange units of stages 2/3/4 at
width 32. The row both tables share (width 32, (1, 4, 3)) is `hrnet_w32` and is not registered again.
Sizes at 16 joints (MPII), paper unit at 256x256 (pinned in tests/test_models_elpn.py):

| table | row | model | params (here) | params (paper) | paper unit (here) | FLOPs (paper) |
|---|---|---|---|---|---|---|
| 4 | width 8 | elpn_ablation_w8 | 2,139,296 | 2.1M | 1.84 | 1.8G |
| 4 | width 16 | elpn_ablation_w16 | 7,445,872 | 7.4M | 3.41 | 3.4G |
| 4, 5 | width 32, (1, 4, 3) | hrnet_w32 | 28,536,080 | 28.5M | 9.49 | 9.5G |
| 4 | width 64 | elpn_ablation_w64 | 112,624,720 | 112.6M | 33.39 | 33.4G |
| 5 | (1, 1, 1) | elpn_ablation_eu111 | 9,301,712 | 10.1M | 4.32 | 4.4G |
| 5 | (1, 2, 1) | elpn_ablation_eu121 | 11,007,120 | 11.8M | 5.22 | 5.3G |
| 5 | (1, 3, 1) | elpn_ablation_eu131 | 12,712,528 | 13.5M | 6.12 | 6.2G |
| 5 | (1, 2, 2) | elpn_ablation_eu122 | 18,066,192 | 18.8M | 6.45 | 6.5G |
| 5 | (1, 1, 3) | elpn_ablation_eu113 | 23,419,856 | 23.4M | 6.79 | 6.8G |

Choices the paper leaves open for these: "other parameters the same" is read as HRNet-W32's
settings (stem, 4 blocks per branch, 1x1 final conv; the branch widths double per resolution, as
the text says for width 32); the exchange-unit triples are (stage 2, stage 3, stage 4), as in Sec. 3.
The sizes use MPII's 16 joints, the dataset of the ablations (each joint adds width + 1
parameters; the factories default to 17 like every other model).
Table 5's first four rows are 0.73-0.80M / 0.05-0.08G above ours. That is what the three other
fused outputs of a multi-scale last stage-4 exchange unit weigh (769,984 parameters, 0.108G at
256x256; HRNet's last unit fuses into branch 1 only): with them the four rows give 10.1M / 4.4,
11.8M / 5.3, 13.5M / 6.2 and 18.8M / 6.6 (paper 6.5), so the paper apparently counted those layers
for these rows (the rows with three stage-4 units match without them). They are not built here:
nothing reads their outputs, so they would only add parameters that never get a gradient.

Rerun (an ablation row: `c('elpn_ablation_w8', num_joints=16)` and `(256, 256)`; paper unit = GMACs
x 1e9 / 2^30):
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
# Tables 4-5 ablation rows -> HRNet settings that differ from HRNet-W32 (4 BasicBlocks per branch).
# Width 32 with (1, 4, 3), the row both tables share, is `hrnet_w32`.
ELPN_ABLATION_SPECS: dict[str, dict] = {
    "w8": dict(width=8, stage_modules=(1, 4, 3)),        # Table 4
    "w16": dict(width=16, stage_modules=(1, 4, 3)),
    "w64": dict(width=64, stage_modules=(1, 4, 3)),
    "eu111": dict(width=32, stage_modules=(1, 1, 1)),    # Table 5
    "eu121": dict(width=32, stage_modules=(1, 2, 1)),
    "eu131": dict(width=32, stage_modules=(1, 3, 1)),
    "eu122": dict(width=32, stage_modules=(1, 2, 2)),
    "eu113": dict(width=32, stage_modules=(1, 1, 3)),
}
ABLATION_BRANCH_BLOCKS = 4  # HRNet's BasicBlocks per branch: the ablations change nothing else
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


def elpn_ablation(row: str, num_joints: int = 17) -> HRNet:
    """A plain HRNet of the paper's Table 4 (`row="w8"`, `"w16"`, `"w64"`) or Table 5 (`"eu111"`,
    `"eu121"`, `"eu131"`, `"eu122"`, `"eu113"`); heatmaps at stride 4."""
    key = row.lower()
    if key not in ELPN_ABLATION_SPECS:
        raise ValueError(f"ELPN ablation row {row!r} not supported; choose one of {sorted(ELPN_ABLATION_SPECS)} "
                         f"(width 32 with exchange units (1, 4, 3) is hrnet_w32)")
    return HRNet(num_joints=num_joints, branch_blocks=ABLATION_BRANCH_BLOCKS, **ELPN_ABLATION_SPECS[key])


@register_model
def elpn_ablation_w8(num_joints: int = 17) -> HRNet:
    return elpn_ablation("w8", num_joints)


@register_model
def elpn_ablation_w16(num_joints: int = 17) -> HRNet:
    return elpn_ablation("w16", num_joints)


@register_model
def elpn_ablation_w64(num_joints: int = 17) -> HRNet:
    return elpn_ablation("w64", num_joints)


@register_model
def elpn_ablation_eu111(num_joints: int = 17) -> HRNet:
    return elpn_ablation("eu111", num_joints)


@register_model
def elpn_ablation_eu121(num_joints: int = 17) -> HRNet:
    return elpn_ablation("eu121", num_joints)


@register_model
def elpn_ablation_eu131(num_joints: int = 17) -> HRNet:
    return elpn_ablation("eu131", num_joints)


@register_model
def elpn_ablation_eu122(num_joints: int = 17) -> HRNet:
    return elpn_ablation("eu122", num_joints)


@register_model
def elpn_ablation_eu113(num_joints: int = 17) -> HRNet:
    return elpn_ablation("eu113", num_joints)
