"""SimpleBaseline: exact parameter counts, official state-dict layout, shapes, gradients, ImageNet loading."""
import pytest
import torch

from posedistill.errors import MissingFileError
from posedistill.models import create_model
from posedistill.models.pose_resnet import RESNET_SPECS, ResNetEncoder, load_imagenet_resnet, pose_resnet
from posedistill.models.weights import load_weights
from posedistill.tools.profile import count_gmacs, count_official_summary_gflops

# Counts of the official SimpleBaseline models at 17 joints (deconv 3 x 256, kernel 4, 1x1 final).
OFFICIAL_PARAMS = {18: 15_376_721, 34: 25_484_881, 50: 33_999_697, 101: 52_991_825, 152: 68_635_473}


@pytest.mark.parametrize("depth", sorted(OFFICIAL_PARAMS))
def test_parameter_count_matches_official(depth):
    with torch.device("meta"):  # no memory, no init cost
        model = create_model(f"simplebaseline_r{depth}", num_joints=17)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[depth]


def _official_r50_keys():
    """Key set of the official pose_resnet.py ResNet-50 model, written out from its structure."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight"} | {f"bn1.{s}" for s in bn}
    for stage, blocks in enumerate(RESNET_SPECS[50][1], start=1):
        for b in range(blocks):
            p = f"layer{stage}.{b}."
            keys |= {p + f"conv{i}.weight" for i in (1, 2, 3)}
            keys |= {p + f"bn{i}.{s}" for i in (1, 2, 3) for s in bn}
            if b == 0:
                keys |= {p + "downsample.0.weight"} | {p + f"downsample.1.{s}" for s in bn}
    for i in range(3):
        keys.add(f"deconv_layers.{3 * i}.weight")
        keys |= {f"deconv_layers.{3 * i + 1}.{s}" for s in bn}
    keys |= {"final_layer.weight", "final_layer.bias"}
    return keys


def test_r50_state_dict_layout_is_official():
    with torch.device("meta"):
        model = pose_resnet(50)
    keys = set(model.state_dict())
    assert keys == _official_r50_keys()
    for k in ("deconv_layers.0.weight", "deconv_layers.1.running_mean", "final_layer.weight", "layer4.2.bn3.weight"):
        assert k in keys
    sd = model.state_dict()
    assert tuple(sd["deconv_layers.0.weight"].shape) == (2048, 256, 4, 4)  # ConvTranspose2d: [in, out, k, k]
    assert "deconv_layers.0.bias" not in sd


def test_forward_shapes_and_features():
    model = pose_resnet(18, num_joints=5).eval()
    x = torch.randn(1, 3, 128, 96)
    out, feats = model(x, return_features=True)
    assert out.shape == (1, 5, 32, 24) and model.output_stride == 4 and model.head_type == "heatmap"
    assert feats["backbone"].shape == (1, 512, 4, 3)
    assert feats["head_in"].shape == (1, 256, 32, 24)
    assert torch.equal(model(x), out)


def test_every_parameter_gets_a_gradient():
    model = pose_resnet(18, num_joints=3, deconv_channels=16)
    model(torch.randn(2, 3, 32, 32)).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_official_layout_round_trip_strict(tmp_path):
    a = pose_resnet(18, num_joints=4, deconv_channels=32).eval()
    for m in a.modules():  # non-trivial BN statistics so a wrong mapping would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "official.pth"
    torch.save({"state_dict": a.state_dict()}, path)
    b = pose_resnet(18, num_joints=4, deconv_channels=32).eval()
    load_weights(b, path, strict=True)
    b.load_state_dict(torch.load(path, weights_only=True)["state_dict"], strict=True)
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(a(x), b(x))


def test_imagenet_loader_torchvision_layout(tmp_path):
    path = _fake_resnet18_file(tmp_path)
    trunk = torch.load(path, weights_only=True)
    model = pose_resnet(18)
    left = load_imagenet_resnet(model, path)
    assert torch.all(model.layer1[0].conv1.weight == 0.5)
    assert left and all(k.startswith(("deconv_layers.", "final_layer.")) for k in left)

    del trunk["layer2.0.bn1.weight"]
    trunk["extra.weight"] = torch.zeros(1)
    torch.save(trunk, path)
    with pytest.raises(ValueError, match=r"(?s)resnet18\.pth.*layer2\.0\.bn1\.weight.*extra\.weight"):
        load_imagenet_resnet(pose_resnet(18), path)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="depth 42"):
        pose_resnet(42)
    with pytest.raises(ValueError, match="deconv_kernel"):
        pose_resnet(18, deconv_kernel=5)


def test_registered_factories_take_head_width_and_reject_bad_values():
    """simplebaseline_rN(deconv_channels=, num_deconv=) sizes the head; nonsense values name the argument."""
    with torch.device("meta"):
        narrow = create_model("simplebaseline_r18", deconv_channels=64)
        wide = create_model("simplebaseline_r18")
    assert narrow.deconv_layers[0].out_channels == 64 and wide.deconv_layers[0].out_channels == 256
    assert sum(p.numel() for p in narrow.parameters()) < sum(p.numel() for p in wide.parameters())
    assert create_model("simplebaseline_r18", num_deconv=2).output_stride == 8
    with pytest.raises(ValueError, match="deconv_channels must be >= 1, got 0"):
        create_model("simplebaseline_r18", deconv_channels=0)
    with pytest.raises(ValueError, match="num_deconv must be >= 0"):
        create_model("simplebaseline_r34", num_deconv=-1)


def _fake_resnet18_file(tmp_path):
    """A torchvision-layout ResNet-18 state dict (with fc) whose layer1.0.conv1 is all 0.5."""
    trunk = ResNetEncoder(18).state_dict()
    trunk["fc.weight"], trunk["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    trunk["layer1.0.conv1.weight"] = torch.full_like(trunk["layer1.0.conv1.weight"], 0.5)
    path = tmp_path / "resnet18.pth"
    torch.save(trunk, path)
    return path


def test_factories_load_local_imagenet_weights(tmp_path):
    path = _fake_resnet18_file(tmp_path)
    for name in ("ikd_student18", "simplebaseline_r18"):
        model = create_model(name, num_joints=3, imagenet_weights=str(path))
        assert torch.all(model.layer1[0].conv1.weight == 0.5), name
    assert not torch.all(create_model("ikd_student18", num_joints=3).layer1[0].conv1.weight == 0.5)
    with pytest.raises(MissingFileError, match="nope.pth"):
        create_model("ikd_student18", imagenet_weights=str(tmp_path / "nope.pth"))
    with pytest.raises(ValueError, match="ResNet-34 trunk"):    # an R18 file for an R34 trunk
        create_model("simplebaseline_r34", imagenet_weights=str(path))


def test_ikd_student18_size_against_the_paper():
    # IKD Table II, Student-18 at 256x192: 11.3M params, 2.8 GFLOPs in the official summary tool's
    # unit (its TeachNet rows are that tool's SimpleBaseline figures); why the head is 3 x 128: the
    # module docstring. Counted at 128x96: every map of this network is then exactly half as wide
    # and high as at 256x192 (both sizes are multiples of 32), so every (de)conv has 1/4 the positions.
    model = create_model("ikd_student18", num_joints=17)
    assert [m.out_channels for m in model.deconv_layers if isinstance(m, torch.nn.ConvTranspose2d)] == [128] * 3
    assert model.output_stride == 4      # same heatmap size as the ResNet-50 teacher (logit distillation)
    assert sum(p.numel() for p in model.parameters()) == 12_752_337          # paper 11.3M
    assert 4 * count_gmacs(model, (96, 128)) == pytest.approx(2.085224, abs=1e-6)
    assert 4 * count_official_summary_gflops(model, (96, 128)) == pytest.approx(2.7858, abs=1e-4)   # paper 2.8
    trunk = sum(p.numel() for n, p in model.named_parameters() if n.startswith(model.backbone_prefixes()))
    assert trunk == 11_176_512


def test_no_resnet18_head_meets_both_student18_figures():
    # 11.3M leaves <= 0.17M for the head; the 3 x 16 head that fits it reaches only 1.69 GFLOPs
    with torch.device("meta"):
        narrow = pose_resnet(18, 17, deconv_channels=16)
    assert sum(p.numel() for p in narrow.parameters()) == 11_316_161
    assert count_official_summary_gflops(narrow, (192, 256)) == pytest.approx(1.693, abs=1e-3)


def test_ikd_student18_tiny_forward():
    model = create_model("ikd_student18", num_joints=5).eval()
    out, feats = model(torch.randn(1, 3, 64, 32), return_features=True)   # sides multiples of 32
    assert out.shape == (1, 5, 16, 8) and feats["head_in"].shape == (1, 128, 16, 8)
    assert feats["backbone"].shape == (1, 512, 2, 1) and torch.isfinite(out).all()
