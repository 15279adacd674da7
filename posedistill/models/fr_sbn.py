"""FR-SBN: full-resolution SimpleBaseline with Global Context blocks and SA-MFCD (seed 003:
Ou, Chen, Wu, "Full-Resolution Encoder-Decoder Networks with Multi-Scale Feature Fusion for Human
Pose Estimation", MMAsia 2020).

Architecture (paper section 3, Fig. 1), input H x W, heatmaps [B, K, H, W] (output_stride 1):

    stem -> layer1 -> GC_e1 (C2, 1/4) -> layer2 -> GC_e2 (C3, 1/8) -> layer3 -> GC_e3 (C4, 1/16)
         -> layer4 -> GC_e4 (C5, 1/32)
    decoder1: deconv C5 -> 256 (1/16)                                   -> GC_d1
    decoder2: deconv 256 -> 256 (1/8),  concat SA-MFCD@1/8, 3x3 -> 256  -> GC_d2
    decoder3: deconv 256 -> 256 (1/4),  concat SA-MFCD@1/4, 3x3 -> 256  -> GC_d3
    decoder4: deconv 256 -> 128 (1/2),  concat SA-MFCD@1/2, 3x3 -> 128
    decoder5: deconv 128 -> 32  (1/1)
    final_layer: 1x1 conv 32 -> K

    SA-MFCD: features of GC_e1..GC_e3 upsampled to 1/4, concatenated, 3x3 conv -> F;
             their softmax attention maps (1 x h x w each) resized to 1/4, concatenated (3 maps),
             3x3 conv -> 1 map; refined = features * map; resized to 1/8, 1/4, 1/2 for decoders 2-4.

Stated by the paper: ResNet encoder as in SimpleBaseline; five decoders of deconv + BN + ReLU, each
doubling the resolution, the 4th with 128 and the 5th with 32 channels; GC blocks after the four
ResNet stages and after the first three decoders; SA-MFCD inputs are the outputs of the GC blocks
after stages 1-3 and their spatial attention heatmaps (the 1x1-conv + softmax map of the GC block);
lower resolutions up-sampled to the highest; features and maps each concatenated and fused by a
3x3 conv; element-wise product; distributed to decoders 2, 3 and 4 after resizing; in those
decoders concatenated with the deconv output and fused by a 3x3 conv; every SA-MFCD / fusion
conv followed by BN and ReLU.

Choices the paper leaves open (ours):
- Channels of the first three decoders: 256 (SimpleBaseline's; the paper says only the 4th and
  5th differ). Deconv kernel 4, stride 2, padding 1, no bias, as SimpleBaseline.
- Fused SA-MFCD width F = 256 (`mfcd_channels`); the fused attention is one map (1 channel),
  broadcast over the F channels.
- Each GC softmax map is multiplied by its h*w before fusion so that a uniform map is 1 at every
  scale (the raw maps differ by the ratio of their pixel counts, 16x between 1/4 and 1/16).
- All resizing is bilinear (align_corners=False), to the exact size of the target tensor; the
  down-sampling to 1/8 for decoder 2 is bilinear too.
- A decoder's 3x3 fusion conv outputs the decoder's own width (256, 256, 128); the GC block of
  decoders 2 and 3 comes after that fusion (the GC block enhances the decoder's output).
- Decoder 5 has no GC block and no SA-MFCD input (the paper names decoders 1-3 and 2-4);
  the final layer is a 1x1 conv with bias (SimpleBaseline's).
- GC blocks use ratio 1/16 (GCNet), as `posedistill.models.blocks.GlobalContextBlock`.
- Initialisation: ResNet as `pose_resnet`; deconvs and the final layer N(0, 0.001) (the official
  SimpleBaseline head init); 3x3 fusion convs Kaiming-normal (fan_out); GC blocks their own init
  (last conv zero, so each block starts as identity).
- Inputs should be multiples of 32 (as for SimpleBaseline) so that every decoder lands exactly on
  1/16 ... 1/1 of the input; other sizes still run (SA-MFCD is resized to each decoder) but the
  heatmap then comes out at the next multiple of 32.

Size (17 joints, 256x192; the counts outside the GC blocks are pinned in tests/test_models_fr_sbn.py):
R34 29,906,894 parameters outside the seven GC blocks, plus 71,883 for GCNet-layout blocks
(ratio 1/16) = 29.98M, and 20.3 GMACs (torch.utils.flop_counter). The paper gives 33M and
21.3 GFLOPs for R34 without the SA-MFCD / fusion widths. Widening F changes both: F = 512 gives
32.5M parameters but also far more MACs (F = 448 already 27.1 GMACs), so F = 256 matches the
paper's compute better and its parameter count less well; the 3M gap is in those unstated widths.

Ablation switches (paper section 4.2, Table 1). Stated by the paper: every row uses ResNet-34 at
256x192; the rows are SBN-34 (69.8 AP), FR-SBN (71.0: the five decoders only), FR-SBN+GCB (71.6),
FR-SBN+GCB+skip (71.7: "the vanilla skip-connection" instead of SA-MFCD) and FR-SBN+GCB+SA-MFCD
(72.5, the full model). There is no row with SA-MFCD but without GC blocks. `FRSBN` takes
`gc_blocks: bool` (False: no GC block anywhere, neither after the four stages nor after decoders
1-3) and `fusion` in `FR_SBN_FUSIONS` (how encoder features reach the decoders: "sa_mfcd", "skip" or
"none", where "none" leaves five plain deconv + BN + ReLU decoders, the FR-SBN row). Registered rows:
`simplebaseline_r34` (SBN-34, in pose_resnet), `fr_sbn_r34_plain` (FR-SBN), `fr_sbn_r34_gcb`
(FR-SBN+GCB), `fr_sbn_r34_gcb_skip` (FR-SBN+GCB+skip), `fr_sbn_r34` (full). The same rows on a
ResNet-18 encoder (`simplebaseline_r18`, `fr_sbn_r18_plain`, `_gcb`, `_gcb_skip`, `fr_sbn_r18`; not in
the paper) are the CPU-sized synthetic ablation (configs/plans/bench_fr_sbn.yaml). ResNet-18's stage
widths are 64, 128, 256, 512 as ResNet-34's, so every R18 row has R34's head and GC blocks on a trunk
10,108,160 parameters smaller.

Choices the paper leaves open for the ablation (ours):
- The vanilla skip is U-Net style as the paper's section 3.3 describes skips (encoder and decoder
  maps of the same resolution, concatenated): the GC-enhanced stage 3, 2, 1 outputs (1/16, 1/8,
  1/4) go to decoders 1, 2, 3, each concatenated with the deconv output and fused by the same
  3x3 conv + BN + ReLU to the decoder's width as SA-MFCD's fusion; decoders 4 and 5 stay plain
  (the encoder has no 1/2 map after the stem's max-pool). Without GC blocks the stage outputs
  themselves are used.
- SA-MFCD without GC blocks is refused (ValueError): its attention input is the GC blocks'
  softmax maps, and the paper defines no stand-in.
- `mfcd_channels` is unused unless `fusion="sa_mfcd"`; the defaults build exactly the full model.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from posedistill.models.blocks import GlobalContextBlock
from posedistill.models.pose_resnet import (BN_MOMENTUM, ResNetEncoder, init_head_, load_imagenet_resnet,
                                           make_deconv_layers)
from posedistill.models.registry import register_model

FR_SBN_DEPTHS = (18, 34, 50, 101, 152)
DECODER_CHANNELS = (256, 256, 256, 128, 32)
FR_SBN_FUSIONS = ("sa_mfcd", "skip", "none")
Fusion = Literal["sa_mfcd", "skip", "none"]


def _resize(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    if x.shape[-2:] == ref.shape[-2:]:
        return x
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


def _apply_gc(block: nn.Module | None, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(features, attention or None) for a GC slot; a variant without GC blocks has None there and
    passes the features through, so one forward serves every ablation row."""
    if block is None:
        return x, None
    y = block(x)
    return y if isinstance(y, tuple) else (y, None)


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel, 1, kernel // 2, bias=False),
            nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
            nn.ReLU(inplace=True),
        )
        nn.init.kaiming_normal_(self[0].weight, mode="fan_out", nonlinearity="relu")


class SAMFCD(nn.Module):
    """Spatial-attention-based multi-scale feature collection (the distribution is the resizing
    done by each decoder). Inputs: three feature maps (highest resolution first) and their
    softmax attention maps [B, 1, h_i, w_i]; output: refined features [B, F, h_0, w_0]."""

    def __init__(self, in_channels: tuple[int, ...], out_channels: int = 256):
        super().__init__()
        self.feature_fuse = ConvBNReLU(sum(in_channels), out_channels)
        self.attention_fuse = ConvBNReLU(len(in_channels), 1)

    def forward(self, feats: list[torch.Tensor], attentions: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        ref = feats[0]
        fused = self.feature_fuse(torch.cat([_resize(f, ref) for f in feats], dim=1))
        # softmax maps sum to 1 over h*w; times h*w a uniform map is 1 at every scale
        maps = [_resize(a * (a.shape[-2] * a.shape[-1]), ref) for a in attentions]
        attention = self.attention_fuse(torch.cat(maps, dim=1))   # [B, 1, h0, w0]
        return fused * attention, attention


class Decoder(nn.Module):
    """Deconv (x2) + BN + ReLU, optionally concatenated with SA-MFCD or skip features and fused by 3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int, skip_channels: int = 0, kernel: int = 4):
        super().__init__()
        self.deconv = make_deconv_layers(in_channels, [out_channels], kernel)
        self.fuse = ConvBNReLU(out_channels + skip_channels, out_channels) if skip_channels else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = self.deconv(x)
        if self.fuse is None and skip is not None:
            # dropping the encoder features silently would hide a miswired ablation variant
            raise ValueError("this decoder has no fusion conv; skip features given")
        if self.fuse is not None:
            if skip is None:
                raise ValueError("this decoder fuses encoder (SA-MFCD or skip) features; skip=None given")
            x = self.fuse(torch.cat([x, _resize(skip, x)], dim=1))
        return x


class FRSBN(ResNetEncoder):
    """FR-SBN (+ GCB) (+ SA-MFCD or vanilla skip) with a ResNet-`depth` encoder; see the module
    docstring. The defaults (`gc_blocks=True`, `fusion="sa_mfcd"`) are the paper's full model."""

    head_type = "heatmap"
    output_stride = 1

    def __init__(self, depth: int, num_joints: int = 17, mfcd_channels: int = 256, gc_ratio: float = 1 / 16,
                 decoder_channels: tuple[int, ...] = DECODER_CHANNELS, gc_blocks: bool = True,
                 fusion: Fusion = "sa_mfcd"):
        super().__init__(depth)
        if len(decoder_channels) != 5:
            raise ValueError(f"FR-SBN has five decoders; decoder_channels has {len(decoder_channels)} entries")
        if fusion not in FR_SBN_FUSIONS:
            raise ValueError(f"FR-SBN fusion {fusion!r} unknown; choose one of {FR_SBN_FUSIONS}")
        if fusion == "sa_mfcd" and not gc_blocks:
            raise ValueError("SA-MFCD fuses the GC blocks' attention maps; "
                             "gc_blocks=False needs fusion 'skip' or 'none'")
        c2, c3, c4, c5 = self.stage_channels
        d = decoder_channels
        self.num_joints = num_joints
        self.gc_blocks = gc_blocks
        self.fusion = fusion
        # construction order as in the full model, so its state_dict order and seeded init are unchanged
        self.gc_layer1 = GlobalContextBlock(c2, ratio=gc_ratio, return_attention=True) if gc_blocks else None
        self.gc_layer2 = GlobalContextBlock(c3, ratio=gc_ratio, return_attention=True) if gc_blocks else None
        self.gc_layer3 = GlobalContextBlock(c4, ratio=gc_ratio, return_attention=True) if gc_blocks else None
        self.gc_layer4 = GlobalContextBlock(c5, ratio=gc_ratio) if gc_blocks else None
        self.mfcd = SAMFCD((c2, c3, c4), mfcd_channels) if fusion == "sa_mfcd" else None
        m = mfcd_channels
        skip = {"sa_mfcd": (0, m, m, m), "skip": (c4, c3, c2, 0), "none": (0, 0, 0, 0)}[fusion]
        self.decoder1 = Decoder(c5, d[0], skip[0])
        self.decoder2 = Decoder(d[0], d[1], skip[1])
        self.decoder3 = Decoder(d[1], d[2], skip[2])
        self.decoder4 = Decoder(d[2], d[3], skip[3])
        self.decoder5 = Decoder(d[3], d[4])
        self.gc_decoder1 = GlobalContextBlock(d[0], ratio=gc_ratio) if gc_blocks else None
        self.gc_decoder2 = GlobalContextBlock(d[1], ratio=gc_ratio) if gc_blocks else None
        self.gc_decoder3 = GlobalContextBlock(d[2], ratio=gc_ratio) if gc_blocks else None
        self.final_layer = nn.Conv2d(d[4], num_joints, 1)
        for dec in (self.decoder1, self.decoder2, self.decoder3, self.decoder4, self.decoder5):
            init_head_(dec.deconv)
        init_head_(self.final_layer)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        x = self.stem(x)
        e1, a1 = _apply_gc(self.gc_layer1, self.layer1(x))
        e2, a2 = _apply_gc(self.gc_layer2, self.layer2(e1))
        e3, a3 = _apply_gc(self.gc_layer3, self.layer3(e2))
        e4, _ = _apply_gc(self.gc_layer4, self.layer4(e3))
        feats = {"c2": e1, "c3": e2, "c4": e3, "backbone": e4}
        if self.mfcd is not None:
            refined, attention = self.mfcd([e1, e2, e3], [a1, a2, a3])
            feats.update(mfcd=refined, mfcd_attention=attention)
            skips = (None, refined, refined, refined)   # resized to 1/8, 1/4, 1/2 in decoders 2-4
        elif self.fusion == "skip":
            skips = (e3, e2, e1, None)                  # same resolution as decoders 1-3: 1/16, 1/8, 1/4
        else:
            skips = (None, None, None, None)
        y, _ = _apply_gc(self.gc_decoder1, self.decoder1(e4, skips[0]))
        y, _ = _apply_gc(self.gc_decoder2, self.decoder2(y, skips[1]))
        y, _ = _apply_gc(self.gc_decoder3, self.decoder3(y, skips[2]))
        y = self.decoder4(y, skips[3])                  # 1/2
        head_in = self.decoder5(y)                        # 1/1, 32 channels
        out = self.final_layer(head_in)
        if not return_features:
            return out
        feats["head_in"] = head_in
        return out, feats


def fr_sbn(depth: int, num_joints: int = 17, mfcd_channels: int = 256, gc_blocks: bool = True,
           fusion: Fusion = "sa_mfcd", imagenet_weights: str = "") -> FRSBN:
    """FR-SBN with a ResNet-`depth` encoder (18, 34, 50, 101, 152); the defaults are FR-SBN + GCB + SA-MFCD.
    `imagenet_weights`: a local torchvision-layout ResNet file for the encoder (the paper starts from
    ImageNet), as SimpleBaseline's factories; the GC blocks, SA-MFCD and decoders keep their initialisation."""
    if depth not in FR_SBN_DEPTHS:
        raise ValueError(f"FR-SBN depth {depth} not supported; choose one of {FR_SBN_DEPTHS}")
    model = FRSBN(depth, num_joints, mfcd_channels, gc_blocks=gc_blocks, fusion=fusion)
    if imagenet_weights:
        load_imagenet_resnet(model, imagenet_weights)
    return model


@register_model
def fr_sbn_r18(num_joints: int = 17, imagenet_weights: str = "") -> FRSBN:
    """ResNet-18 encoder: not in the paper; the CPU-sized model of the synthetic Table 1 ablation."""
    return fr_sbn(18, num_joints, imagenet_weights=imagenet_weights)


@register_model
def fr_sbn_r34(num_joints: int = 17, imagenet_weights: str = "") -> FRSBN:
    return fr_sbn(34, num_joints, imagenet_weights=imagenet_weights)


@register_model
def fr_sbn_r50(num_joints: int = 17, imagenet_weights: str = "") -> FRSBN:
    return fr_sbn(50, num_joints, imagenet_weights=imagenet_weights)


@register_model
def fr_sbn_r101(num_joints: int = 17, imagenet_weights: str = "") -> FRSBN:
    return fr_sbn(101, num_joints, imagenet_weights=imagenet_weights)


@register_model
def fr_sbn_r152(num_joints: int = 17, imagenet_weights: str = "") -> FRSBN:
    return fr_sbn(152, num_joints, imagenet_weights=imagenet_weights)


# Table 1 ablation rows (ResNet-34, as in the paper); SBN-34 is `simplebaseline_r34`, the full row `fr_sbn_r34`.
@register_model
def fr_sbn_r34_plain(num_joints: int = 17, imagenet_weights: str = "") -> FRSBN:
    """Table 1 "FR-SBN": five plain deconv decoders, no GC blocks, no encoder features in the decoders."""
    return fr_sbn(34, num_joints, gc_blocks=False, fusion="none", imagenet_weights=imagenet_weights)


@register_model
def fr_sbn_r34_gcb(num_joints: int = 17, imagenet_weights: str = "") -> FRSBN:
    """Table 1 "FR-SBN+GCB": the seven GC blocks, no encoder features in the decoders."""
    return fr_sbn(34, num_joints, fusion="none", imagenet_weights=imagenet_weights)


@register_model
def fr_sbn_r34_gcb_skip(num_joints: int = 17, imagenet_weights: str = "") -> FRSBN:
    """Table 1 "FR-SBN+GCB+skip": same-resolution skips (stages 3, 2, 1 -> decoders 1, 2, 3), no SA-MFCD."""
    return fr_sbn(34, num_joints, fusion="skip", imagenet_weights=imagenet_weights)


# The same rows on ResNet-18 (not in the paper): the synthetic Table 1 ablation at a CPU budget
# (configs/plans/bench_fr_sbn.yaml); SBN-18 is `simplebaseline_r18`, the full row `fr_sbn_r18`.
@register_model
def fr_sbn_r18_plain(num_joints: int = 17, imagenet_weights: str = "") -> FRSBN:
    """ResNet-18 "FR-SBN": five plain decoders, no GC blocks, no encoder features in the decoders."""
    return fr_sbn(18, num_joints, gc_blocks=False, fusion="none", imagenet_weights=imagenet_weights)


@register_model
def fr_sbn_r18_gcb(num_joints: int = 17, imagenet_weights: str = "") -> FRSBN:
    """ResNet-18 "FR-SBN+GCB"."""
    return fr_sbn(18, num_joints, fusion="none", imagenet_weights=imagenet_weights)


@register_model
def fr_sbn_r18_gcb_skip(num_joints: int = 17, imagenet_weights: str = "") -> FRSBN:
    """ResNet-18 "FR-SBN+GCB+skip"."""
    return fr_sbn(18, num_joints, fusion="skip", imagenet_weights=imagenet_weights)
