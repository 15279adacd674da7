"""ELPN-V1/V2 (seed 001): block structure, exact sizes, shapes, gradients, state-dict round trip;
the plain-HRNet ablation networks of Tables 4-5: sizes against the paper's, tiny forwards."""
import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from posedistill.models import create_model
from posedistill.models.blocks import DepthwiseSeparableConv, GlobalContextBlock
from posedistill.models.elpn import EfficientBottleneck, LightweightBasicBlock, elpn, elpn_ablation
from posedistill.models.hrnet import HighResolutionModule
from posedistill.models.pose_resnet import BasicBlock
from posedistill.tools.profile import count_gmacs


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


# Tables 4-5 (MPII, 256x256): model -> (params at 16 joints, MACs at 256x256 / 2^30 (the paper's
# unit, see the module docstring), paper params in M, paper FLOPs in G).
ABLATION_ROWS = {
    "elpn_ablation_w8": (2_139_296, 1.840088, 2.1, 1.8),
    "elpn_ablation_w16": (7_445_872, 3.413086, 7.4, 3.4),
    "hrnet_w32": (28_536_080, 9.493164, 28.5, 9.5),           # the row both tables share
    "elpn_ablation_w64": (112_624_720, 33.389648, 112.6, 33.4),
    "elpn_ablation_eu111": (9_301_712, 4.315918, 10.1, 4.4),
    "elpn_ablation_eu121": (11_007_120, 5.217285, 11.8, 5.3),
    "elpn_ablation_eu131": (12_712_528, 6.118652, 13.5, 6.2),
    "elpn_ablation_eu122": (18_066_192, 6.453857, 18.8, 6.5),
    "elpn_ablation_eu113": (23_419_856, 6.789063, 23.4, 6.8),
}
# Rows the paper counts with the unused outputs of a multi-scale last stage-4 unit (docstring):
# paper figures, except eu122's FLOPs, which come to 6.6 with them (paper 6.5).
WITH_MULTI_SCALE_LAST = {"elpn_ablation_eu111": (10.1, 4.4), "elpn_ablation_eu121": (11.8, 5.3),
                         "elpn_ablation_eu131": (13.5, 6.2), "elpn_ablation_eu122": (18.8, 6.6)}


@pytest.mark.parametrize("name", sorted(ABLATION_ROWS))
def test_ablation_rows_sizes_and_tiny_forward(name):
    params, gflops, paper_params, paper_flops = ABLATION_ROWS[name]
    torch.manual_seed(0)
    model = create_model(name, num_joints=16).eval()
    assert sum(p.numel() for p in model.parameters()) == params
    # counted at 64x64: every map is then exactly 1/4 as wide and high as at 256x256 (both sizes are
    # multiples of 32), so every conv has 1/16 of the positions
    assert 16 * count_gmacs(model, (64, 64)) * 1e9 / 2 ** 30 == pytest.approx(gflops, abs=1e-6)
    if name not in WITH_MULTI_SCALE_LAST:
        assert (round(params / 1e6, 1), round(gflops, 1)) == (paper_params, paper_flops)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 48))
    assert out.shape == (1, 16, 16, 12) and torch.isfinite(out).all()


def _fuse_extra() -> tuple[int, float]:
    """Parameters and MACs / 2^30 at 256x256 that a multi-scale last stage-4 unit of width 32 adds."""
    channels = [32, 64, 128, 256]
    with torch.device("meta"):
        units = [HighResolutionModule(BasicBlock, channels, 4, multi_scale_output=m) for m in (True, False)]
        xs = [torch.zeros(1, c, 64 >> r, 64 >> r) for r, c in enumerate(channels)]   # stride 4 of 256x256
    counts = []
    for unit in units:
        with FlopCounterMode(display=False) as counter:
            unit(xs)
        counts.append((sum(p.numel() for p in unit.parameters()), counter.get_total_flops() / 2 / 2 ** 30))
    return counts[0][0] - counts[1][0], counts[0][1] - counts[1][1]


def test_table5_gap_is_the_unused_multi_scale_outputs():
    extra_params, extra_gflops = _fuse_extra()
    assert extra_params == 769_984 and extra_gflops == pytest.approx(0.1082, abs=1e-4)
    for name, expected in WITH_MULTI_SCALE_LAST.items():
        params, gflops = ABLATION_ROWS[name][:2]
        assert (round((params + extra_params) / 1e6, 1), round(gflops + extra_gflops, 1)) == expected, name


def test_ablation_structure_and_names():
    with torch.device("meta"):
        w8 = create_model("elpn_ablation_w8")
        eu122 = elpn_ablation("EU122")
    assert [b.__class__ for b in w8.stage4[0].branches[3]] == [BasicBlock] * 4
    assert w8.final_context is None and w8.final_layer.in_channels == 8
    assert [len(w8.stage2), len(w8.stage3), len(w8.stage4)] == [1, 4, 3]
    assert [len(eu122.stage2), len(eu122.stage3), len(eu122.stage4)] == [1, 2, 2]
    assert [branch[0].conv1.out_channels for branch in eu122.stage4[0].branches] == [32, 64, 128, 256]
    with pytest.raises(ValueError, match="hrnet_w32"):
        elpn_ablation("w32")
