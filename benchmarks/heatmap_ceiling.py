"""What a top-down recipe's heatmap targets can score at best: the validation split's own target heatmaps
(encoded by the recipe's codec at its model's output stride) fed to the evaluation path in place of a
network's output, decoded and scored with the recipe's OKS AP (no flip test). It separates what the
codec loses (grid, sigma, sub-pixel shift) from what a model fails to learn.

    .venv/bin/python benchmarks/heatmap_ceiling.py configs/bench_synth_fr_sbn.yaml [key=value ...]

Measured on the powered synthetic benchmark's validation split (1016 people, 96x64 input; data commands
in docs/results/bench_synth.md):

    rows                       stride, sigma   AP of the target heatmaps
    FR-SBN (the recipe)        1, 8            0.981
    SBN-18 (model.name=simplebaseline_r18 codec.sigma=2.0)
                               4, 2            0.946
"""
from __future__ import annotations

import torch

from paf_ceiling import recipe_from_argv   # the sibling script (benchmarks/ is on sys.path when run)
from posedistill.engine import build
from posedistill.engine.evaluate import evaluate
from posedistill.models import create_model


class TargetsAsOutput(torch.nn.Module):
    """Returns the loader's target heatmaps batch by batch, in loader order, as if predicted."""
    head_type = "heatmap"

    def __init__(self, heatmaps: list[torch.Tensor]):
        super().__init__()
        self.heatmaps, self.at = heatmaps, 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.heatmaps[self.at]
        self.at += 1
        return out


def main(argv: list[str] | None = None) -> int:
    args, cfg, meta = recipe_from_argv(__doc__.split("\n\n")[0], argv)
    with torch.device("meta"):
        stride = create_model(cfg.model.name).output_stride
    codec = build.build_codec(cfg.codec, tuple(cfg.data.input_size), stride, "heatmap", meta)
    loader = torch.utils.data.DataLoader(build.build_dataset(cfg.data, codec, meta, train=False), batch_size=32)
    oracle = TargetsAsOutput([batch["heatmaps"] for batch in loader])
    metrics = evaluate(oracle, loader, codec, meta, torch.device("cpu"), data_format=cfg.data.format,
                       ann_file=cfg.data.val_ann)
    print(f"{args.config} {' '.join(args.overrides)}: stride {stride}, sigma {cfg.codec.sigma}: target heatmaps "
          f"decode to AP {metrics['AP']:.3f} (AP50 {metrics['AP50']:.3f}, AP75 {metrics['AP75']:.3f}) "
          f"on {int(metrics['instances'])} people")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
