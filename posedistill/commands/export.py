"""`posedistill export CKPT --format onnx [--out FILE] [--config C] [--opset 17]`.

Rebuilds the network from the checkpoint (its model card, or `--config` for files without one), writes
an ONNX file with the model card embedded (so `predict` / `serve` decode it without the recipe),
checks ONNX Runtime against PyTorch at batch 1 and 4, and prints one line: file, size, parity.
Exit 1 when the parity is above PARITY_TOLERANCE (the file is kept, for inspection), 2 on an error.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from posedistill.commands.common import load_recipe
from posedistill.engine import build
from posedistill.inference.export import MIN_OPSET, check_parity, export_onnx
from posedistill.inference.predictor import load_model

PROG = "posedistill export"
PARITY_TOLERANCE = 1e-4   # max |ORT - PyTorch| / output range; every registered model measures < 1e-5


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Export a checkpoint to ONNX, checked against PyTorch.")
    p.add_argument("checkpoint", help="a posedistill checkpoint (.pth) or released weights (with --config)")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="output format (only onnx)")
    p.add_argument("--out", metavar="FILE", help="output file (default: the checkpoint's name with .onnx)")
    p.add_argument("--config", metavar="C", help="recipe (only for checkpoints without a model card)")
    p.add_argument("--opset", type=int, default=MIN_OPSET, help=f"ONNX opset, >= {MIN_OPSET} (default {MIN_OPSET})")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cfg = load_recipe(args.config, []) if args.config else None
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".onnx")
    loaded = load_model(args.checkpoint, cfg)
    # The checkpoint's own card, unless --config rebuilt the model from another recipe (or it has none).
    card = loaded.card if loaded.card and cfg is None else build.model_card(loaded.cfg, loaded.meta, loaded.model)
    path = export_onnx(loaded.model, out, loaded.input_size, metadata=card, opset=args.opset)
    parity = check_parity(loaded.model, path, loaded.input_size)
    ok = parity <= PARITY_TOLERANCE
    print(f"{PROG}: {path} ({path.stat().st_size / 1e6:.1f} MB), parity {parity:.1e} of the output range "
          f"({'ok' if ok else f'ABOVE the tolerance {PARITY_TOLERANCE:g}'})")
    return 0 if ok else 1
