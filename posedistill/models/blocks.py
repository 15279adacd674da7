"""Building blocks shared by several model families.

- `GlobalContextBlock`: GCNet (Cao et al., "GCNet: Non-local Networks Meet Squeeze-Excitation
  Networks and Beyond", 2019), the "attention pooling + channel add" variant of the public
  `xvjiarui/GCNet` `context_block.py`. Parameter names follow that file (`conv_mask`,
  `channel_add_conv.{0,1,3}`) so GCNet-layout weights map one to one. Used by ELPN (seed 001) and
  FR-SBN (seed 003); FR-SBN also needs the softmax attention map, hence `return_attention`.
- `NonLocalBlock`: embedded-Gaussian non-local block (Wang et al., "Non-local Neural Networks",
  CVPR 2018), used by the IKD discriminator (seed 000).
- `DepthwiseSeparableConv`: depthwise k x k conv + BN + ReLU, pointwise 1x1 conv + BN (+ ReLU),
  MobileNet style; the "Lightweight Basic Block" of ELPN is two of these with a residual.

All three start as (or can start as) identity maps where their papers say so: the last conv of the
GC transform and the BN after the non-local output conv are zero-initialised.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

BN_MOMENTUM = 0.1  # HRNet / SimpleBaseline official value (the PyTorch default)


class GlobalContextBlock(nn.Module):
    """GC block: y = x + T(sum_j softmax_j(W_k x_j) x_j).

    Context modelling: a 1x1 conv C->1 (`conv_mask`, with bias) gives one logit per position; a
    softmax over the H*W positions turns them into attention weights a_j; the context is the
    weighted sum sum_j a_j x_j, a C x 1 x 1 vector. Transform T (`channel_add_conv`): 1x1 conv
    C -> C*r, LayerNorm([C*r, 1, 1]), ReLU, 1x1 conv C*r -> C (all convs with bias, as GCNet).
    Fusion: broadcast addition to every position.

    Args:
        channels: C, input and output channels.
        ratio: bottleneck ratio r of the transform; GCNet uses 1/16.
        min_hidden: floor on the hidden width, which is `max(min_hidden, int(C * r))`. GCNet only
            uses C >= 256; on narrow maps (ELPN's 16/32-channel head) C/16 would be 1 or 2, and a
            LayerNorm over 1 value outputs its bias whatever the input (the block would ignore
            its context and get no gradient in `conv_mask`), over 2 values only +-1. The default
            4 changes nothing for C >= 64.
        return_attention: if True, `forward` returns `(y, attention)` with `attention` the softmax
            map `[B, 1, H, W]` (sums to 1 over H x W).

    Init (GCNet): `conv_mask` Kaiming-normal (fan_in), bias 0; the last transform conv weight and
    bias 0, so the block starts as the identity.
    """

    def __init__(self, channels: int, ratio: float = 1 / 16, return_attention: bool = False, min_hidden: int = 4):
        super().__init__()
        if channels <= 0:
            raise ValueError(f"GlobalContextBlock: channels must be positive, got {channels}")
        if not 0 < ratio <= 1:
            raise ValueError(f"GlobalContextBlock: ratio must be in (0, 1], got {ratio}")
        if min_hidden < 1:
            raise ValueError(f"GlobalContextBlock: min_hidden must be >= 1, got {min_hidden}")
        hidden = max(min_hidden, int(channels * ratio))
        self.channels = channels
        self.hidden = hidden
        self.return_attention = return_attention
        self.conv_mask = nn.Conv2d(channels, 1, kernel_size=1)
        self.channel_add_conv = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.LayerNorm([hidden, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GCNet init; call again after a whole-network init that touched every conv."""
        nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.conv_mask.bias)
        self.channel_add_conv[0].reset_parameters()
        self.channel_add_conv[1].reset_parameters()
        nn.init.zeros_(self.channel_add_conv[-1].weight)
        nn.init.zeros_(self.channel_add_conv[-1].bias)

    def spatial_pool(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (context [B, C, 1, 1], attention [B, 1, H, W])."""
        b, c, h, w = x.shape
        logits = self.conv_mask(x).view(b, 1, h * w)
        attn = F.softmax(logits, dim=2)                              # [B, 1, HW]
        context = torch.bmm(x.view(b, c, h * w), attn.transpose(1, 2))  # [B, C, 1]
        return context.view(b, c, 1, 1), attn.view(b, 1, h, w)

    def forward(self, x: torch.Tensor):
        context, attn = self.spatial_pool(x)
        y = x + self.channel_add_conv(context)
        if self.return_attention:
            return y, attn
        return y


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block: z = W(y) + x, y_i = sum_j softmax_j(theta_i . phi_j) g_j.

    theta, phi, g: 1x1 convs C -> C' (with bias); the attention is a softmax over all H*W positions
    j for every position i (no 1/N scaling, no sub-sampling of phi/g: the discriminator inputs are
    small heatmaps). W: 1x1 conv C' -> C followed by BatchNorm whose weight and bias start at zero,
    so the block starts as the identity (Wang et al., Sec. 4.1).

    Args:
        channels: C.
        inter_channels: C'; default `max(1, C // 2)` as in the paper.
    """

    def __init__(self, channels: int, inter_channels: int | None = None):
        super().__init__()
        inter = max(1, channels // 2) if inter_channels is None else inter_channels
        if channels <= 0 or inter <= 0:
            raise ValueError(f"NonLocalBlock: channels and inter_channels must be positive, got {channels}, {inter}")
        self.channels = channels
        self.inter_channels = inter
        self.theta = nn.Conv2d(channels, inter, kernel_size=1)
        self.phi = nn.Conv2d(channels, inter, kernel_size=1)
        self.g = nn.Conv2d(channels, inter, kernel_size=1)
        self.W = nn.Sequential(nn.Conv2d(inter, channels, kernel_size=1), nn.BatchNorm2d(channels, momentum=BN_MOMENTUM))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Default conv init, output BN at zero (identity start)."""
        for conv in (self.theta, self.phi, self.g, self.W[0]):
            conv.reset_parameters()
        self.W[1].reset_parameters()
        nn.init.zeros_(self.W[1].weight)
        nn.init.zeros_(self.W[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        theta = self.theta(x).flatten(2).transpose(1, 2)   # [B, HW, C']
        phi = self.phi(x).flatten(2)                       # [B, C', HW]
        g = self.g(x).flatten(2).transpose(1, 2)           # [B, HW, C']
        f = F.softmax(torch.bmm(theta, phi), dim=-1)       # [B, HW(i), HW(j)]
        y = torch.bmm(f, g).transpose(1, 2).reshape(b, self.inter_channels, h, w)
        return self.W(y) + x


class DepthwiseSeparableConv(nn.Module):
    """Depthwise k x k conv (groups = in_ch) + BN + ReLU, then pointwise 1x1 conv + BN (+ ReLU).

    Convs have no bias (each is followed by BN). Submodules: `depthwise`, `depthwise_bn`,
    `pointwise`, `pointwise_bn`.

    Args:
        in_ch, out_ch: channels in and out.
        kernel_size: depthwise kernel (odd; padding keeps the size at stride 1).
        stride: stride of the depthwise conv.
        last_relu: apply ReLU after the pointwise BN. Pass False when a residual add follows and
            the ReLU comes after the add (ELPN's Lightweight Basic Block).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, last_relu: bool = True):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"DepthwiseSeparableConv: kernel_size must be odd, got {kernel_size}")
        self.depthwise = nn.Conv2d(in_ch, in_ch, kernel_size, stride, kernel_size // 2, groups=in_ch, bias=False)
        self.depthwise_bn = nn.BatchNorm2d(in_ch, momentum=BN_MOMENTUM)
        self.pointwise = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.pointwise_bn = nn.BatchNorm2d(out_ch, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.last_relu = last_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.depthwise_bn(self.depthwise(x)))
        x = self.pointwise_bn(self.pointwise(x))
        return self.relu(x) if self.last_relu else x
