"""ELPN-V1/V2 (seed 001): block structure, exact sizes, shapes, gradients, state-dict round trip."""
import pytest
import torch
import torch.nn as nn

from posedistill.models import create_model
from posedistill.models.blocks import DepthwiseSeparableConv, GlobalContextBlock
from posedistill.models.elpn import EfficientBottleneck, LightweightBasicBlock, elpn


def _n(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # conftest.py: why


@pytest.fixture(scope="module")
def v1():
    torch.manual_seed(0)
    return create_model("elpn_v1", num_joints=17)


def test_exact_parameter_counts(v1):
    # paper Table 1: 1.1M and 4.7M
    assert _n(v1) == 1_108_146
    assert _n(elpn("v2")) == 4_705_602


def test_structure(v1):
    assert [m.__class__ for m in v1.layer1] == [EfficientBottleneck] * 4
    assert all(isinstance(b.context, GlobalContextBlock) for b in v1.layer1)
    assert isinstance(v1.final_context, GlobalContextBlock)
    # exchange units (1, 2, 2), widths 16..128, two lightweight blocks per branch
    assert (len(v1.stage2), len(v1.stage3), len(v1.stage4)) == (1, 2, 2)
    widths = [branch[0].conv2.pointwise.out_channels for branch in v1.stage4[0].branches]
    assert widths == [16, 32, 64, 128]
    for branch in v1.stage3[1].branches:
        assert len(branch) == 2
        for block in branch:
            assert isinstance(block, LightweightBasicBlock)
            assert isinstance(block.conv1, DepthwiseSeparableConv)
            assert block.conv1.depthwise.groups == block.conv1.depthwise.in_channels
    v2 = elpn("V2")
    assert (len(v2.stage2), len(v2.stage3), len(v2.stage4)) == (1, 4, 3)
    assert v2.final_layer.in_channels == 32
    with pytest.raises(ValueError, match="v1"):
        elpn("v3")


def test_forward_shapes_features_and_gradients(v1):
    x = torch.randn(2, 3, 64, 48)
    v1.train()
    v1.zero_grad()
    out, feats = v1(x, return_features=True)
    assert out.shape == (2, 17, 16, 12)
    assert feats["backbone"].shape == (2, 16, 16, 12)
    assert feats["head_in"].shape == (2, 16, 16, 12)
    assert v1.output_stride == 4 and v1.head_type == "heatmap"
    # GC blocks start as identity, so the final context block leaves the stage-4 output unchanged
    torch.testing.assert_close(feats["head_in"], feats["backbone"])
    (out.square().mean() * 1e6 + feats["head_in"].mean()).backward()
    no_grad = [n for n, p in v1.named_parameters() if p.grad is None]
    assert not no_grad, no_grad[:5]


def test_every_parameter_gets_gradient_after_gc_leaves_identity():
    # With the zero-initialised last GC conv, the GC mask and first transform conv get exactly zero
    # gradient at step 0 (expected for GCNet); perturb that conv so every gradient must be non-zero.
    # This also catches a degenerate head GC block (LayerNorm over a single hidden channel).
    torch.manual_seed(1)
    m = elpn("v1", num_joints=3)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, GlobalContextBlock):
                mod.channel_add_conv[-1].weight.normal_(std=0.1)
    m.train()
    out = m(torch.randn(2, 3, 64, 48))
    (out.square().mean() * 1e6).backward()
    zero = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not zero, zero[:5]


def test_state_dict_round_trip_strict(v1):
    other = elpn("v1")
    result = other.load_state_dict(v1.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for (k, a), b in zip(v1.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), k
    keys = v1.state_dict().keys()
    assert "layer1.0.context.conv_mask.weight" in keys
    assert "stage2.0.branches.0.0.conv1.depthwise.weight" in keys
    assert "final_context.channel_add_conv.3.weight" in keys
