"""ONNX export (`inference.export`), the two inference backends (`inference.backends`) and
`posedistill export` (`commands.export`).

Every registered model is exported at 64x64 input (a multiple of 32, which the stride-32 ResNet
encoders need) and checked for: a dynamic batch axis, the named outputs, the metadata round trip,
and ONNX Runtime parity with eager PyTorch at batch 1 and 4. New models are covered automatically.
About 2.5 minutes on 2 CPU cores, most of it the eight models marked slow (30M-77M parameters).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

from posedistill.cli import main as cli_main
from posedistill.commands.export import main as main_export
from posedistill.engine import build
from posedistill.engine.checkpoint import read_checkpoint, save_checkpoint
from posedistill.engine.config import load_config
from posedistill.inference.backends import METADATA_KEY, OnnxBackend, TorchBackend, output_names
from posedistill.inference.export import check_parity, export_onnx
from posedistill.inference.pipeline import open_model
from posedistill.models import create_model_at, list_models

SIZE = (64, 64)   # (width, height)
PARITY = 1e-4     # max |ORT - eager| / eager output range
# Models whose export + parity take more than ~8 s on 2 CPU cores (30M-77M parameters, or ELPN-V2's
# 1,700 graph nodes: the TorchScript exporter's passes cost per node); still run.
SLOW = {"elpn_v2", "fr_sbn_r101", "fr_sbn_r152", "hrnet_w32", "hrnet_w48", "simcc_hrnet_w32", "simcc_hrnet_w48",
        "simplebaseline_r101", "simplebaseline_r152"}


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


# seed 001's Table 4-5 rows are plain HRNets of other widths / unit counts: the same code path as
# hrnet_w32, so one small row stands for them (w64 alone would write a ~450 MB ONNX file)
SAME_PATH_AS_EXPORTED = {n for n in list_models() if n.startswith("elpn_ablation_") and n != "elpn_ablation_w8"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in list_models() if n not in SAME_PATH_AS_EXPORTED])
def test_every_model_exports_with_parity(name, tmp_path):
    model = create_model_at(name, {"num_joints": 17}, input_size=SIZE)
    model.train()                                  # export must switch to eval and switch back
    card = {"model": {"name": name}, "keypoints": ["nose", "eye"], "score": 0.5}
    path = export_onnx(model, tmp_path / f"{name}.onnx", SIZE, metadata=card)
    assert model.training
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.onnx"]   # no temp file left

    backend = OnnxBackend(path)
    inputs, outputs = backend.session.get_inputs(), backend.session.get_outputs()
    assert [i.name for i in inputs] == ["images"]
    assert isinstance(inputs[0].shape[0], str) and inputs[0].shape[1:] == [3, SIZE[1], SIZE[0]]
    assert tuple(o.name for o in outputs) == output_names(model.head_type)
    assert all(isinstance(o.shape[0], str) for o in outputs)      # batch axis dynamic on every output
    assert backend.metadata == {**card, "head_type": model.head_type, "input_size": list(SIZE),
                                "output_stride": model.output_stride}
    assert backend.head_type == model.head_type

    assert check_parity(model, path, SIZE, batch_sizes=(1, 4)) <= PARITY


def test_output_names():
    assert output_names("heatmap") == ("heatmaps",)
    assert output_names("simcc") == ("simcc_x", "simcc_y")
    assert output_names("paf") == ("confidence_maps", "pafs")
    with pytest.raises(ValueError, match=r"'bbox'.*heatmap, simcc, paf"):
        output_names("bbox")


@pytest.fixture(scope="module")
def simcc_export(tmp_path_factory):
    """A two-output model at a non-square input (64 wide, 96 tall), so x and y cannot be swapped unseen."""
    torch.manual_seed(0)
    model = create_model_at("simcc_r18", {"num_joints": 5}, input_size=(64, 96))
    path = export_onnx(model, tmp_path_factory.mktemp("simcc") / "simcc_r18.onnx", (64, 96))
    return model, path


def test_torch_and_onnx_backends_agree(simcc_export):
    model, path = simcc_export
    eager, ort_backend = TorchBackend(model), OnnxBackend(path, threads=1)
    assert eager.head_type == ort_backend.head_type == "simcc"
    assert eager.output_names == ort_backend.output_names == ("simcc_x", "simcc_y")
    images = np.random.default_rng(1).standard_normal((3, 3, 96, 64), dtype=np.float32)
    want, got = eager(images), ort_backend(images)
    assert [a.shape for a in want] == [b.shape for b in got] == [(3, 5, 128), (3, 5, 192)]
    for a, b in zip(want, got):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-4 * float(a.max() - a.min()))
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        eager(images[0])


def test_opset_below_17_is_refused(tmp_path):
    model = create_model_at("elpn_v1", {"num_joints": 17})
    with pytest.raises(ValueError, match="opset 16.*>= 17"):
        export_onnx(model, tmp_path / "m.onnx", SIZE, opset=16)
    assert not (tmp_path / "m.onnx").exists()


def test_metadata_that_contradicts_the_model_is_refused(tmp_path):
    model = create_model_at("elpn_v1", {"num_joints": 17})
    with pytest.raises(ValueError, match="head_type='simcc' contradicts"):
        export_onnx(model, tmp_path / "m.onnx", SIZE, metadata={"head_type": "simcc"})
    with pytest.raises(ValueError, match="input_size"):
        export_onnx(model, tmp_path / "m.onnx", SIZE, metadata={"input_size": [192, 256]})


def test_failed_export_keeps_the_previous_file(tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"previous export")
    model = create_model_at("elpn_v1", {"num_joints": 17})
    with pytest.raises(TypeError):                           # not JSON-serialisable: fails before tracing
        export_onnx(model, target, SIZE, metadata={"when": object()})
    assert target.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_onnx_backend_on_a_missing_or_foreign_file_says_which(tmp_path):
    missing = tmp_path / "nope.onnx"
    with pytest.raises(FileNotFoundError) as err:
        OnnxBackend(missing)
    assert str(missing) in str(err.value) and "\n" not in str(err.value)
    garbage = tmp_path / "checkpoint.pth"
    garbage.write_bytes(b"\x80\x02not an onnx model at all")
    with pytest.raises(ValueError) as err:
        OnnxBackend(garbage)
    assert str(garbage) in str(err.value) and "ONNX" in str(err.value) and "\n" not in str(err.value)


class _TinyHeatmap(nn.Module):
    head_type = "heatmap"
    output_stride = 1

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")   # the TorchScript exporter, as export_onnx uses it
def test_file_without_metadata_gets_its_head_type_from_the_output_names(tmp_path):
    path = tmp_path / "plain.onnx"
    torch.onnx.export(_TinyHeatmap().eval(), (torch.zeros(1, 3, 8, 8),), str(path), dynamo=False,
                      input_names=["images"], output_names=["heatmaps"], opset_version=17)
    backend = OnnxBackend(path)
    assert backend.metadata == {} and backend.head_type == "heatmap"
    assert backend(np.zeros((1, 3, 8, 8), np.float32))[0].shape == (1, 2, 8, 8)


def test_metadata_is_stored_under_the_posedistill_key(tmp_path):
    path = export_onnx(_TinyHeatmap(), tmp_path / "tiny.onnx", (8, 8), metadata={"a": [1, 2]})
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props[METADATA_KEY]) == {"a": [1, 2], "head_type": "heatmap", "input_size": [8, 8],
                                               "output_stride": 1}


# --- `posedistill export` ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained ELPN-V1 checkpoint with its model card, as training writes it (96 tall, 64 wide)."""
    torch.manual_seed(0)
    cfg = load_config(None, ["model.name=elpn_v1", "data.input_size=[64, 96]"])
    meta = build.keypoint_meta(cfg.data)
    model = build.model_from_config(cfg, meta)
    path = tmp_path_factory.mktemp("ckpt") / "best.pth"
    save_checkpoint({"model": model.state_dict(), "card": build.model_card(cfg, meta, model)}, path)
    return path


def test_export_command_writes_a_file_predict_can_open(checkpoint, tmp_path, capsys):
    out = tmp_path / "student.onnx"
    assert main_export([str(checkpoint), "--format", "onnx", "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and str(out) in line and "MB" in line and "parity" in line, line
    loaded, runner = open_model(str(out))                  # what `predict model.onnx` does
    assert isinstance(runner, OnnxBackend) and loaded.input_size == (64, 96)
    assert runner.metadata["model"]["name"] == "elpn_v1" and runner.head_type == "heatmap"
    assert runner(np.zeros((2, 3, 96, 64), np.float32))[0].shape == (2, 17, 24, 16)


def test_export_command_errors_are_one_line(checkpoint, tmp_path, capsys):
    bare = tmp_path / "bare.pth"
    save_checkpoint({"model": read_checkpoint(checkpoint)["model"]}, bare)    # no model card, no --config
    assert cli_main(["export", str(bare), "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--config" in err
    assert cli_main(["export", str(checkpoint), "--opset", "13", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "opset 13" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
