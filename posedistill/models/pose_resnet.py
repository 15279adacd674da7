"""SimpleBaseline (Xiao et al., "Simple Baselines for Human Pose Estimation and Tracking", ECCV 2018).

ResNet encoder (no average pooling, no fc) followed by `num_deconv` ConvTranspose2d(bias=False) /
BatchNorm / ReLU stages and a final conv to K heatmaps at stride 4.

The state-dict layout equals the official code (`leoxiaobin/deep-high-resolution-net.pytorch`,
`lib/models/pose_resnet.py`): `conv1`, `bn1`, `layer1..layer4` built from torchvision-style
BasicBlock / Bottleneck (`conv1, bn1, conv2, bn2, [conv3, bn3], downsample.0/1`, stride on the 3x3
conv), `deconv_layers.{3i, 3i+1}` (ConvTranspose2d / BatchNorm2d; ReLU at 3i+2 has no weights) and
`final_layer` (Conv2d with bias), so an official checkpoint loads with `strict=True`.

Parameter counts at 17 joints (pinned in tests/test_models_pose_resnet.py):
R18 15,376,721 - R34 25,484,881 - R50 33,999,697 - R101 52,991,825 - R152 68,635,473.

`imagenet_weights` (every factory) names a local torchvision-layout ResNet state dict that
`load_imagenet_resnet` copies into the trunk; nothing is ever downloaded.

IKD's "Student-18" (seed 000, Table II: COCO val2017, "the input size is 256x192", 11.3M params,
2.8 GFLOPs, 182 FPS) is `ikd_student18`. What the paper fixes: a ResNet-18 backbone followed by a
decoder that upsamples to heatmaps (Sec. II-A, Fig. 1), i.e. this SimpleBaseline layout. Its heatmaps
are compared pixel by pixel with those of the stride-4 ResNet-50 SimpleBaseline teacher (logit and
structure distillation), so the head keeps three stride-2 deconvs. Table II's Student-18 AP 65.1 is
Table V's "ResNet-18 + ImN" (ImageNet initialisation), although Sec. III-A says the ResNet-18 is
trained from scratch; hence `imagenet_weights`.
Guessed: the head width. No ResNet-18 + deconv head meets both figures: the trunk alone has
11,176,512 parameters, so 11.3M leaves at most ~0.17M for the head, and such heads stay below 1.7
GFLOPs (3 x 16 channels: 11,316,161 params, 1.69). The GFLOPs column is the better-kept one: its
TeachNet-50/101/152 rows (8.9 / 12.4 / 15.7) are what the official HRNet/SimpleBaseline summary tool
gives for the 3 x 256 SimpleBaselines at 256x192 (`count_official_summary_gflops`: 8.99 / 12.38 /
15.76; the README's model zoo compares in this unit), while its params column puts Student-34
(21.2M) below ResNet-34's own trunk (21,284,672). So the student keeps SimpleBaseline's three
4x4 deconvs at half the width, 128 channels: 12,752,337 params (paper 11.3M), 2.085 GMACs and 2.79
official-tool GFLOPs at 256x192 (paper 2.8); at 256x256 (MPII), 2.78 GMACs / 3.71.
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn

from posedistill.errors import CheckpointError
from posedistill.models.registry import register_model
from posedistill.models.weights import extract_state_dict, safe_load

# depth -> (block type, blocks per stage). The ResNet table of He et al. 2016.
RESNET_SPECS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}

BN_MOMENTUM = 0.1  # the official code's value (PyTorch default)
# State-dict key prefixes of the ResNet trunk (what ImageNet weights fill), torchvision's names.
RESNET_TRUNK_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        # Stride on the 3x3 conv, as in the official pose code and torchvision.
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


BLOCKS: dict[str, type[nn.Module]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNetEncoder(nn.Module):
    """The ResNet trunk with torchvision/official attribute names (`conv1`, `bn1`, `layer1..4`).

    Not registered as a model: pose networks (SimpleBaseline, FR-SBN) inherit from it so that
    their state-dict keys stay top-level, exactly as in the official checkpoints."""

    def __init__(self, depth: int):
        super().__init__()
        if depth not in RESNET_SPECS:
            raise ValueError(f"ResNet depth {depth} not supported; choose one of {sorted(RESNET_SPECS)}")
        block_name, layers = RESNET_SPECS[depth]
        block = BLOCKS[block_name]
        self.depth = depth
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0], 1)
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        # Output channels of layer1..layer4 (C2..C5).
        self.stage_channels = tuple(c * block.expansion for c in (64, 128, 256, 512))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: type[nn.Module], planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion, momentum=BN_MOMENTUM),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def backbone_prefixes(self) -> tuple[str, ...]:
        """State-dict key prefixes that belong to the ResNet trunk (what ImageNet weights fill)."""
        return RESNET_TRUNK_PREFIXES


def _deconv_padding(kernel: int) -> tuple[int, int]:
    """(padding, output_padding) that make ConvTranspose2d(stride=2) exactly double the size."""
    if kernel == 4:
        return 1, 0
    if kernel == 3:
        return 1, 1
    if kernel == 2:
        return 0, 0
    raise ValueError(f"deconv_kernel must be 2, 3 or 4, got {kernel}")


def make_deconv_layers(in_channels: int, channels: list[int] | tuple[int, ...], kernel: int) -> nn.Sequential:
    """ConvTranspose2d(bias=False) / BN / ReLU per entry of `channels`, as one flat Sequential
    (indices 3i, 3i+1, 3i+2: the official `deconv_layers` layout)."""
    padding, output_padding = _deconv_padding(kernel)
    layers: list[nn.Module] = []
    for out_channels in channels:
        layers += [
            nn.ConvTranspose2d(in_channels, out_channels, kernel, 2, padding, output_padding, bias=False),
            nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True),
        ]
        in_channels = out_channels
    return nn.Sequential(*layers)


def init_head_(module: nn.Module) -> None:
    """The official head initialisation: N(0, 0.001) for (transposed) convs, zero bias, BN at 1/0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, std=0.001)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class PoseResNet(ResNetEncoder):
    """SimpleBaseline: ResNet-`depth` + deconv head; heatmaps [B, K, H/4, W/4] with the defaults."""

    head_type = "heatmap"

    def __init__(self, depth: int, num_joints: int = 17, deconv_channels: int = 256, num_deconv: int = 3,
                 deconv_kernel: int = 4, final_kernel: int = 1):
        super().__init__(depth)
        if num_deconv < 0:
            raise ValueError(f"num_deconv must be >= 0, got {num_deconv}")
        if num_deconv > 0 and deconv_channels < 1:
            raise ValueError(f"deconv_channels must be >= 1, got {deconv_channels}")
        if final_kernel not in (1, 3):
            raise ValueError(f"final_kernel must be 1 or 3, got {final_kernel}")
        if num_deconv > 5:
            raise ValueError(f"num_deconv={num_deconv} would upsample past the input resolution (max 5)")
        self.num_joints = num_joints
        self.output_stride = 32 // (2 ** num_deconv)
        self.deconv_layers = make_deconv_layers(self.inplanes, [deconv_channels] * num_deconv, deconv_kernel)
        head_channels = deconv_channels if num_deconv > 0 else self.inplanes
        self.final_layer = nn.Conv2d(head_channels, num_joints, final_kernel, 1, final_kernel // 2)
        init_head_(self.deconv_layers)
        init_head_(self.final_layer)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        x = self.stem(x)
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        head_in = self.deconv_layers(c5)
        out = self.final_layer(head_in)
        if not return_features:
            return out
        return out, {"c2": c2, "c3": c3, "c4": c4, "backbone": c5, "head_in": head_in}


def pose_resnet(depth: int, num_joints: int = 17, deconv_channels: int = 256, num_deconv: int = 3,
                deconv_kernel: int = 4, final_kernel: int = 1, imagenet_weights: str = "") -> PoseResNet:
    """SimpleBaseline with a ResNet-`depth` encoder (18, 34, 50, 101, 152); `imagenet_weights`
    names a local torchvision-layout ResNet state dict loaded into the trunk (`load_imagenet_resnet`)."""
    model = PoseResNet(depth, num_joints, deconv_channels, num_deconv, deconv_kernel, final_kernel)
    if imagenet_weights:
        load_imagenet_resnet(model, imagenet_weights)
    return model


@register_model
def simplebaseline_r18(num_joints: int = 17, deconv_channels: int = 256, num_deconv: int = 3,
                       imagenet_weights: str = "") -> PoseResNet:
    return pose_resnet(18, num_joints, deconv_channels, num_deconv, imagenet_weights=imagenet_weights)


@register_model
def simplebaseline_r34(num_joints: int = 17, deconv_channels: int = 256, num_deconv: int = 3,
                       imagenet_weights: str = "") -> PoseResNet:
    return pose_resnet(34, num_joints, deconv_channels, num_deconv, imagenet_weights=imagenet_weights)


@register_model
def simplebaseline_r50(num_joints: int = 17, deconv_channels: int = 256, num_deconv: int = 3,
                       imagenet_weights: str = "") -> PoseResNet:
    return pose_resnet(50, num_joints, deconv_channels, num_deconv, imagenet_weights=imagenet_weights)


@register_model
def simplebaseline_r101(num_joints: int = 17, deconv_channels: int = 256, num_deconv: int = 3,
                        imagenet_weights: str = "") -> PoseResNet:
    return pose_resnet(101, num_joints, deconv_channels, num_deconv, imagenet_weights=imagenet_weights)


@register_model
def simplebaseline_r152(num_joints: int = 17, deconv_channels: int = 256, num_deconv: int = 3,
                        imagenet_weights: str = "") -> PoseResNet:
    return pose_resnet(152, num_joints, deconv_channels, num_deconv, imagenet_weights=imagenet_weights)


@register_model
def ikd_student18(num_joints: int = 17, deconv_channels: int = 128, num_deconv: int = 3,
                  imagenet_weights: str = "") -> PoseResNet:
    """IKD's Student-18 (seed 000, Table II): ResNet-18 + three 128-channel deconvs; the width is a
    guess (module docstring)."""
    return pose_resnet(18, num_joints, deconv_channels, num_deconv, imagenet_weights=imagenet_weights)


def resnet_trunk_state(obj: object, path: str) -> dict[str, torch.Tensor]:
    """The ResNet trunk (`conv1`, `bn1`, `layer1..4`) of a loaded SimpleBaseline / FR-SBN checkpoint
    (`path` names it in errors) as a torchvision-layout state dict: the file `imagenet_weights` reads.

    What for: a trunk trained on one recipe shared as the initialisation of several models, in place of
    ImageNet weights where there are none (the synthetic FR-SBN table, docs/results/bench_synth.md).
    Raises CheckpointError naming the file when it has no ResNet trunk (no `conv1.weight` or no `layer4.*`)."""
    state = extract_state_dict(obj, path)
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    trunk = {k: v for k, v in state.items() if k.startswith(RESNET_TRUNK_PREFIXES)}
    if "conv1.weight" not in trunk or not any(k.startswith("layer4.") for k in trunk):
        raise CheckpointError(f"{path}: no ResNet trunk (expected top-level conv1.weight and layer4.* keys, as in "
                              f"a SimpleBaseline or FR-SBN checkpoint); first keys: {', '.join(list(state)[:5])}")
    return trunk


def load_imagenet_resnet(model: ResNetEncoder, path: str | os.PathLike, map_location: str = "cpu") -> list[str]:
    """Load ImageNet ResNet weights saved in torchvision's key layout into `model`'s trunk.

    `fc.*` is dropped. Every trunk key of the model must be present with the right shape and no
    other key may remain; otherwise a ValueError names the file and the missing / unexpected /
    mis-shaped keys (MissingFileError / CheckpointError for a missing or unreadable file: `safe_load`,
    weights_only). Returns the list of model keys that were left at their initialisation
    (the head: deconv layers, final layer, anything outside the trunk)."""
    path = os.fspath(path)
    state = safe_load(path, map_location)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(state).__name__}")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = model.state_dict()
    prefixes = model.backbone_prefixes()
    trunk = {k for k in own if k.startswith(prefixes)}
    # Checkpoints saved before PyTorch 0.4.1 lack BN num_batches_tracked; not a real mismatch.
    missing = sorted(k for k in trunk - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in trunk)
    shapes = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in trunk & set(state) if state[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        parts = [f"{path}: ImageNet ResNet weights do not fit the ResNet-{getattr(model, 'depth', '?')} trunk"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {'; '.join(shapes)}")
        raise ValueError("\n".join(parts))
    result = model.load_state_dict(state, strict=False)
    return sorted(result.missing_keys)
