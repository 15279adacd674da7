"""GC block, non-local block and depthwise-separable conv against their equations."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from posedistill.models.blocks import DepthwiseSeparableConv, GlobalContextBlock, NonLocalBlock


def _randomise_(module: nn.Module, seed: int = 0) -> None:
    """Non-zero weights everywhere (the zero-init of the last layers would hide the transform)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def test_gc_block_matches_equation():
    c, h, w = 32, 5, 4
    block = GlobalContextBlock(c, ratio=1 / 8, return_attention=True).eval()
    _randomise_(block)
    x = torch.randn(2, c, h, w)
    y, attn = block(x)

    wk, bk = block.conv_mask.weight.view(c), block.conv_mask.bias        # [C], [1]
    w1, b1 = block.channel_add_conv[0].weight.view(-1, c), block.channel_add_conv[0].bias  # [C*r, C]
    ln = block.channel_add_conv[1]
    w2, b2 = block.channel_add_conv[3].weight.view(c, -1), block.channel_add_conv[3].bias  # [C, C*r]
    for b in range(2):
        feats = x[b].reshape(c, h * w)                       # x_j as columns
        logits = wk @ feats + bk                             # [HW]
        a = torch.exp(logits - logits.max())
        a = a / a.sum()
        context = feats @ a                                  # sum_j a_j x_j, [C]
        t = w1 @ context + b1
        t = (t - t.mean()) / torch.sqrt(t.var(unbiased=False) + ln.eps) * ln.weight.view(-1) + ln.bias.view(-1)
        t = w2 @ torch.clamp(t, min=0) + b2
        expected = x[b] + t.view(c, 1, 1)
        torch.testing.assert_close(y[b], expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(attn[b].reshape(-1), a, rtol=1e-4, atol=1e-6)


def test_gc_block_starts_as_identity_and_attention_sums_to_one():
    block = GlobalContextBlock(16, return_attention=True)
    assert block.hidden == 4                                   # floor: LayerNorm over 1 value is constant
    assert GlobalContextBlock(256).hidden == 16 and GlobalContextBlock(32, min_hidden=1).hidden == 2
    x = torch.randn(3, 16, 6, 5)
    y, attn = block(x)
    torch.testing.assert_close(y, x)
    assert attn.shape == (3, 1, 6, 5)
    torch.testing.assert_close(attn.sum(dim=(2, 3)), torch.ones(3, 1))
    plain = GlobalContextBlock(16)
    assert isinstance(plain(x), torch.Tensor)


def test_non_local_matches_equation():
    c, h, w = 6, 3, 4
    block = NonLocalBlock(c).eval()
    assert block.inter_channels == 3
    _randomise_(block, seed=1)
    x = torch.randn(2, c, h, w)
    z = block(x)

    def conv1x1(conv, t):                                  # t [C_in, N] -> [C_out, N]
        return conv.weight.view(conv.out_channels, -1) @ t + conv.bias.view(-1, 1)

    bn = block.W[1]
    for b in range(2):
        feats = x[b].reshape(c, h * w)
        theta, phi, g = conv1x1(block.theta, feats), conv1x1(block.phi, feats), conv1x1(block.g, feats)
        scores = theta.T @ phi                             # [N_i, N_j]: theta_i . phi_j
        f = torch.exp(scores - scores.max(dim=1, keepdim=True).values)
        f = f / f.sum(dim=1, keepdim=True)                 # softmax over j
        y = g @ f.T                                        # y_i = sum_j f_ij g_j, [C', N]
        wy = conv1x1(block.W[0], y)
        wy = (wy - bn.running_mean.view(-1, 1)) / torch.sqrt(bn.running_var.view(-1, 1) + bn.eps)
        wy = wy * bn.weight.view(-1, 1) + bn.bias.view(-1, 1)
        torch.testing.assert_close(z[b], (wy + feats).view(c, h, w), rtol=1e-4, atol=1e-5)


def test_non_local_starts_as_identity():
    block = NonLocalBlock(8, inter_channels=2)
    x = torch.randn(2, 8, 4, 3)
    torch.testing.assert_close(block(x), x)
    block.train()
    torch.testing.assert_close(block(x), x)


def test_depthwise_separable_conv():
    m = DepthwiseSeparableConv(8, 12, kernel_size=3, stride=2).eval()
    assert m.depthwise.groups == 8 and m.depthwise.weight.shape == (8, 1, 3, 3)
    assert m.pointwise.weight.shape == (12, 8, 1, 1)
    _randomise_(m, seed=2)
    x = torch.randn(2, 8, 9, 7)
    y = m(x)
    assert y.shape == (2, 12, 5, 4) and (y >= 0).all()
    # same thing with plain functional ops
    d = F.conv2d(x, m.depthwise.weight, stride=2, padding=1, groups=8)
    d = F.relu(F.batch_norm(d, m.depthwise_bn.running_mean, m.depthwise_bn.running_var,
                            m.depthwise_bn.weight, m.depthwise_bn.bias, eps=m.depthwise_bn.eps))
    p = F.conv2d(d, m.pointwise.weight)
    p = F.batch_norm(p, m.pointwise_bn.running_mean, m.pointwise_bn.running_var,
                     m.pointwise_bn.weight, m.pointwise_bn.bias, eps=m.pointwise_bn.eps)
    torch.testing.assert_close(y, F.relu(p))
    linear_out = DepthwiseSeparableConv(8, 12, last_relu=False).eval()
    _randomise_(linear_out, seed=3)
    assert (linear_out(x) < 0).any()
