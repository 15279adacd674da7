"""Bottom-up PAF models (seed 004): CMU-Pose, the small NN, the tiny CMU-Pose. Exact sizes, the
per-stage (confidence_maps, pafs) outputs at stride 8, gradients, VGG-19 loading and its errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from posedistill.errors import CheckpointError, MissingFileError
from posedistill.inference.backends import TorchBackend, output_names
from posedistill.models import MODELS, create_model
from posedistill.models.bottomup import (VGG19_CONV_INDICES, CMUPose, LastStage, SmallPAFNet, cmu_pose,
                                         load_vgg19_weights)
from posedistill.tools.profile import count_gmacs

# name -> (parameters, nn.Conv2d layers, stages, backbone channels) at 19 heatmaps / 38 PAF channels
SIZES = {
    "cmu_pose": (52_311_446, 92, 6, 128),       # paper: 52.3M
    "small_paf_net": (5_211_097, 19, 1, 128),   # paper: 19 conv layers, 5.2M
    "cmu_pose_tiny": (947_466, 36, 2, 32),       # CPU-sized, with BatchNorm
    "small_paf_net_tiny": (328_145, 19, 1, 32),   # CPU-sized small NN, with BatchNorm
}
# torchvision vgg19().features conv index -> (out, in) channels
VGG19_SHAPES = dict(zip(VGG19_CONV_INDICES, [(64, 3), (64, 64), (128, 64), (128, 128), (256, 128), (256, 256),
                                             (256, 256), (256, 256), (512, 256), (512, 512)]))


def _n(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # conftest.py: why


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: create_model(name) for name in SIZES}


def _fake_vgg19(extra: bool = True) -> dict[str, torch.Tensor]:
    """A torchvision-layout VGG-19 state dict for the first 10 convs (plus later keys to be ignored)."""
    g = torch.Generator().manual_seed(1)
    state = {}
    for i, (cout, cin) in VGG19_SHAPES.items():
        state[f"features.{i}.weight"] = torch.randn(cout, cin, 3, 3, generator=g)
        state[f"features.{i}.bias"] = torch.randn(cout, generator=g)
    if extra:
        state["features.23.weight"] = torch.randn(512, 512, 3, 3, generator=g)
        state["classifier.0.weight"] = torch.randn(8, 4, generator=g)
    return state


@pytest.mark.parametrize("name", sorted(SIZES))
def test_exact_sizes_and_registry(models, name):
    params, convs, stages, _ = SIZES[name]
    model = models[name]
    assert name in MODELS
    assert _n(model) == params and len(_convs(model)) == convs
    assert model.head_type == "paf" and model.output_stride == 8 and model.num_joints == 17
    assert (model.num_heatmaps, model.num_pafs) == (19, 38)
    assert len(model.stages if isinstance(model, CMUPose) else [model.head]) == stages


def test_cmu_pose_layout(models):
    m = models["cmu_pose"]
    # VGG-19 conv1_1..conv4_2 at torchvision's indices; 3 pools, nothing past index 22
    assert [i for i, layer in enumerate(m.features) if isinstance(layer, nn.Conv2d)] == list(VGG19_CONV_INDICES)
    assert [i for i, layer in enumerate(m.features) if isinstance(layer, nn.MaxPool2d)] == [4, 9, 18]
    assert len(m.features) == 23
    assert [_n(part) for part in (m.features, m.cpm, m.stages[0])] == [5_865_536, 1_474_944, 1_046_841]
    assert all(_n(s) == 8_784_825 for s in m.stages[1:])
    # refinement input: pafs + confidence maps + features = 185 channels; 7x7 convs; 1x1 outputs
    first = m.stages[1].pafs[0]
    assert first.in_channels == 185 and first.kernel_size == (7, 7)
    assert m.stages[0].pafs[-1].out_channels == 38 and m.stages[0].confidence[-1].out_channels == 19
    assert _convs(m.stages[0].pafs)[-1].in_channels == 512 and _convs(m.stages[1].confidence)[-1].in_channels == 128


def test_init(models):
    cmu, small = models["cmu_pose"], models["small_paf_net"]
    big = cmu.stages[1].pafs[2].weight      # 128x128x7x7: N(0, 0.01) as CMU's setLayers.py
    assert abs(big.std().item() - 0.01) < 0.0005
    assert all(c.bias.abs().max() == 0 for c in _convs(cmu) + _convs(small))
    conv = small.head[0]                    # LeCun normal: std = fan_in ** -0.5
    assert abs(conv.weight.std().item() - (128 * 49) ** -0.5) < 0.001


@pytest.mark.parametrize("name,size", [("cmu_pose", (64, 64)), ("small_paf_net", (64, 96)),
                                       ("cmu_pose_tiny", (96, 64))])
def test_stage_outputs_stride8_and_backward(models, name, size):
    _, _, stages, feat_ch = SIZES[name]
    model = models[name]
    model.zero_grad(set_to_none=True)
    h, w = size
    outputs, feats = model(torch.randn(1, 3, h, w), return_features=True)
    assert isinstance(outputs, list) and len(outputs) == stages
    for confidence, pafs in outputs:
        assert confidence.shape == (1, 19, h // 8, w // 8) and pafs.shape == (1, 38, h // 8, w // 8)
    assert feats["backbone"].shape == (1, feat_ch, h // 8, w // 8)
    loss = sum(c.square().mean() + p.square().mean() for c, p in outputs)  # every stage supervised
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert all(c.weight.grad.abs().sum() > 0 for c in _convs(model)[-4:])


def test_other_keypoint_sets():
    torch.manual_seed(0)
    m = create_model("cmu_pose_tiny", num_joints=3, num_heatmaps=5, num_pafs=8, stages=3)
    assert m.num_joints == 3 and len(m.stages) == 3 and m.stages[2].pafs[0].in_channels == 32 + 5 + 8
    out = m(torch.randn(2, 3, 32, 32))
    assert [tuple(c.shape) for c, _ in out] == [(2, 5, 4, 4)] * 3
    assert [tuple(p.shape) for _, p in out] == [(2, 8, 4, 4)] * 3
    small = SmallPAFNet(num_heatmaps=4, num_pafs=6, num_joints=3)
    (c, p), = small(torch.randn(1, 3, 16, 16))
    assert c.shape == (1, 4, 2, 2) and p.shape == (1, 6, 2, 2)
    # the head's output conv holds the PAFs first, then the confidence maps
    raw = small.head(small.features(torch.ones(1, 3, 16, 16)))
    c2, p2 = small(torch.ones(1, 3, 16, 16))[0]
    assert torch.equal(raw[:, :6], p2) and torch.equal(raw[:, 6:], c2)
    with pytest.raises(ValueError, match="stages >= 1"):
        CMUPose(stages=0)


def test_last_stage_is_the_paf_prediction_contract(models):
    model = models["cmu_pose_tiny"].eval()
    wrapped = LastStage(model)
    assert (wrapped.head_type, wrapped.output_stride, wrapped.num_joints) == ("paf", 8, 17)
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        confidence, pafs = model(x)[-1]
        got = wrapped(x)
    assert torch.equal(got[0], confidence) and torch.equal(got[1], pafs)
    arrays = TorchBackend(wrapped)(x.numpy())      # the "paf" head's two outputs, in output_names order
    assert output_names("paf") == ("confidence_maps", "pafs")
    assert [a.shape for a in arrays] == [(2, 19, 4, 6), (2, 38, 4, 6)]


def test_load_vgg19_weights(tmp_path):
    state = _fake_vgg19()
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    torch.manual_seed(0)
    model = cmu_pose(stages=1, vgg19_weights=str(path))        # the factory argument
    for i in VGG19_CONV_INDICES:
        assert torch.equal(model.features[i].weight, state[f"features.{i}.weight"])
        assert torch.equal(model.features[i].bias, state[f"features.{i}.bias"])
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": _fake_vgg19(extra=False)}, wrapped)
    keys = load_vgg19_weights(model, wrapped)
    assert len(keys) == 20 and keys[0] == "features.0.weight"


def test_load_vgg19_weights_errors(tmp_path):
    torch.manual_seed(0)
    model = cmu_pose(stages=1)
    before = model.features[0].weight.clone()

    missing = _fake_vgg19()
    del missing["features.21.bias"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing\.pth: VGG-19 weights lack key features\.21\.bias") as e:
        load_vgg19_weights(model, tmp_path / "missing.pth")
    assert "\n" not in str(e.value)
    assert torch.equal(model.features[0].weight, before)       # nothing copied on error

    shaped = _fake_vgg19()
    shaped["features.7.weight"] = torch.zeros(128, 64, 3, 3)
    torch.save(shaped, tmp_path / "shaped.pth")
    with pytest.raises(CheckpointError, match=r"shaped\.pth: features\.7\.weight has shape \(128, 64, 3, 3\), "
                                              r"the VGG-19 backbone expects \(128, 128, 3, 3\)"):
        load_vgg19_weights(model, tmp_path / "shaped.pth")
    assert torch.equal(model.features[0].weight, before)

    with pytest.raises(MissingFileError, match="nope.pth"):
        cmu_pose(stages=1, vgg19_weights=str(tmp_path / "nope.pth"))
    torch.save(_fake_vgg19(), tmp_path / "vgg19.pth")
    with pytest.raises(CheckpointError, match=r"features\.0\.weight has shape \(64, 3, 3, 3\)"):
        load_vgg19_weights(create_model("cmu_pose_tiny"), tmp_path / "vgg19.pth")   # quarter widths


def test_gmacs_at_368(models):
    # the docstring table at 368x368 = 8 x 46 (cmu_pose: 135.93, 7 s to count, not repeated here), counted
    # at 96x96 = 8 x 12: every conv (all at stride 1, 2, 4 or 8) has (12/46)^2 of the output positions
    scale = (46 / 12) ** 2
    assert scale * count_gmacs(models["small_paf_net"], (96, 96)) == pytest.approx(17.397, abs=0.001)
    assert scale * count_gmacs(models["cmu_pose_tiny"], (96, 96)) == pytest.approx(3.621, abs=0.001)
    assert scale * count_gmacs(models["small_paf_net_tiny"], (96, 96)) == pytest.approx(1.112, abs=0.001)


@pytest.mark.parametrize("name", ["cmu_pose_tiny", "small_paf_net_tiny"])
def test_batchnorm_variants_start_near_zero_outputs(models, name):
    """Their output convs start at N(0, 0.01): with LeCun normal there (std ~1 outputs behind BatchNorm)
    a short CPU run spends its first hundreds of steps shrinking them (models/bottomup.py)."""
    model = models[name].train()
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        confidence, pafs = model(torch.randn(2, 3, 64, 64))[-1]
    assert confidence.std() < 0.1 and pafs.std() < 0.1
