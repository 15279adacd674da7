"""Bottom-up (PAF) training data speed: `BottomUpDataset` + `PafCodec` at 368x368.

    .venv/bin/python benchmarks/bottomup_data.py [--images 64] [--samples 200] [--batches 12]

Data: `--images` synthetic 640x480 JPEGs (`posedistill data synth`, medium difficulty: 1-6 people
an image, 10% of them released as crowd regions so that ignore masks are built and warped too),
written to a temporary folder. Each sample is the paper's training sample (seed 004, section 4.2):
flip, rotation +-40, scale 0.5-1.1 around a random person, a 368x368 crop as one affine warp of
the image and of the ignore mask, then `PafCodec.encode_people`: 19 confidence maps, 38 PAF
channels and the loss mask at 46x46 (stride 8), ImageNet-normalised float32 image.

Three numbers, samples/s:
* in-process: `dataset[i]` in a loop, the process pinned to one core, OpenCV and torch on one
  thread; also the share of that time spent in the codec (encode_people timed alone on the same
  keypoints and masks);
* DataLoader(num_workers=1) and DataLoader(num_workers=2), batches of 8, shuffled, timed after the
  first batch (worker start-up); workers use one thread each, the main process only collates.

Measured (2 shared CPU cores, load average ~3 from other jobs during the runs; three runs of
`--images 64`, 56 of which have a person to train on, 115 people, 77 ignore regions):

    in-process, one core      93-94 samples/s  (10.7 ms a sample, of which PafCodec.encode_people 3.4-3.6 ms)
    DataLoader, 1 worker      65-70 samples/s  (the main process receives 2.1 MB of float32 a sample)
    DataLoader, 2 workers     48-75 samples/s  (no second free core on this shared machine)

Rough model step for scale (not run by this script; 2 threads, forward + backward + Adam on random
input, batch 8 at 368x368, `posedistill.models.bottomup`): cmu_pose_tiny ~14 s, small_paf_net
(the paper's small NN, 5.2 M parameters) ~40 s. Loading a batch of 8 takes ~0.1 s of one worker, so
on CPU the data is under 1% of a step. GPU steps were not measured here: one worker delivers
about 8 batches of 8 a second, so a GPU step shorter than ~0.12 s needs more workers (they scale
with free cores: each sample is independent and costs ~11 ms of one core).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import cv2
import numpy as np
import torch

from posedistill.codecs.paf import PafCodec, coco_paf_layout
from posedistill.data.bottomup import BottomUpDataset, build_ignore_mask, people_to_input
from posedistill.data.synthetic import generate_dataset
from posedistill.keypoints import COCO

INPUT = (368, 368)
_ALL_CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def _one_thread(_worker_id: int) -> None:
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def in_process(ds: BottomUpDataset, samples: int) -> tuple[float, float]:
    """(samples/s of ds[i], seconds of PafCodec.encode_people per sample on the same inputs)."""
    n = len(ds)
    t0 = time.perf_counter()
    for i in range(samples):
        ds[i % n]
    rate = samples / (time.perf_counter() - t0)
    rng = np.random.default_rng(0)
    inputs = []
    for i in range(min(samples, n)):
        rec = ds.images[i]
        affine, flipped = ds.train_affine(rec, 640, 480, rng)
        kps = people_to_input(rec.keypoints, affine, ds.input_size, ds.meta.flip_index if flipped else None)
        ignore = build_ignore_mask(rec, 480, 640)
        mask = None if ignore is None else cv2.warpAffine(ignore.astype(np.uint8), affine, ds.input_size,
                                                          flags=cv2.INTER_NEAREST) > 0
        inputs.append((kps, mask))
    t0 = time.perf_counter()
    for kps, mask in inputs:
        ds.codec.encode_people(kps, mask)
    return rate, (time.perf_counter() - t0) / len(inputs)


def through_loader(ds: BottomUpDataset, workers: int, batches: int, batch_size: int = 8) -> float:
    sampler = torch.utils.data.RandomSampler(ds, replacement=True, num_samples=(batches + 1) * batch_size,
                                             generator=torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                         worker_init_fn=_one_thread)
    it = iter(loader)
    next(it)                                  # worker start-up
    t0 = time.perf_counter()
    n = sum(len(b["image"]) for b in it)
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=64, help="synthetic 640x480 images to generate")
    p.add_argument("--samples", type=int, default=200, help="samples of the in-process loop")
    p.add_argument("--batches", type=int, default=12, help="timed DataLoader batches of 8 per worker count")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        res = generate_dataset(tmp, args.images, seed=0, size=(640, 480), crowd_rate=0.1)
        codec = PafCodec(coco_paf_layout(), input_size=INPUT)
        ds = BottomUpDataset(res.ann_file, res.image_dir, codec, COCO, input_size=INPUT, train=True, seed=0)
        people = sum(im.num_people for im in ds.images)
        ignored = sum(im.num_crowd + im.num_masked for im in ds.images)
        print(f"{len(ds)} training images (of {args.images}), {people} people trained on, {ignored} ignore "
              f"regions (crowds + people under the mask rule); input {INPUT[0]}x{INPUT[1]}, {codec!r}")
        if hasattr(os, "sched_setaffinity") and _ALL_CPUS:
            os.sched_setaffinity(0, {_ALL_CPUS[0]})
        cv2.setNumThreads(1)
        torch.set_num_threads(1)
        rate, encode_s = in_process(ds, args.samples)
        print(f"  in-process, one core:            {rate:6.1f} samples/s ({1000 / rate:.1f} ms a sample, "
              f"PafCodec.encode_people {1000 * encode_s:.1f} ms of it)")
        if hasattr(os, "sched_setaffinity") and _ALL_CPUS:
            os.sched_setaffinity(0, set(_ALL_CPUS))
        for workers in (1, 2):
            r = through_loader(ds, workers, args.batches)
            print(f"  DataLoader(num_workers={workers}, batch 8): {r:6.1f} samples/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
