"""Bottom-up grouping speed: `codecs.grouping.group_people` (vectorised) vs the plain-loop reference
of the same algorithm (`reference_group_people` in tests/test_codecs_grouping.py), ms per image.

    .venv/bin/python benchmarks/grouping.py [--people 1 10 30] [--size 640x480] [--images 3] [--repeats 5]

Scenes: `random_scene` people (one per grid cell) rendered by `PafCodec` (COCO layout, stride 8:
80x60 maps at 640x480) plus uniform noise +-0.05 on every map; both implementations group the same
maps in the same run and must find the same people. One core (the process is pinned to it), one
thread. Ours: `--repeats` runs per image, mean; reference: one run per image.

Measured with `--images 5` (2 CPU cores, the process on one of them; the machine was shared with
other jobs, load average ~4 during the run, so absolute times are pessimistic), default grouping
constants, 640x480:

    people  peaks/map  found   ours ms   reference ms   reference / ours
         1        1.0      1       2.5            4.8               1.9x
        10        9.7     10       4.9          251.7              51.7x
        30       28.8     31      18.8         2159.9             114.7x

("found" > people: at 640x480 the 30 people are ~70 px tall, and a person whose short face or
limb fields cover no pixel at stride 8 can come out in two parts.)
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from posedistill.codecs import PafCodec, group_people  # noqa: E402
from posedistill.codecs.grouping import find_peaks  # noqa: E402

reference = importlib.import_module("test_codecs_grouping")   # reference_group_people, random_scene, noisy_maps


def _time(fn, repeats: int) -> tuple[float, object]:
    out, t0 = None, time.perf_counter()
    for _ in range(repeats):
        out = fn()
    return (time.perf_counter() - t0) / repeats * 1000.0, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--people", type=int, nargs="+", default=[1, 10, 30])
    p.add_argument("--size", default="640x480", help="input WIDTHxHEIGHT, multiples of 8 (default 640x480)")
    p.add_argument("--images", type=int, default=3, help="scenes per people count (default 3)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of ours per scene (default 5)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    torch.set_num_threads(1)
    codec = PafCodec(input_size=size)
    limbs = codec.layout.limbs
    rng = np.random.default_rng(args.seed)
    print(f"{size[0]}x{size[1]} input, {codec.heatmap_size[0]}x{codec.heatmap_size[1]} maps, "
          f"{args.images} images per row, one core")
    print(f"{'people':>6} {'peaks/map':>10} {'found':>6} {'ours ms':>9} {'reference ms':>14} {'reference / ours':>18}")
    for n in args.people:
        ours_ms, ref_ms, peaks, found = [], [], [], []
        for _ in range(args.images):
            cm, pafs = reference.noisy_maps(rng, codec, reference.random_scene(rng, n, size))
            ms, (kps, scores) = _time(lambda: group_people(cm, pafs, limbs), args.repeats)
            ours_ms.append(ms)
            ms, (rkps, rscores) = _time(lambda: reference.reference_group_people(cm, pafs, limbs), 1)
            ref_ms.append(ms)
            reference._assert_same_people((kps, scores), (rkps, rscores))      # same people, or AssertionError
            peaks.append(np.mean([len(pk) for pk in find_peaks(cm)]))
            found.append(len(kps))
        ours, ref = float(np.mean(ours_ms)), float(np.mean(ref_ms))
        print(f"{n:>6} {np.mean(peaks):>10.1f} {np.mean(found):>6.0f} {ours:>9.1f} {ref:>14.1f} {ref / ours:>17.1f}x",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
