"""What a bottom-up recipe's targets can score at best: the validation split's own ground-truth maps
(confidence maps + PAFs, encoded by the recipe's `PafCodec` at its input size) grouped by the
codec and scored with the recipe's OKS AP. A model trained on that recipe cannot beat it: the
stride-8 grid, the limb width and the grouping constants lose people and joints before any
network does.

    .venv/bin/python benchmarks/paf_ceiling.py configs/seed004_synth_base.yaml [key=value ...]

Measured on the seed 004 synthetic val split (the `data synth` line for val in
configs/seed004_synth_base.yaml; for COCO's keypoints the same line without `--format crowdpose`
into runs/seed004/coco_val, then `data.dataset=coco data.val_ann=runs/seed004/coco_val/annotations/
person_keypoints_val.json data.val_images=runs/seed004/coco_val/images`):

    keypoints                  input    AP of the ground-truth maps
    CrowdPose 14 (the recipe)  128x128  0.668
    COCO 17 (+ neck)           128x128  0.586

At 128x128 the five COCO face points of a person share one or two cells of the 16x16 maps and
their limbs are shorter than a cell (no field), hence the recipe's CrowdPose keypoints.
"""
from __future__ import annotations

import argparse

import torch

from posedistill.engine import build
from posedistill.engine.config import Config, load_config
from posedistill.engine.evaluate import people_records, score_predictions
from posedistill.keypoints import KeypointMeta


def recipe_from_argv(description: str, argv: list[str] | None) -> tuple[argparse.Namespace, Config, KeypointMeta]:
    """(args, recipe, keypoint meta) from `CONFIG [key=value ...]`; benchmarks/heatmap_ceiling.py shares it."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    return args, cfg, build.keypoint_meta(cfg.data)


def main(argv: list[str] | None = None) -> int:
    args, cfg, meta = recipe_from_argv(__doc__.split("\n\n")[0], argv)
    codec = build.build_codec(cfg.codec, tuple(cfg.data.input_size), 8, "paf", meta)
    val_set = build.build_dataset(cfg.data, codec, meta, train=False)
    preds = []
    for batch in torch.utils.data.DataLoader(val_set, batch_size=16):
        for i in range(batch["image"].shape[0]):
            people, scores = codec.decode(batch["confidence_maps"][i], batch["pafs"][i])
            preds += people_records(batch, i, people, scores)
    metrics = score_predictions(preds, meta, cfg.data.format, cfg.data.val_ann, allow_empty=True)
    print(f"{args.config} {' '.join(args.overrides)}: ground-truth maps decode to AP {metrics['AP']:.3f} "
          f"(AR {metrics['AR']:.3f}) on {len(val_set)} images, {len(preds)} people found")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
