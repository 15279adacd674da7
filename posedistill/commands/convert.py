"""`posedistill convert IN OUT --arch ...`: an MMPose checkpoint in the official key layout (the
library is `posedistill.models.convert`)."""
from __future__ import annotations

import argparse

from posedistill.models.convert import ARCHS, _unwrap, convert_mmpose_checkpoint, save_atomic
from posedistill.models.weights import safe_load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="posedistill convert",
        description="Convert an MMPose top-down checkpoint (0.x or 1.x) to the official SimpleBaseline/HRNet "
                    "key layout; load the result with posedistill.models.weights.load_weights.")
    parser.add_argument("input", help="MMPose checkpoint (.pth)")
    parser.add_argument("output", help="where to write the converted state dict")
    parser.add_argument("--arch", required=True, choices=ARCHS)
    args = parser.parse_args(argv)
    obj = safe_load(args.input)
    converted = convert_mmpose_checkpoint(_unwrap(obj, args.input), args.arch)   # InputError names the key
    save_atomic(converted, args.output)
    print(f"wrote {len(converted)} tensors ({args.arch}, official layout) to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
