"""HRNet: official state-dict layout, exact sizes, shapes, gradients."""
import pytest
import torch
import torch.nn as nn

from posedistill.models import create_model
from posedistill.models.hrnet import HRNet, hrnet

OFFICIAL_KEYS = [
    "conv1.weight", "bn1.running_mean", "conv2.weight", "bn2.weight",
    "layer1.0.conv3.weight", "layer1.0.bn3.running_var", "layer1.0.downsample.0.weight",
    "layer1.0.downsample.1.bias", "layer1.3.conv1.weight",
    "transition1.0.0.weight", "transition1.0.1.running_mean", "transition1.1.0.0.weight",
    "transition2.2.0.0.weight", "transition3.3.0.1.bias",
    "stage2.0.branches.0.0.conv1.weight", "stage2.0.branches.1.3.bn2.num_batches_tracked",
    "stage2.0.fuse_layers.0.1.0.weight", "stage2.0.fuse_layers.0.1.1.running_var",
    "stage2.0.fuse_layers.1.0.0.0.weight", "stage2.0.fuse_layers.1.0.0.1.weight",
    "stage3.3.fuse_layers.2.0.1.0.weight", "stage3.3.fuse_layers.2.0.0.1.bias",
    "stage4.1.fuse_layers.3.0.2.0.weight", "stage4.2.fuse_layers.0.3.0.weight",
    "stage4.2.branches.3.3.bn2.running_var", "final_layer.weight", "final_layer.bias",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # conftest.py: why


@pytest.fixture(scope="module")
def w32() -> HRNet:
    torch.manual_seed(0)
    return create_model("hrnet_w32", num_joints=17)


def _n(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_exact_parameter_counts(w32):
    assert _n(w32) == 28_536_113
    assert _n(hrnet(48)) == 63_595_745


def test_official_key_names(w32):
    sd = w32.state_dict()
    missing = [k for k in OFFICIAL_KEYS if k not in sd]
    assert not missing, missing
    prefixes = ("conv1.", "bn1.", "conv2.", "bn2.", "layer1.", "transition1.", "transition2.",
                "transition3.", "stage2.", "stage3.", "stage4.", "final_layer.")
    assert all(k.startswith(prefixes) for k in sd)
    # the last stage-4 unit keeps only the highest-resolution output; unchanged branches have no transition
    assert not any(k.startswith("stage4.2.fuse_layers.1.") for k in sd)
    assert not any(k.startswith(("transition2.0.", "transition2.1.", "transition3.0.")) for k in sd)
    # down-sampling fuse path: ReLU between the stride-2 units, none after the last
    path = w32.stage4[0].fuse_layers[3][0]
    assert [len(unit) for unit in path] == [3, 3, 2]
    assert w32.final_layer.weight.shape == (17, 32, 1, 1)


def test_forward_shapes_features_and_gradients(w32):
    # one training-mode forward/backward serves shapes, features and gradients (CPU-cheap)
    w32.train()
    w32.zero_grad()
    out, feats = w32(torch.randn(1, 3, 64, 48), return_features=True)   # BN still sees >= 4 values
    assert out.shape == (1, 17, 16, 12)
    assert feats["backbone"].shape == (1, 32, 16, 12)
    assert feats["head_in"] is feats["backbone"]
    assert w32.output_stride == 4 and w32.head_type == "heatmap"
    (out.square().mean() * 1e6).backward()
    no_grad = [n for n, p in w32.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, no_grad[:5]


def test_state_dict_round_trip_strict(w32):
    other = hrnet(32)
    result = other.load_state_dict(w32.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for (k, a), b in zip(w32.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), k


def test_reduced_net_and_bad_arguments():
    m = HRNet(num_joints=5, width=8, stage_modules=(1, 1, 1), branch_blocks=1).eval()
    with torch.no_grad():
        out = m(torch.randn(1, 3, 64, 48))
    assert out.shape == (1, 5, 16, 12)
    with pytest.raises(ValueError, match="width"):
        hrnet(40)
    with pytest.raises(ValueError, match="stage_modules"):
        HRNet(stage_modules=(1, 0, 1))
