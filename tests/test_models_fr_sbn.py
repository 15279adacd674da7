"""FR-SBN (seed 003): full-resolution output, GC blocks in place, SA-MFCD, parameter counts, gradients,
and the Table 1 ablation variants (GC blocks / SA-MFCD / vanilla skip switched)."""
import pytest
import torch

blocks = pytest.importorskip("posedistill.models.blocks")

from posedistill.commands.convert import main as convert_main  # noqa: E402
from posedistill.errors import CheckpointError, MissingFileError  # noqa: E402
from posedistill.models import create_model  # noqa: E402
from posedistill.models.fr_sbn import FRSBN, SAMFCD, fr_sbn  # noqa: E402

# Parameters outside the GC blocks at 17 joints (ResNet + 5 decoders + SA-MFCD + fusion convs + final).
NON_GC_PARAMS = {18: 19_798_734, 34: 29_906_894, 50: 41_518_286, 101: 60_510_414, 152: 76_154_062}
GC_NAMES = ("gc_layer1", "gc_layer2", "gc_layer3", "gc_layer4", "gc_decoder1", "gc_decoder2", "gc_decoder3")


@pytest.mark.parametrize("depth", sorted(NON_GC_PARAMS))
def test_parameter_count(depth):
    with torch.device("meta"):
        model = create_model(f"fr_sbn_r{depth}", num_joints=17)
    gc = [m for m in model.modules() if isinstance(m, blocks.GlobalContextBlock)]
    assert len(gc) == 7
    n_gc = sum(p.numel() for m in gc for p in m.parameters())
    assert sum(p.numel() for p in model.parameters()) - n_gc == NON_GC_PARAMS[depth]


def test_layout_widths():
    with torch.device("meta"):
        model = fr_sbn(34)
    widths = [dec.deconv[0].out_channels for dec in (model.decoder1, model.decoder2, model.decoder3,
                                                      model.decoder4, model.decoder5)]
    assert widths == [256, 256, 256, 128, 32]
    assert [model.decoder1.fuse, model.decoder5.fuse] == [None, None]
    assert all(isinstance(getattr(model, n), blocks.GlobalContextBlock) for n in GC_NAMES)
    # SA-MFCD fuses stage 1-3 features (64 + 128 + 256 channels for ResNet-34) and their 3 attention maps
    assert model.mfcd.feature_fuse[0].in_channels == 64 + 128 + 256
    assert model.mfcd.attention_fuse[0].in_channels == 3
    assert "layer4.2.bn2.weight" in model.state_dict()  # ResNet trunk keeps the official names


def test_full_resolution_output_and_features():
    model = fr_sbn(34, num_joints=5).eval()
    out, feats = model(torch.randn(1, 3, 64, 96), return_features=True)
    assert model.output_stride == 1 and model.head_type == "heatmap"
    assert out.shape == (1, 5, 64, 96)
    assert feats["backbone"].shape == (1, 512, 2, 3)
    assert feats["head_in"].shape == (1, 32, 64, 96)
    assert feats["mfcd"].shape == (1, 256, 16, 24) and feats["mfcd_attention"].shape == (1, 1, 16, 24)


def test_every_parameter_gets_a_gradient():
    model = fr_sbn(34, num_joints=3, mfcd_channels=16)
    model(torch.randn(2, 3, 32, 32)).square().mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_bad_depth():
    with pytest.raises(ValueError, match="depth 26"):
        fr_sbn(26)
    with torch.device("meta"):
        assert isinstance(create_model("fr_sbn_r34"), FRSBN)


# Table 1 rows (ResNet-34) at 17 joints: name -> (GC blocks, parameters outside them). Obtained once by
# building each on the meta device and summing p.numel(); by hand: ResNet-34 trunk 21,284,672 + five
# decoders and final layer 4,786,545 = 26,071,217; the skip fusion convs (512, 384, 320 -> 256, 3x3,
# + BN) add 2,803,200. The GC variants add the same seven blocks as the full model (71,883 with GCNet's
# layout at ratio 1/16).
ABLATION_PARAMS = {
    "fr_sbn_r34_plain": (0, 26_071_217),
    "fr_sbn_r34_gcb": (7, 26_071_217),
    "fr_sbn_r34_gcb_skip": (7, 28_874_417),
    "fr_sbn_r34": (7, NON_GC_PARAMS[34]),
    # ResNet-18 rows: the same head on the ResNet-18 trunk (11,176,512 = torchvision's 11,689,512 less
    # its 513,000-parameter fc), 10,108,160 below ResNet-34's
    "fr_sbn_r18_plain": (0, 15_963_057),
    "fr_sbn_r18_gcb": (7, 15_963_057),
    "fr_sbn_r18_gcb_skip": (7, 18_766_257),
    "fr_sbn_r18": (7, NON_GC_PARAMS[18]),
}


def _structure(model):
    return repr(model), [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


@pytest.mark.parametrize("name", sorted(ABLATION_PARAMS))
def test_ablation_parameter_count(name):
    with torch.device("meta"):
        model = create_model(name, num_joints=17)
    gc = [m for m in model.modules() if isinstance(m, blocks.GlobalContextBlock)]
    n_gc = sum(p.numel() for m in gc for p in m.parameters())
    assert (len(gc), sum(p.numel() for p in model.parameters()) - n_gc) == ABLATION_PARAMS[name]


def test_both_switches_on_is_the_default():
    with torch.device("meta"):
        default = create_model("fr_sbn_r34")
        explicit = FRSBN(34, gc_blocks=True, fusion="sa_mfcd")
    assert _structure(explicit) == _structure(default)
    assert (default.gc_blocks, default.fusion) == (True, "sa_mfcd")


def test_gc_off_has_no_gc_module():
    with torch.device("meta"):
        model = create_model("fr_sbn_r34_plain")
    assert not any(isinstance(m, blocks.GlobalContextBlock) for m in model.modules())
    assert all(getattr(model, n) is None for n in GC_NAMES)
    assert not any("gc_" in k for k in model.state_dict())


@pytest.mark.parametrize("name", ["fr_sbn_r34_plain", "fr_sbn_r34_gcb"])
def test_without_fusion_the_decoders_are_plain_deconvs(name):
    with torch.device("meta"):
        model = create_model(name)
    assert model.mfcd is None and not any(isinstance(m, SAMFCD) for m in model.modules())
    decoders = [getattr(model, f"decoder{i}") for i in range(1, 6)]
    assert [dec.fuse for dec in decoders] == [None] * 5
    # each decoder is exactly SimpleBaseline's deconv (4x4, stride 2, no bias) + BN + ReLU
    assert [[type(m).__name__ for m in dec.deconv] for dec in decoders] == \
        [["ConvTranspose2d", "BatchNorm2d", "ReLU"]] * 5


def test_vanilla_skip_fuses_same_resolution_stages():
    with torch.device("meta"):
        model = create_model("fr_sbn_r34_gcb_skip")
    assert model.mfcd is None
    # decoders 1-3 (1/16, 1/8, 1/4) take ResNet-34 stages 3, 2, 1 (256, 128, 64 channels)
    assert [model.decoder1.fuse[0].in_channels, model.decoder2.fuse[0].in_channels,
            model.decoder3.fuse[0].in_channels] == [256 + 256, 256 + 128, 256 + 64]
    assert [model.decoder4.fuse, model.decoder5.fuse] == [None, None]


@pytest.mark.parametrize("gc_blocks,fusion", [(False, "none"), (True, "none"), (False, "skip"), (True, "skip"),
                                              (True, "sa_mfcd")])
def test_every_variant_gives_full_resolution_heatmaps(gc_blocks, fusion):
    model = fr_sbn(34, num_joints=3, mfcd_channels=16, gc_blocks=gc_blocks, fusion=fusion)
    # 64 x 32: multiples of 32 land every decoder exactly on 1/16 ... 1/1 (see the module docstring)
    out, feats = model(torch.randn(1, 3, 64, 32), return_features=True)
    assert out.shape == (1, 3, 64, 32) and feats["head_in"].shape == (1, 32, 64, 32)
    assert ("mfcd" in feats) == (fusion == "sa_mfcd")
    out.square().mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_bad_switches():
    with pytest.raises(ValueError, match="attention maps"):
        fr_sbn(34, gc_blocks=False, fusion="sa_mfcd")
    with pytest.raises(ValueError, match="fusion 'unet' unknown"):
        fr_sbn(34, fusion="unet")


def test_a_simplebaseline_trunk_initialises_every_table1_row(tmp_path):
    """`posedistill convert CKPT OUT --trunk` keeps a trained SimpleBaseline's ResNet trunk; every FR-SBN
    row loads it through `imagenet_weights` (the synthetic Table 1's shared encoder), its own modules
    keep their seeded initialisation; a file without a trunk is refused by name."""
    torch.manual_seed(0)
    sbn = create_model("simplebaseline_r18", num_joints=3)
    ckpt, trunk_file = tmp_path / "last.pth", tmp_path / "trunk.pth"
    torch.save({"model": sbn.state_dict(), "epoch": 12}, ckpt)          # a posedistill training checkpoint
    assert convert_main([str(ckpt), str(trunk_file), "--trunk"]) == 0
    trunk = torch.load(trunk_file, weights_only=True)
    assert set(trunk) == {k for k in sbn.state_dict() if k.startswith(sbn.backbone_prefixes())}
    for name in ("fr_sbn_r18_plain", "fr_sbn_r18_gcb", "fr_sbn_r18_gcb_skip", "fr_sbn_r18"):
        torch.manual_seed(1)
        fresh = create_model(name, num_joints=3)
        torch.manual_seed(1)
        model = create_model(name, num_joints=3, imagenet_weights=str(trunk_file))
        for key, value in model.state_dict().items():
            expected = trunk[key] if key in trunk else fresh.state_dict()[key]
            assert torch.equal(value, expected), (name, key)
    torch.save({"model": {"final_layer.weight": torch.zeros(3, 32, 1, 1)}}, ckpt)
    with pytest.raises(CheckpointError, match=r"last\.pth: no ResNet trunk"):
        convert_main([str(ckpt), str(trunk_file), "--trunk"])
    with pytest.raises(MissingFileError, match=r"nope\.pth"):    # the recipe's trunk file not made yet
        create_model("fr_sbn_r18_plain", imagenet_weights=str(tmp_path / "nope.pth"))
