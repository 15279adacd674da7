"""SimCC head: shapes, parameter counts, feature pass-through, gradients, input-size check."""
import importlib.util

import pytest
import torch

from posedistill.models import create_model
from posedistill.models.pose_resnet import pose_resnet
from posedistill.models.simcc import SimCCHead, simcc

# Linear(3072 -> 384) + Linear(3072 -> 512) at 256x192, split ratio 2: the official SimCC head.
SIMCC_LINEARS_256x192 = (3072 * 384 + 384) + (3072 * 512 + 512)


def _tiny_base(k=3):
    return pose_resnet(18, num_joints=k, deconv_channels=8)


def test_shapes_and_features():
    model = simcc(_tiny_base(), input_size=(64, 64), split_ratio=2.0)
    assert model.head_type == "simcc" and model.output_stride == 4
    x = torch.randn(2, 3, 64, 64)
    (lx, ly), feats = model(x, return_features=True)
    assert lx.shape == (2, 3, 128) and ly.shape == (2, 3, 128)
    assert feats["backbone"].shape == (2, 512, 2, 2)
    assert feats["head_in"].shape == (2, 8, 16, 16)
    assert feats["simcc_in"].shape == (2, 3, 16, 16)
    lx2, ly2 = model(x)
    assert torch.allclose(lx, lx2) and torch.allclose(ly, ly2)


def test_non_square_split_ratio():
    model = simcc(_tiny_base(2), input_size=(64, 128), split_ratio=1.5)
    lx, ly = model(torch.randn(1, 3, 128, 64))
    assert lx.shape == (1, 2, 96) and ly.shape == (1, 2, 192)


def test_every_parameter_gets_a_gradient():
    model = simcc(_tiny_base(), input_size=(32, 32))
    lx, ly = model(torch.randn(2, 3, 32, 32))
    (lx.square().mean() + ly.square().mean()).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_wrong_input_size_is_explained():
    model = simcc(_tiny_base(), input_size=(64, 64))
    with pytest.raises(ValueError, match="built for input 64x64"):
        model(torch.randn(1, 3, 128, 64))
    with pytest.raises(ValueError, match="divisible"):
        simcc(_tiny_base(), input_size=(62, 64))
    with pytest.raises(ValueError, match="heatmap model"):
        SimCCHead(simcc(_tiny_base(), input_size=(64, 64)), input_size=(64, 64))


def test_simcc_r50_parameter_count():
    with torch.device("meta"):
        model = create_model("simcc_r50", num_joints=17, input_size=(192, 256))
    assert sum(p.numel() for p in model.parameters()) == 33_999_697 + SIMCC_LINEARS_256x192


@pytest.mark.skipif(importlib.util.find_spec("posedistill.models.hrnet") is None, reason="hrnet.py not present")
def test_simcc_hrnet_w32_parameter_count():
    from posedistill.models import hrnet

    with torch.device("meta"):
        base = hrnet.hrnet_w32(num_joints=17)
        model = create_model("simcc_hrnet_w32", num_joints=17, input_size=(192, 256))
    n_base = sum(p.numel() for p in base.parameters())
    assert sum(p.numel() for p in model.parameters()) == n_base + SIMCC_LINEARS_256x192
    assert n_base == 28_536_113  # official HRNet-W32 at 17 joints (counted from its structure)


def test_official_simcc_layout_loads_into_wrapper(tmp_path):
    """Official SimCC files keep the backbone keys top-level next to mlp_head_x / mlp_head_y."""
    from posedistill.models.convert import convert_mmpose_checkpoint
    from posedistill.models.weights import load_weights

    ref = simcc(_tiny_base(), input_size=(32, 32)).eval()
    official = {k[len("base."):] if k.startswith("base.") else k: v for k, v in ref.state_dict().items()}
    assert "mlp_head_x.weight" in official and "final_layer.weight" in official
    torch.save({"state_dict": official}, tmp_path / "simcc.pth")
    model = simcc(_tiny_base(), input_size=(32, 32)).eval()
    load_weights(model, tmp_path / "simcc.pth", strict=True)
    x = torch.randn(1, 3, 32, 32)
    assert all(torch.equal(a, b) for a, b in zip(model(x), ref(x)))

    mmpose = {("head." + k if k.startswith(("deconv_layers", "final_layer", "mlp_head")) else "backbone." + k): v
              for k, v in official.items()}
    assert convert_mmpose_checkpoint(mmpose, "simcc").keys() == official.keys()


@pytest.mark.skipif(importlib.util.find_spec("posedistill.models.hrnet") is None, reason="hrnet.py not present")
def test_simcc_hrnet_w48_parameter_count():
    """The seed-002 teacher: official HRNet-W48 (63,595,745 parameters at 17 joints) + the SimCC linears."""
    with torch.device("meta"):
        model = create_model("simcc_hrnet_w48", num_joints=17, input_size=(192, 256))
    assert sum(p.numel() for p in model.parameters()) == 63_595_745 + SIMCC_LINEARS_256x192
