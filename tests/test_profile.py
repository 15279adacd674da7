"""MAC counting checked by hand (ConvTranspose2d included), the profile table and the CLI."""
import pytest
import torch
import torch.nn as nn

from posedistill.commands.profile import main, parse_hw
from posedistill.tools.profile import count_gmacs, profile_model


def test_conv_transpose_macs_by_hand():
    # Each of the 6x5 input pixels scatters an 8-channel 4x4 patch from its 3 channels:
    # 3 * 8 * 4 * 4 * 6 * 5 = 11,520 MACs (counting on the 12x10 output would give 4x that).
    model = nn.ConvTranspose2d(3, 8, 4, stride=2, padding=1, bias=False)
    assert model(torch.zeros(1, 3, 6, 5)).shape == (1, 8, 12, 10)
    assert count_gmacs(model, input_size=(5, 6)) * 1e9 == pytest.approx(3 * 8 * 4 * 4 * 6 * 5)


def test_conv_and_linear_macs_by_hand():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=1, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 6 * 5, 7))
    expected = 3 * 4 * 3 * 3 * 6 * 5 + 4 * 6 * 5 * 7   # conv + linear; BN / ReLU / bias not counted
    assert count_gmacs(model, input_size=(5, 6)) * 1e9 == pytest.approx(expected)


def test_profile_model_reports_params_macs_and_throughput():
    model = nn.Conv2d(3, 2, 1)
    r = profile_model(model, input_size=(8, 4), warmup=0, iters=2, batches=(1, 2))
    assert r["params"] == 3 * 2 + 2
    assert r["gmacs"] * 1e9 == pytest.approx(3 * 2 * 8 * 4)
    assert set(r["images_per_s"]) == {1, 2} and all(v > 0 for v in r["images_per_s"].values())
    assert model.training  # mode restored


def test_parse_hw():
    assert parse_hw("256x192") == (192, 256)
    with pytest.raises(ValueError, match="HEIGHTxWIDTH"):
        parse_hw("256")


def test_cli_prints_table(capsys):
    assert main(["simplebaseline_r18", "--input", "64x64", "--iters", "1", "--warmup", "0", "--batch", "1"]) == 0
    out = capsys.readouterr().out
    assert "| simplebaseline_r18 | 64x64 | 15.38 |" in out


def test_official_summary_convention_counts_conv_transpose_on_output():
    from posedistill.tools.profile import count_official_summary_gflops
    model = nn.ConvTranspose2d(3, 8, 4, stride=2, padding=1, bias=False)
    # prod(weight) x output pixels = 3*8*4*4 * 12*10: 4x the true MACs, in units of 2^30
    assert count_official_summary_gflops(model, input_size=(5, 6)) * 2 ** 30 == 3 * 8 * 4 * 4 * 12 * 10
