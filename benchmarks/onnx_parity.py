"""ONNX export parity of every registered model: max |ONNX Runtime - PyTorch| over the output's range at
batch 1 and 4 (the figure the README quotes; `tests/test_inference_export.py` asserts <= 1e-4).

    .venv/bin/python benchmarks/onnx_parity.py [--models elpn_v1 ...] [--input 64x64]

Random weights (seed 0), 17 joints, the TorchScript exporter at opset 17 (`inference/export.py`).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from posedistill.inference.export import check_parity, export_onnx  # noqa: E402
from posedistill.models import create_model_at, list_models  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list_models())
    p.add_argument("--input", default="64x64", help="WIDTHxHEIGHT (default 64x64)")
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.input.lower().split("x"))
    worst = ("", 0.0)
    print("| model | parity (max abs diff / output range, batch 1 and 4) |\n|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            torch.manual_seed(0)
            model = create_model_at(name, {"num_joints": 17}, input_size=(w, h)).eval()
            path = export_onnx(model, Path(tmp) / f"{name}.onnx", (w, h))
            parity = check_parity(model, path, (w, h), batch_sizes=(1, 4))
            path.unlink()
            worst = max(worst, (name, parity), key=lambda t: t[1])
            print(f"| {name} | {parity:.1e} |", flush=True)
    print(f"\nworst: {worst[0]} {worst[1]:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
