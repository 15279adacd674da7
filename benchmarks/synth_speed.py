"""Synthetic data generation speed on one CPU core (target: >= 20 images/s at 640x480).

    .venv/bin/python benchmarks/synth_speed.py [--images 200] [--size 640x480]

For each difficulty it times `generate_dataset` end to end (render, JPEG write, masks, polygons,
detections, JSON) and rendering alone, and prints images/s and the ratio to the target.
The process is pinned to one core and OpenCV to one thread, so the number is a one-core figure.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import cv2

from posedistill.data.synthetic import generate_dataset, render_image, scene_config, texture_bank

TARGET = 20.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--size", default="640x480")
    args = p.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cv2.setNumThreads(1)
    print(f"{args.images} images of {w}x{h}, one core; target {TARGET:.0f} images/s")
    print(f"{'difficulty':<10} {'render img/s':>13} {'full img/s':>11} {'full / target':>14}")
    for difficulty in ("easy", "medium", "hard"):
        cfg, tiles = scene_config(difficulty), texture_bank(0)
        t0 = time.perf_counter()
        for i in range(args.images):
            render_image(0, i, (w, h), cfg, tiles)
        render_rate = args.images / (time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            generate_dataset(tmp, args.images, seed=0, size=(w, h), difficulty=difficulty)
            full_rate = args.images / (time.perf_counter() - t0)
        print(f"{difficulty:<10} {render_rate:>13.1f} {full_rate:>11.1f} {full_rate / TARGET:>13.2f}x")


if __name__ == "__main__":
    main()
