"""FR-SBN (seed 003): full-resolution output, GC blocks in place, SA-MFCD, parameter counts, gradients."""
import pytest
import torch

blocks = pytest.importorskip("posedistill.models.blocks")

from posedistill.models import create_model  # noqa: E402
from posedistill.models.fr_sbn import FRSBN, fr_sbn  # noqa: E402

# Parameters outside the GC blocks at 17 joints (ResNet + 5 decoders + SA-MFCD + fusion convs + final).
NON_GC_PARAMS = {34: 29_906_894, 50: 41_518_286, 101: 60_510_414, 152: 76_154_062}
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
    with pytest.raises(ValueError, match="depth 18"):
        fr_sbn(18)
    with torch.device("meta"):
        assert isinstance(create_model("fr_sbn_r34"), FRSBN)
