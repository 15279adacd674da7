"""Bottom-up Part-Affinity-Field networks (seed 004, Kato et al., "Improving Multi-Person Pose
Estimation using Label Correction"): the CMU-Pose teacher and the paper's "small NN" student.

Output contract of every model here (`head_type = "paf"`, `output_stride = 8`):
`forward(x)` returns a list with one `(confidence_maps, pafs)` tuple per stage, first stage first,
the last being the prediction; every stage is supervised (intermediate supervision, MSE summed over
stages). confidence_maps [B, num_heatmaps, H/8, W/8] (COCO: 17 keypoints + neck + background = 19),
pafs [B, num_pafs, H/8, W/8] (COCO: 19 limbs x (x, y) = 38). The tuple order is (confidence_maps,
pafs), the order of `inference.backends.OUTPUT_NAMES["paf"]`; `LastStage(model)` returns only the
last stage's tuple, which is that contract for prediction and ONNX export.
`forward(x, return_features=True)` returns `(outputs, feats)` with feats["backbone"] the 128-channel
stride-8 feature map every stage reads (both models have the same shape there, so a feature
distillation term needs no adapter).

`num_joints` (passed to every factory by `engine.build.build_model`) is stored as `model.num_joints`
for the decoder but does not size any layer: the heatmap channels include the neck and background
and the PAF channels depend on the skeleton, so `num_heatmaps` / `num_pafs` are explicit arguments
with the COCO defaults (19 / 38); set them in the recipe's model kwargs for another keypoint set.

CMU-Pose (`CMUPose`, Cao et al. CVPR 2017, "Realtime Multi-Person 2D Pose Estimation using Part
Affinity Fields"; layer list from the public `training/setLayers.py` / `pose_deploy.prototxt` of
ZheC/Realtime_Multi-Person_Pose_Estimation):
- `features`: VGG-19's first 10 convs (conv1_1..conv4_2, 3x3, ReLU) with its 3 max-pools (2x2,
  stride 2), laid out as torchvision's `vgg19().features[0:23]`, so `features.N.weight` keys match a
  torchvision VGG-19 state dict (convs at 0, 2, 5, 7, 10, 12, 14, 16, 19, 21); `load_vgg19_weights`
  copies them from a local file (the paper initialises them from ImageNet; nothing is downloaded).
- `cpm`: conv4_3_CPM 3x3 512->256 and conv4_4_CPM 3x3 256->128, ReLU: the 128-channel "backbone".
- stage 1: two branches (`pafs` = CMU's L1, `confidence` = L2), each 3x 3x3 conv 128, 1x1 conv 512,
  1x1 conv to the outputs; stages 2..6: input concat(pafs, confidence_maps, features) (CMU's
  `concat_stage` order, 38 + 19 + 128 = 185 channels), each branch 5x 7x7 conv 128, 1x1 conv 128,
  1x1 conv to the outputs. ReLU after every conv but each branch's last. All convs have biases.
- init: every conv N(0, 0.01), bias 0 (`weight_filler {type: "gaussian" std: 0.01}`,
  `bias_filler {type: "constant"}` in CMU's setLayers.py); the VGG convs are then overwritten when
  a VGG-19 file is given. Input normalisation is the data pipeline's business (torchvision's VGG-19
  expects RGB with the ImageNet mean / std).
- 52,311,446 parameters at 19 / 38 channels and 6 stages (VGG part 5,865,536; CPM 1,474,944; stage 1
  1,046,841; each later stage 8,784,825), weights and biases: the paper's 52.3M is this exact count,
  so it includes the biases and the VGG layers and nothing else (no BN, no classifier). 92 convs.

The "small NN" (`SmallPAFNet`): the paper gives only "19 convolution layers, 5.2M parameters". The
public Chainer code of the authors' group (nk35jk/Chainer_Realtime_Multi-Person_Pose_Estimation,
`models/student.py`, class `Student`, "small network") has a network with exactly those two numbers,
so this is that architecture (re-implemented, not copied):
- `features`: VGG-style, 3x3 convs + ReLU, 2x2 max-pools: 32, 32, pool, 64, 64, pool, 128 x4, pool,
  128 x4 (12 convs), stride 8, 128 channels: feats["backbone"].
- `head`: 5x 7x7 conv 128 + ReLU, 1x1 conv 128 + ReLU, 1x1 conv to num_pafs + num_heatmaps (7 convs);
  the last conv's channels are split pafs first, confidence maps after (the Chainer split).
- one stage only: the output list has a single (confidence_maps, pafs) tuple.
- counting rule: every nn.Conv2d counts, including the 1x1 output conv: 12 + 7 = 19.
- 5,211,097 parameters at 19 / 38 channels (0.2% above 5.2M).
- init: LeCun normal N(0, 1/fan_in) for every conv, bias 0: Chainer's default initialiser for
  `L.Convolution2D`, which that code leaves in place (trained from scratch). CMU's N(0, 0.01) is not
  used here: through 19 plain convs (no BN, no ImageNet weights) it leaves outputs of std ~5e-13 at
  init for a unit-normal input, LeCun normal ~3e-3 (measured at 128x128).

`cmu_pose_tiny`: CMU-Pose reduced for CPU-sized synthetic experiments, a deviation from the paper:
VGG widths 16/32/64/128 (a quarter of VGG-19's), CPM 64 -> 32 (feats["backbone"] has 32 channels),
branch convs 24 wide (3x3 in stage 1, 7x7 after, counts kept), hidden 1x1 128 in stage 1 and 24
after, 2 stages (stage 1 + one refinement), and BatchNorm after every conv but the outputs (convs
then without bias). Init LeCun normal, as the small NN: it has no ImageNet weights to start from
(`load_vgg19_weights` does not fit its widths), and CMU's N(0, 0.01) leaves its outputs at std
~1e-16 at init. The BatchNorm is there because a CPU budget is a few thousand steps, in which
these plain conv stacks barely left the all-background prediction on the seed 004 synthetic
recipe. With BatchNorm the output convs start at N(0, 0.01) (`_init_output_convs_`, which says why).
`small_paf_net_tiny`: the small NN with every width a quarter (blocks 8/16/32/32, head 32) and the
same BatchNorm and output init, the synthetic student (a third of cmu_pose_tiny's GMACs, as the
small NN is an eighth of CMU-Pose's). `cmu_pose` and `small_paf_net`
keep the papers' layers (no normalisation); `cmu_pose` keeps CMU's N(0, 0.01); give it
`vgg19_weights`, as the paper does, or its randomly initialised VGG part starts as tiny as well.

Sizes (pinned in tests/test_models_bottomup.py; GMACs = torch.utils.flop_counter FLOPs / 2 / 1e9 at
368x368 via `posedistill.tools.profile.count_gmacs`):

| model | params | convs | GMACs at 368x368 |
|---|---|---|---|
| cmu_pose (6 stages) | 52,311,446 | 92 | 135.93 |
| small_paf_net | 5,211,097 | 19 | 17.40 |
| cmu_pose_tiny | 947,466 | 36 | 3.62 |
| small_paf_net_tiny | 328,145 | 19 | 1.11 |

Rerun: `python -c "from posedistill.models import create_model as c; from posedistill.tools.profile
import count_gmacs as g, count_params as p; m = c('cmu_pose'); print(p(m), g(m, (368, 368)))"`.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from posedistill.errors import CheckpointError
from posedistill.models.registry import register_model
from posedistill.models.weights import safe_load

# VGG-19 conv1_1..conv4_2 with its pools ("M"), per torchvision's `cfgs["E"]`; widths of the four
# blocks are parameters so the tiny variant can shrink them.
VGG19_FIRST10: tuple[tuple[int, int], ...] = ((0, 2), (1, 2), (2, 4), (3, 2))  # (width index, convs)
VGG19_WIDTHS = (64, 128, 256, 512)
VGG19_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21)  # torchvision `features.N` of the 10 convs

CMU_POSE_SPECS: dict[str, dict] = {
    "full": dict(vgg_widths=VGG19_WIDTHS, cpm_channels=(256, 128), branch_channels=128,
                 stage1_hidden=512, refine_hidden=128, stages=6),
    "tiny": dict(vgg_widths=(16, 32, 64, 128), cpm_channels=(64, 32), branch_channels=24,
                 stage1_hidden=128, refine_hidden=24, stages=2, init_std=None, norm=True),
}
STAGE1_CONVS, STAGE1_KERNEL = 3, 3     # CMU stage 1: 3x 3x3 per branch
REFINE_CONVS, REFINE_KERNEL = 5, 7     # CMU stages >= 2: 5x 7x7 per branch

# The small NN: VGG-style backbone (block widths, convs per block, pools between blocks) and head.
SMALL_BLOCKS: tuple[tuple[int, int], ...] = ((32, 2), (64, 2), (128, 4), (128, 4))
SMALL_HEAD_CONVS, SMALL_HEAD_KERNEL, SMALL_HEAD_CHANNELS = 5, 7, 128
# small_paf_net_tiny: every width a quarter of the small NN's (the CPU-sized synthetic student)
SMALL_TINY_BLOCKS: tuple[tuple[int, int], ...] = ((8, 2), (16, 2), (32, 4), (32, 4))
SMALL_TINY_HEAD_CHANNELS = 32

CMU_INIT_STD = 0.01


def _conv_relu(in_channels: int, out_channels: int, kernel: int, norm: bool) -> list[nn.Module]:
    """conv (same padding) + ReLU; with `norm`, BatchNorm between them and no conv bias (the CPU-sized
    variants only: the papers' networks have no normalisation)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel, 1, kernel // 2, bias=not norm)
    return [conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)] if norm else [conv, nn.ReLU(inplace=True)]


def _vgg_features(blocks: Sequence[tuple[int, int]], in_channels: int = 3, norm: bool = False) -> nn.Sequential:
    """3x3 conv + ReLU per layer, a 2x2 stride-2 max-pool between blocks (none after the last), in
    torchvision's flat `features` indexing (conv, ReLU, ..., MaxPool, ...) when `norm` is off."""
    layers: list[nn.Module] = []
    for b, (width, convs) in enumerate(blocks):
        if b > 0:
            layers.append(nn.MaxPool2d(2, 2))
        for _ in range(convs):
            layers += _conv_relu(in_channels, width, 3, norm)
            in_channels = width
    return nn.Sequential(*layers)


def _conv_stack(in_channels: int, channels: int, kernel: int, convs: int, hidden: int, out_channels: int,
                norm: bool = False) -> nn.Sequential:
    """`convs` kxk convs of `channels` + 1x1 conv to `hidden` (ReLU after each), then a 1x1 conv to
    `out_channels` without activation: one PAF-stage branch."""
    layers: list[nn.Module] = []
    for _ in range(convs):
        layers += _conv_relu(in_channels, channels, kernel, norm)
        in_channels = channels
    layers += [*_conv_relu(in_channels, hidden, 1, norm), nn.Conv2d(hidden, out_channels, 1)]
    return nn.Sequential(*layers)


def _init_output_convs_(stacks: Sequence[nn.Sequential], std: float = CMU_INIT_STD) -> None:
    """The last (output) conv of each branch: N(0, std), bias 0. For the BatchNorm variants: with
    LeCun normal there the outputs start at std ~1 (BatchNorm keeps the features at unit scale, see
    tests/test_models_bottomup.py), far above the 0..1 targets, and a short CPU run spent its first
    hundreds of Adam steps shrinking them (one batch of synthetic images did not even overfit in 300
    steps); CMU's N(0, 0.01), its init for every conv, starts them near zero instead."""
    for stack in stacks:
        nn.init.normal_(stack[-1].weight, std=std)
        nn.init.zeros_(stack[-1].bias)


def _init_convs_(module: nn.Module, std: float | None) -> None:
    """Every Conv2d: weights N(0, std) (None: LeCun normal, std = fan_in ** -0.5), bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            nn.init.normal_(m.weight, std=fan_in ** -0.5 if std is None else std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class PAFStage(nn.Module):
    """One CMU stage: two parallel branches on the same input, `pafs` (CMU's L1) and `confidence`
    (L2); returns (confidence_maps, pafs)."""

    def __init__(self, in_channels: int, channels: int, kernel: int, convs: int, hidden: int,
                 num_heatmaps: int, num_pafs: int, norm: bool = False):
        super().__init__()
        self.pafs = _conv_stack(in_channels, channels, kernel, convs, hidden, num_pafs, norm)
        self.confidence = _conv_stack(in_channels, channels, kernel, convs, hidden, num_heatmaps, norm)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.confidence(x), self.pafs(x)


class CMUPose(nn.Module):
    """CMU-Pose: VGG-19 (10 convs) + 2 CPM convs + `stages` two-branch stages (see the module docstring).

    Args:
        num_heatmaps: confidence-map channels (COCO: 17 keypoints + neck + background = 19).
        num_pafs: PAF channels, 2 per limb (COCO: 19 limbs = 38).
        stages: stage 1 plus `stages - 1` refinement stages (CMU: 6).
        vgg_widths: widths of the four VGG blocks (VGG-19: 64, 128, 256, 512).
        cpm_channels: widths of conv4_3_CPM and conv4_4_CPM (CMU: 256, 128); the last is the
            feature width every stage reads.
        branch_channels: width of the 3x3 / 7x7 convs in every branch (CMU: 128).
        stage1_hidden / refine_hidden: width of the 1x1 conv before each branch's output conv in stage 1
            (CMU: 512) and in the refinement stages (CMU: 128).
        init_std: std of the normal init of every conv (CMU: 0.01); None: LeCun normal (1/fan_in).
        norm: BatchNorm after every conv but the outputs (CMU: none; the CPU-sized variant only).
        num_joints: stored for the decoder; sizes nothing.
    """

    head_type = "paf"
    output_stride = 8

    def __init__(self, num_heatmaps: int = 19, num_pafs: int = 38, stages: int = 6,
                 vgg_widths: Sequence[int] = VGG19_WIDTHS, cpm_channels: Sequence[int] = (256, 128),
                 branch_channels: int = 128, stage1_hidden: int = 512, refine_hidden: int = 128,
                 init_std: float | None = CMU_INIT_STD, norm: bool = False, num_joints: int = 17):
        super().__init__()
        if stages < 1:
            raise ValueError(f"CMUPose needs stages >= 1, got {stages}")
        if len(vgg_widths) != 4 or len(cpm_channels) != 2:
            raise ValueError(f"vgg_widths needs 4 widths and cpm_channels 2, got {tuple(vgg_widths)} and "
                             f"{tuple(cpm_channels)}")
        self.num_joints = num_joints
        self.num_heatmaps = num_heatmaps
        self.num_pafs = num_pafs
        self.features = _vgg_features([(vgg_widths[w], n) for w, n in VGG19_FIRST10], norm=norm)
        feat = cpm_channels[1]
        self.cpm = nn.Sequential(*_conv_relu(vgg_widths[3], cpm_channels[0], 3, norm),
                                 *_conv_relu(cpm_channels[0], feat, 3, norm))
        first = PAFStage(feat, branch_channels, STAGE1_KERNEL, STAGE1_CONVS, stage1_hidden, num_heatmaps, num_pafs,
                         norm)
        refine = [PAFStage(feat + num_pafs + num_heatmaps, branch_channels, REFINE_KERNEL, REFINE_CONVS,
                           refine_hidden, num_heatmaps, num_pafs, norm) for _ in range(stages - 1)]
        self.stages = nn.ModuleList([first, *refine])
        _init_convs_(self, init_std)
        if norm:
            _init_output_convs_([branch for stage in self.stages for branch in (stage.pafs, stage.confidence)])

    def forward(self, x: torch.Tensor, return_features: bool = False):
        feats = self.cpm(self.features(x))
        outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        stage_in = feats
        for stage in self.stages:
            confidence, pafs = stage(stage_in)
            outputs.append((confidence, pafs))
            stage_in = torch.cat([pafs, confidence, feats], dim=1)   # CMU's concat_stage order
        if not return_features:
            return outputs
        return outputs, {"backbone": feats}


class SmallPAFNet(nn.Module):
    """The paper's "small NN": 12-conv VGG-style backbone + one 7-conv head, 19 convs (module docstring)."""

    head_type = "paf"
    output_stride = 8

    def __init__(self, num_heatmaps: int = 19, num_pafs: int = 38, num_joints: int = 17,
                 blocks: Sequence[tuple[int, int]] = SMALL_BLOCKS, head_channels: int = SMALL_HEAD_CHANNELS,
                 norm: bool = False):
        super().__init__()
        self.num_joints = num_joints
        self.num_heatmaps = num_heatmaps
        self.num_pafs = num_pafs
        self.features = _vgg_features(blocks, norm=norm)
        width = blocks[-1][0]
        self.head = _conv_stack(width, head_channels, SMALL_HEAD_KERNEL, SMALL_HEAD_CONVS,
                                head_channels, num_pafs + num_heatmaps, norm)
        _init_convs_(self, None)
        if norm:
            _init_output_convs_([self.head])

    def forward(self, x: torch.Tensor, return_features: bool = False):
        feats = self.features(x)
        out = self.head(feats)
        outputs = [(out[:, self.num_pafs:], out[:, :self.num_pafs])]   # pafs first in the conv's channels
        if not return_features:
            return outputs
        return outputs, {"backbone": feats}


class LastStage(nn.Module):
    """Wrap a PAF model so it returns only its last stage's (confidence_maps, pafs): the two outputs
    `inference.backends.output_names("paf")` names, for prediction and ONNX export. Keeps the wrapped
    model's `head_type`, `output_stride` and `num_joints`; the state dict gains the prefix `model.`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.head_type = model.head_type
        self.output_stride = model.output_stride
        self.num_joints = getattr(model, "num_joints", None)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(x)[-1]


def _vgg_state(obj: Any, path: str) -> Mapping[str, Any]:
    """The name -> tensor dict of a torchvision-layout file: the top level or under "state_dict" / "model"."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                return obj[key]
        return obj
    raise CheckpointError(f"{path}: expected a VGG-19 state dict (name -> tensor), got {type(obj).__name__}")


def load_vgg19_weights(model: nn.Module, path: str | os.PathLike) -> list[str]:
    """Copy VGG-19's first 10 convs from a local torchvision-layout state dict file (keys
    `features.N.weight` / `features.N.bias`, N in 0, 2, 5, 7, 10, 12, 14, 16, 19, 21; other keys such as
    the classifier are ignored) into `model.features` (a `CMUPose` with VGG-19 widths). Reads with
    `safe_load` (torch.load, weights_only=True, never downloads). Nothing is copied unless every key is
    present with the right shape; otherwise a one-line CheckpointError names the file and the key
    (MissingFileError for a missing file). Returns the keys copied."""
    path = os.fspath(path)
    state = _vgg_state(safe_load(path), path)
    own = model.state_dict()
    keys = [f"features.{i}.{name}" for i in VGG19_CONV_INDICES for name in ("weight", "bias")]
    for key in keys:
        if key not in own:
            raise CheckpointError(f"{path}: {type(model).__name__} has no VGG-19 layer {key}")
        if key not in state:
            raise CheckpointError(f"{path}: VGG-19 weights lack key {key} (expected a torchvision-layout "
                                  f"VGG-19 state dict with features.N.weight/bias)")
        got, want = tuple(state[key].shape), tuple(own[key].shape)
        if got != want:
            raise CheckpointError(f"{path}: {key} has shape {got}, the VGG-19 backbone expects {want}")
    with torch.no_grad():
        for key in keys:
            own[key].copy_(state[key])
    return keys


def cmu_pose_variant(variant: str, num_heatmaps: int = 19, num_pafs: int = 38, stages: int | None = None,
                     vgg19_weights: str = "", num_joints: int = 17) -> CMUPose:
    """CMU-Pose from `CMU_POSE_SPECS[variant]` ("full" or "tiny"); `stages` overrides the spec's
    count; `vgg19_weights` names a local torchvision VGG-19 state dict to load into the backbone."""
    if variant not in CMU_POSE_SPECS:
        raise ValueError(f"CMU-Pose variant {variant!r} not supported; choose one of {sorted(CMU_POSE_SPECS)}")
    spec = dict(CMU_POSE_SPECS[variant])
    if stages is not None:
        spec["stages"] = stages
    model = CMUPose(num_heatmaps=num_heatmaps, num_pafs=num_pafs, num_joints=num_joints, **spec)
    if vgg19_weights:
        load_vgg19_weights(model, vgg19_weights)
    return model


@register_model
def cmu_pose(num_joints: int = 17, num_heatmaps: int = 19, num_pafs: int = 38, stages: int = 6,
             vgg19_weights: str = "") -> CMUPose:
    return cmu_pose_variant("full", num_heatmaps, num_pafs, stages, vgg19_weights, num_joints)


@register_model
def cmu_pose_tiny(num_joints: int = 17, num_heatmaps: int = 19, num_pafs: int = 38, stages: int = 2) -> CMUPose:
    return cmu_pose_variant("tiny", num_heatmaps, num_pafs, stages, "", num_joints)


@register_model
def small_paf_net(num_joints: int = 17, num_heatmaps: int = 19, num_pafs: int = 38) -> SmallPAFNet:
    return SmallPAFNet(num_heatmaps=num_heatmaps, num_pafs=num_pafs, num_joints=num_joints)


@register_model
def small_paf_net_tiny(num_joints: int = 17, num_heatmaps: int = 19, num_pafs: int = 38) -> SmallPAFNet:
    return SmallPAFNet(num_heatmaps=num_heatmaps, num_pafs=num_pafs, num_joints=num_joints,
                       blocks=SMALL_TINY_BLOCKS, head_channels=SMALL_TINY_HEAD_CHANNELS, norm=True)
