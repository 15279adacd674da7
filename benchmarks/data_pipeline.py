"""Training data pipeline speed: TopDownDataset vs. a plain HRNet-style loop (target: ratio >= 1.5).

    .venv/bin/python benchmarks/data_pipeline.py [--samples 600] [--images DIR --ann FILE]
                                                 [--order shuffled|file] [--cache-mb 64] [--loader-batches 20]

Both pipelines produce the same training sample: a 256x192 crop with the HRNet augmentations on
(half-body 0.3, scale 0.35, rotation 45 with p 0.6, flip 0.5), ImageNet-normalised RGB CHW float32,
and 17 Gaussian heatmaps (sigma 2, 64x48) with target weights. They run one after the other in the
same process over the same instances (one worker: a plain loop in the main process, pinned to one
core with OpenCV and torch on one thread), and the script prints samples/s and the ratio. A second
measurement runs both through a torch DataLoader with one worker process on a second core (batches
of 32, shuffled), as training does: that adds collation and the hand-over of every batch to the main
process, the same work for both pipelines, so its ratio is lower; and once more with the uint8
images the engine's loaders carry (`TopDownDataset(normalize=False)`, a quarter of the
image bytes), normalised per batch in the main process as `engine.loop.to_device` does.

Baseline ("HRNet-style"): what the official HRNet / SimpleBaseline `JointsDataset` does per
sample, written here from its description: cv2.imread of the full image, BGR->RGB of the full image,
whole-image flip, three-point cv2.getAffineTransform, cv2.warpAffine, per-joint affine in a Python
loop, torchvision-style ToTensor + Normalize, and one Gaussian per joint built in a Python loop
(a (6 sigma + 1)^2 float window pasted into the heatmap).

Ours: `TopDownDataset` with the project's `HeatmapCodec`. Decoding is most of its sample time, so:
* only the JPEG rows the crop reads are decoded (the `posedistill._jpeg_band` C extension over
  libjpeg-turbo, built at install): decoding stops after the crop's last row, and rows above it
  are entropy-decoded only. The samples are bit-identical to whole-image decoding
  (tests/test_jpeg_band.py);
* JPEG decoding with simplejpeg when installed (a project dependency; libjpeg-turbo bundled in the
  wheel): the same accurate DCT and upsampling as OpenCV's decoder (0 grey levels difference on
  all test images, at 1/1, 1/2, 1/4 and 1/8) and ~5-8% faster than cv2.imread; it decodes straight
  into 4-byte RGBX pixels, which OpenCV warps about twice as fast as 3-byte ones. Other files
  (and installs without simplejpeg) use OpenCV;
* reduced-resolution decoding (libjpeg DCT scaling 1/2, 1/4, 1/8) when the augmented crop shrinks
  the box by at least 4/3, 4 or 8: from 4/3 on the 1/2 decode is closer to an area-averaged crop
  of the full image than bilinear sampling of the full decode (see `TopDownDataset._DECODE_MIN_RATIO`);
* no full-image work besides decoding: one closed-form affine (flip included) warps the decoded
  image straight into the 256x192 crop; colour order and ImageNet normalisation are one fused
  OpenCV multiply-add per colour plane into the CHW float32 buffer;
* 17 heatmaps as separable Gaussians for all joints at once (two [17, 64|48] factor arrays and one
  broadcast product; the official 3-sigma window and target-weight rule, centred on the sub-pixel
  keypoint), vectorised keypoint mapping, no redundant tensor copies.

Instances are visited in a shuffled order by default (as a training sampler does); `--order file`
keeps the annotation order (people of one image together, as in evaluation). `--cache-mb` adds a
third run with the decoded-image LRU cache: it only helps when an image comes back while still
cached, so the hit rate is printed next to it; on the 4-image sample every image stays cached,
which is why that number is reported separately and not as the headline ratio.
"""
from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from posedistill.data.coco import load_coco_instances
from posedistill.data.topdown import TopDownDataset, _jpeg_band
from posedistill.data.transforms import normalize_images
from posedistill.keypoints import COCO

INPUT = (192, 256)
HEATMAP = (48, 64)
SIGMA = 2.0
TARGET = 1.5
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


# ------------------------------------------------------------------------------------------------
# HRNet-style baseline (the per-sample steps of the official JointsDataset, written for this script)


class Baseline:
    def __init__(self, instances, rng: np.random.Generator):
        self.instances = instances
        self.rng = rng
        self.pairs = COCO.flip_pairs
        self.upper = set(COCO.upper_body)

    def _three_point_affine(self, center, scale, rot, out_size):
        src_w, dst_w, dst_h = scale[0], out_size[0], out_size[1]
        r = np.pi * rot / 180.0
        sn, cs = np.sin(r), np.cos(r)
        src_dir = np.array([0.5 * src_w * sn, -0.5 * src_w * cs], np.float32)
        dst_dir = np.array([0.0, -0.5 * dst_w], np.float32)
        src = np.zeros((3, 2), np.float32)
        dst = np.zeros((3, 2), np.float32)
        src[0] = center
        src[1] = center + src_dir
        dst[0] = [dst_w * 0.5, dst_h * 0.5]
        dst[1] = dst[0] + dst_dir
        d = src[0] - src[1]
        src[2] = src[1] + np.array([-d[1], d[0]], np.float32)
        d = dst[0] - dst[1]
        dst[2] = dst[1] + np.array([-d[1], d[0]], np.float32)
        return cv2.getAffineTransform(src, dst)

    def _half_body(self, joints, vis):
        upper, lower = [], []
        for j in range(len(joints)):
            if vis[j] > 0:
                (upper if j in self.upper else lower).append(joints[j])
        chosen = upper if (self.rng.random() < 0.5 and len(upper) > 2) else (lower if len(lower) > 2 else upper)
        if len(chosen) < 2:
            return None, None
        chosen = np.array(chosen, np.float32)
        center = chosen.mean(axis=0)
        lo, hi = chosen.min(axis=0), chosen.max(axis=0)
        w, h = hi[0] - lo[0], hi[1] - lo[1]
        ar = INPUT[0] / INPUT[1]
        if w > ar * h:
            h = w / ar
        else:
            w = h * ar
        return center, np.array([w, h], np.float32) * 1.5

    def _gaussians(self, joints, vis):
        target = np.zeros((len(joints), HEATMAP[1], HEATMAP[0]), np.float32)
        weight = vis.astype(np.float32).copy()
        tmp = SIGMA * 3
        stride = (INPUT[0] / HEATMAP[0], INPUT[1] / HEATMAP[1])
        for j in range(len(joints)):
            mx, my = int(joints[j][0] / stride[0] + 0.5), int(joints[j][1] / stride[1] + 0.5)
            ul = (int(mx - tmp), int(my - tmp))
            br = (int(mx + tmp + 1), int(my + tmp + 1))
            if ul[0] >= HEATMAP[0] or ul[1] >= HEATMAP[1] or br[0] < 0 or br[1] < 0:
                weight[j] = 0
                continue
            size = int(2 * tmp + 1)
            x = np.arange(0, size, 1, np.float32)
            y = x[:, np.newaxis]
            g = np.exp(-((x - size // 2) ** 2 + (y - size // 2) ** 2) / (2 * SIGMA ** 2))
            gx = max(0, -ul[0]), min(br[0], HEATMAP[0]) - ul[0]
            gy = max(0, -ul[1]), min(br[1], HEATMAP[1]) - ul[1]
            ix = max(0, ul[0]), min(br[0], HEATMAP[0])
            iy = max(0, ul[1]), min(br[1], HEATMAP[1])
            if weight[j] > 0.5:
                target[j][iy[0]:iy[1], ix[0]:ix[1]] = g[gy[0]:gy[1], gx[0]:gx[1]]
        return target, weight

    def sample(self, index: int) -> dict:
        inst = self.instances[index]
        img = cv2.imread(inst.image_path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        joints = inst.keypoints[:, :2].copy()
        vis = (inst.keypoints[:, 2] > 0).astype(np.float32)
        x, y, w, h = inst.bbox
        ar = INPUT[0] / INPUT[1]
        center = np.array([x + w * 0.5, y + h * 0.5], np.float32)
        if w > ar * h:
            h = w / ar
        else:
            w = h * ar
        scale = np.array([w, h], np.float32) * 1.25
        if vis.sum() > 8 and self.rng.random() < 0.3:
            c, s = self._half_body(joints, vis)
            if c is not None:
                center, scale = c, s
        sf, rf = 0.35, 45.0
        scale = scale * np.clip(self.rng.standard_normal() * sf + 1, 1 - sf, 1 + sf)
        rot = np.clip(self.rng.standard_normal() * rf, -2 * rf, 2 * rf) if self.rng.random() <= 0.6 else 0.0
        if self.rng.random() <= 0.5:
            img = img[:, ::-1, :]
            width = img.shape[1]
            joints[:, 0] = width - joints[:, 0] - 1
            for a, b in self.pairs:
                joints[[a, b]] = joints[[b, a]]
                vis[[a, b]] = vis[[b, a]]
            center[0] = width - center[0] - 1
        trans = self._three_point_affine(center, scale, rot, INPUT)
        crop = cv2.warpAffine(img, trans, INPUT, flags=cv2.INTER_LINEAR)
        for j in range(len(joints)):
            if vis[j] > 0:
                joints[j] = np.dot(trans, np.array([joints[j][0], joints[j][1], 1.0]))[:2]
        image = torch.from_numpy(crop.transpose(2, 0, 1).copy()).float().div(255.0)
        image = image.sub(MEAN).div(STD)
        target, weight = self._gaussians(joints, vis)
        return {"image": image, "heatmaps": torch.from_numpy(target), "target_weight": torch.from_numpy(weight)}


# ------------------------------------------------------------------------------------------------


def run(get, order: list[int], samples: int) -> float:
    for i in order[:10]:                               # warm-up: imports, page cache, allocator
        get(i)
    t0 = time.perf_counter()
    for k in range(samples):
        get(order[k % len(order)])
    return samples / (time.perf_counter() - t0)


_ALL_CPUS: list[int] = []


class _AsDataset(torch.utils.data.Dataset):
    def __init__(self, get, n: int):
        self.get, self.n = get, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return self.get(i)


def _one_thread(_worker_id: int) -> None:
    # the worker gets a core of its own (the main process is pinned to the first one), if there is one
    if hasattr(os, "sched_setaffinity") and len(_ALL_CPUS) > 1:
        os.sched_setaffinity(0, {_ALL_CPUS[-1]})
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def run_loader(dataset, batches: int, batch_size: int = 32, finish=None) -> float:
    """samples/s through a one-worker DataLoader, after its first batch (worker start-up);
    `finish(batch)` runs on each batch in the main process (as the trainer's `to_device`)."""
    n = batches * batch_size
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=n + batch_size,
                                             generator=torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=1,
                                         worker_init_fn=_one_thread)
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    for batch in it:
        if finish is not None:
            finish(batch)
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=600, help="training samples per pipeline")
    p.add_argument("--images", default=None, help="image folder of a COCO-format set (default: tests/data/coco)")
    p.add_argument("--ann", default=None, help="its keypoint annotation file")
    p.add_argument("--order", choices=("shuffled", "file"), default="shuffled")
    p.add_argument("--cache-mb", type=float, default=64.0, help="LRU cache size for the extra cached run (0: skip)")
    p.add_argument("--repeats", type=int, default=3, help="alternate the pipelines this many times, keep the best")
    p.add_argument("--loader-batches", type=int, default=20,
                   help="batches of 32 per pipeline through a one-worker DataLoader (0: skip)")
    args = p.parse_args(argv)
    from posedistill.codecs.heatmap import HeatmapCodec

    root = Path(__file__).resolve().parents[1] / "tests" / "data" / "coco"
    images = args.images or str(root)
    ann = args.ann or str(root / "test_coco.json")
    if bool(args.images) != bool(args.ann):
        p.error("--images and --ann go together")
    if hasattr(os, "sched_setaffinity"):
        _ALL_CPUS[:] = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {_ALL_CPUS[0]})
    cv2.setNumThreads(1)
    torch.set_num_threads(1)

    instances = load_coco_instances(ann, images, meta=COCO)
    order = list(range(len(instances)))
    if args.order == "shuffled":
        order = [int(i) for i in np.random.default_rng(0).permutation(len(order))]
        order = (order * math.ceil(args.samples / len(order)))[:max(args.samples, len(order))]
        # re-shuffle each pass so that a pass never repeats the previous order
        rng = np.random.default_rng(1)
        order = [int(i) for i in rng.permutation(order)]
    codec = HeatmapCodec(input_size=INPUT, heatmap_size=HEATMAP, sigma=SIGMA)
    torch.manual_seed(0)
    ours = TopDownDataset(instances, meta=COCO, codec=codec, input_size=INPUT, train=True)
    base = Baseline(instances, np.random.default_rng(0))

    n_img = len({i.image_path for i in instances})
    print(f"{len(instances)} instances on {n_img} images ({ann}); {args.samples} training samples per run, "
          f"{args.order} order, one core; 256x192 crops, 64x48 heatmaps, sigma 2, train augmentation")
    best_b = best_o = 0.0
    for _ in range(args.repeats):
        best_b = max(best_b, run(base.sample, order, args.samples))
        best_o = max(best_o, run(ours.__getitem__, order, args.samples))
    print(f"  HRNet-style baseline : {best_b:8.1f} samples/s")
    print(f"  TopDownDataset       : {best_o:8.1f} samples/s")
    print(f"  ratio                : {best_o / best_b:8.2f}x   (target {TARGET}x: "
          f"{'met' if best_o / best_b >= TARGET else 'NOT met'})")
    decoder = "JPEG row bands (posedistill._jpeg_band)" if _jpeg_band is not None else "whole images (no _jpeg_band)"
    print(f"  (decoding {decoder})")
    if args.loader_batches > 0:
        raw = TopDownDataset(instances, meta=COCO, codec=codec, input_size=INPUT, train=True, normalize=False)
        best_lb = best_lo = best_lr = 0.0
        for _ in range(max(1, args.repeats - 1)):
            best_lb = max(best_lb, run_loader(_AsDataset(base.sample, len(instances)), args.loader_batches))
            best_lo = max(best_lo, run_loader(ours, args.loader_batches))
            best_lr = max(best_lr, run_loader(raw, args.loader_batches,
                                              finish=lambda b: normalize_images(b["image"])))
        print(f"  through DataLoader(num_workers=1, batch_size=32): baseline {best_lb:.1f} samples/s")
        print(f"    TopDownDataset                  {best_lo:8.1f} samples/s, ratio {best_lo / best_lb:.2f}x")
        print(f"    TopDownDataset(normalize=False) {best_lr:8.1f} samples/s, ratio {best_lr / best_lb:.2f}x "
              f"(uint8 images, normalised per batch in the main process, as training does)")
    if args.cache_mb > 0:
        cached = TopDownDataset(instances, meta=COCO, codec=codec, input_size=INPUT, train=True,
                                cache_mb=args.cache_mb)
        best_c = 0.0
        for _ in range(args.repeats):
            cached.cache_hits = 0
            best_c = max(best_c, run(cached.__getitem__, order, args.samples))
        hit = cached.cache_hits / (args.samples + 10)
        print(f"  + {args.cache_mb:g} MiB image cache: {best_c:8.1f} samples/s, ratio {best_c / best_b:.2f}x "
              f"(cache hit rate {hit:.0%}; only meaningful when images repeat within the cache, "
              f"e.g. evaluation in file order)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
