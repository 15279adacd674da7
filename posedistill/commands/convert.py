"""`posedistill convert IN OUT --arch ...`: an MMPose checkpoint in the official key layout (the
library is `posedistill.models.convert`). `posedistill convert IN OUT --trunk`: the ResNet trunk of a
SimpleBaseline / FR-SBN checkpoint as a torchvision-layout file, which `model.kwargs.imagenet_weights`
reads (a trunk shared as the initialisation of several models)."""
from __future__ import annotations

import argparse

from posedistill.models.convert import ARCHS, _unwrap, convert_mmpose_checkpoint, save_atomic
from posedistill.models.pose_resnet import resnet_trunk_state
from posedistill.models.weights import safe_load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="posedistill convert",
        description="Convert an MMPose top-down checkpoint (0.x or 1.x) to the official SimpleBaseline/HRNet "
                    "key layout (--arch; load the result with posedistill.models.weights.load_weights), or "
                    "write the ResNet trunk of a SimpleBaseline / FR-SBN checkpoint in torchvision's layout "
                    "(--trunk; load it with model.kwargs.imagenet_weights=OUT).")
    parser.add_argument("input", help="MMPose checkpoint, or (--trunk) a posedistill / official checkpoint (.pth)")
    parser.add_argument("output", help="where to write the converted state dict")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--arch", choices=ARCHS)
    what.add_argument("--trunk", action="store_true",
                      help="keep only conv1, bn1, layer1-4 (the ResNet trunk), in torchvision's key layout")
    args = parser.parse_args(argv)
    obj = safe_load(args.input)
    if args.trunk:
        trunk = resnet_trunk_state(obj, args.input)   # CheckpointError names the file
        save_atomic(trunk, args.output)
        print(f"wrote the ResNet trunk ({len(trunk)} tensors, torchvision layout) of {args.input} to {args.output}")
        return 0
    converted = convert_mmpose_checkpoint(_unwrap(obj, args.input), args.arch)   # InputError names the key
    save_atomic(converted, args.output)
    print(f"wrote {len(converted)} tensors ({args.arch}, official layout) to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
