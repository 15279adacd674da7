"""engine/evaluate.py: the bottom-up multi-scale (and flip) test."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from posedistill.codecs.paf import PafCodec
from posedistill.engine.evaluate import bottomup_maps, evaluate


class _PoolMaps(nn.Module):
    """A scale-equivariant 'network': every output channel is the stride-8 average of the input's first
    channel, so the maps of a smooth image resized by s and brought back equal the maps at scale 1."""
    head_type = "paf"

    def forward(self, x):
        pooled = F.avg_pool2d(x[:, :1], 8)
        return [(pooled.expand(-1, 19, -1, -1), pooled.expand(-1, 38, -1, -1))]


def _smooth_image(h: int = 64, w: int = 96) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    return torch.exp(-((xx - 0.2) ** 2 + (yy + 0.1) ** 2) / 0.3)[None, None].expand(2, 3, h, w).contiguous()


def test_multi_scale_maps_are_at_the_scale_1_size_and_agree_on_a_smooth_image():
    codec = PafCodec(input_size=(96, 64))
    images = _smooth_image()
    one = bottomup_maps(_PoolMaps(), images, codec)
    many = bottomup_maps(_PoolMaps(), images, codec, scales=(0.5, 1.0, 2.0))
    assert one[0].shape == many[0].shape == (2, 19, 8, 12) and many[1].shape == (2, 38, 8, 12)
    assert torch.equal(one[0], F.avg_pool2d(images[:, :1], 8).expand(-1, 19, -1, -1))
    # a smooth field resampled down / up and back differs from the scale-1 maps by interpolation only
    assert torch.allclose(many[0], one[0], atol=0.03) and not torch.equal(many[0], one[0])


def test_multi_scale_bad_scales_and_top_down_models_are_refused():
    codec = PafCodec(input_size=(96, 64))
    with pytest.raises(ValueError, match="eval.scales: expected a non-empty list of positive"):
        bottomup_maps(_PoolMaps(), _smooth_image(), codec, scales=(1.0, 0.0))
    top_down = nn.Conv2d(3, 17, 1)
    top_down.head_type = "heatmap"
    with pytest.raises(ValueError, match=r"eval.scales=\[1.0, 2.0\]: the multi-scale test is for bottom-up"):
        evaluate(top_down, [], None, None, torch.device("cpu"), data_format="coco", ann_file="x.json",
                 scales=(1.0, 2.0))
