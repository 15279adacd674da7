"""Checkpoint loading (named mismatches, wrapper prefixes), WeightRecord, MMPose -> official conversion."""
import json

import pytest
import torch

from posedistill.commands.convert import main as convert_main
from posedistill.models.convert import convert_mmpose_checkpoint
from posedistill.models.weights import CheckpointMismatchError, WeightRecord, load_weights


class _Tiny(torch.nn.Module):
    """The official SimpleBaseline key layout in miniature (conv1, bn1, layer1, deconv_layers, final_layer)."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 4, 3, 2, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(4)
        self.layer1 = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, 2, 1, bias=False), torch.nn.BatchNorm2d(8))
        self.deconv_layers = torch.nn.Sequential(torch.nn.ConvTranspose2d(8, 8, 4, 2, 1, bias=False),
                                                 torch.nn.BatchNorm2d(8), torch.nn.ReLU())
        self.final_layer = torch.nn.Conv2d(8, 3, 1)

    def forward(self, x):
        return self.final_layer(self.deconv_layers(self.layer1(self.bn1(self.conv1(x)).relu())))


def _small():
    return _Tiny()


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    return _small().eval()


@pytest.mark.parametrize("wrap", ["raw", "state_dict", "model", "module.", "module.backbone."])
def test_load_accepts_wrappers_and_prefixes(tmp_path, reference, wrap):
    sd = reference.state_dict()
    if wrap == "state_dict":
        obj = {"state_dict": sd, "meta": {"epoch": 3}}
    elif wrap == "model":
        obj = {"model": sd, "epoch": 3}
    elif wrap == "raw":
        obj = sd
    else:
        obj = {wrap + k: v for k, v in sd.items()}
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    model = _small().eval()
    load_weights(model, path)
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(model(x), reference(x))


def test_mismatch_names_keys_and_file(tmp_path, reference):
    sd = dict(reference.state_dict())
    del sd["final_layer.bias"]
    sd["head.extra.weight"] = torch.zeros(2)
    sd["final_layer.weight"] = torch.zeros(5, 8, 1, 1)
    path = tmp_path / "broken.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointMismatchError) as info:
        load_weights(_small(), path)
    msg, details = str(info.value), info.value.details
    # one line that counts each kind and names the first; every key in `details` (printed by --debug)
    assert "\n" not in msg and "broken.pth" in msg
    assert "1 missing keys (first: final_layer.bias)" in msg and "1 unexpected keys (first: head.extra.weight)" in msg
    assert "final_layer.weight: checkpoint (5, 8, 1, 1) vs model (3, 8, 1, 1)" in msg
    assert "missing keys (1): final_layer.bias" in details and "unexpected keys (1): head.extra.weight" in details
    # strict=False tolerates missing / unexpected keys but never a wrong shape
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):
        load_weights(_small(), path, strict=False)
    del sd["final_layer.weight"]
    torch.save(sd, path)
    left = load_weights(_small(), path, strict=False)
    assert left["missing"] == ["final_layer.bias", "final_layer.weight"]
    assert left["unexpected"] == ["head.extra.weight"]


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "x.pth"
    torch.save({"epoch": 1, "lr": 0.1}, path)
    with pytest.raises(CheckpointMismatchError, match=r"x\.pth: no state dict found.*epoch"):
        load_weights(_small(), path)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_weights(_small(), tmp_path / "nope.pth")


def test_weight_record_yaml_and_json(tmp_path, reference):
    torch.save(reference.state_dict(), tmp_path / "w.pth")
    (tmp_path / "w.yaml").write_text(
        "file: w.pth\nmodel: tiny\ninput_size: [192, 256]\nnum_joints: 3\n"
        "metrics: {coco_val_ap: 0.5}\nsource: test\n")
    rec = WeightRecord.load(tmp_path / "w.yaml")
    assert rec.input_size == (192, 256) and rec.num_joints == 3 and rec.metrics == {"coco_val_ap": 0.5}
    assert rec.file == str(tmp_path / "w.pth")
    (tmp_path / "w.json").write_text(json.dumps(rec.to_dict()))
    assert WeightRecord.load(tmp_path / "w.json") == rec
    (tmp_path / "bad.yaml").write_text("file: w.pth\nmodel: m\ninput_size: [1, 2]\nbatch: 3\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: unknown field\(s\) batch; valid fields: file, model"):
        WeightRecord.load(tmp_path / "bad.yaml")
    (tmp_path / "short.yaml").write_text("file: w.pth\n")
    with pytest.raises(ValueError, match="missing required field"):
        WeightRecord.load(tmp_path / "short.yaml")


def _mmpose_layout(sd, head_prefix):
    out = {}
    for k, v in sd.items():
        if k.startswith(("deconv_layers.", "final_layer.")):
            out[head_prefix + k] = v
        else:
            out["backbone." + k] = v
    return out


@pytest.mark.parametrize("head_prefix", ["keypoint_head.", "head."])  # MMPose 0.x / 1.x
def test_convert_mmpose_simplebaseline_loads_strict(tmp_path, reference, head_prefix):
    mm = {"meta": {"mmpose_version": "x"}, "state_dict": _mmpose_layout(reference.state_dict(), head_prefix)}
    assert "backbone.layer1.0.weight" in mm["state_dict"]
    assert head_prefix + "deconv_layers.0.weight" in mm["state_dict"]
    converted = convert_mmpose_checkpoint(mm, "simplebaseline")
    model = _small().eval()
    model.load_state_dict(converted, strict=True)
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(model(x), reference(x))

    src, dst = tmp_path / "mm.pth", tmp_path / "out" / "official.pth"
    torch.save(mm, src)
    assert convert_main([str(src), str(dst), "--arch", "simplebaseline"]) == 0
    model2 = _small().eval()
    load_weights(model2, dst, strict=True)
    assert torch.equal(model2(x), reference(x))
    assert [p.name for p in dst.parent.iterdir()] == ["official.pth"]  # no temporary file left


def test_convert_hrnet_style_and_errors():
    w = torch.zeros(1)
    hr = {"backbone.conv1.weight": w, "backbone.stage2.0.fuse_layers.0.1.0.weight": w,
          "backbone.transition1.0.0.weight": w, "keypoint_head.final_layer.weight": w,
          "keypoint_head.final_layer.bias": w}
    out = convert_mmpose_checkpoint(hr, "hrnet")
    assert set(out) == {"conv1.weight", "stage2.0.fuse_layers.0.1.0.weight", "transition1.0.0.weight",
                        "final_layer.weight", "final_layer.bias"}
    with pytest.raises(ValueError, match="no head deconv_layers"):
        convert_mmpose_checkpoint(hr, "simplebaseline")
    with pytest.raises(ValueError, match=r"neck\.conv\.weight"):
        convert_mmpose_checkpoint({**hr, "neck.conv.weight": w}, "hrnet")
    with pytest.raises(ValueError, match="unknown arch"):
        convert_mmpose_checkpoint(hr, "vitpose")
