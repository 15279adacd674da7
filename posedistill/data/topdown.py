"""Top-down dataset: one person instance -> augmented input crop + codec targets.

The sample layout is the table of docs/architecture.md ("Dataset sample"). The geometry is in
`transforms.py`: one affine maps image pixels to crop pixels, augmentation (half-body, scale,
rotation, flip) included, and the same affine moves the keypoints, so image and targets cannot
drift apart.

Speed (see benchmarks/data_pipeline.py; decoding is most of a sample's time):
* Only the JPEG rows the crop reads are decoded (`transforms.source_rows`, and the C extension
  `posedistill._jpeg_band` built from csrc/jpeg_band.c when the libjpeg headers are installed):
  decoding stops after the crop's last row and the rows above it are only entropy-decoded. The
  samples are bit-identical to whole-image decoding. With the cache on, whole images are decoded.
* JPEGs are decoded by simplejpeg when it is installed (libjpeg-turbo in its wheel, same accurate
  DCT and upsampling as OpenCV's: identical pixels on the test images, 5-8% faster than cv2.imread),
  straight into 4-byte RGBX pixels: no colour conversion, and bilinear warping of 4-byte pixels is
  about twice as fast as of 3-byte ones in OpenCV. Other formats, JPEGs it rejects (CMYK, damaged
  data that OpenCV still decodes) and installs without it go through OpenCV (BGR).
* The full image is never converted, copied or flipped: one affine (flip included) cuts the crop,
  and `normalize_image` reads its colour planes in the decoded order.
* With `reduced_decode` the JPEG is decoded at 1/2, 1/4 or 1/8 resolution (libjpeg DCT scaling)
  when the crop shrinks the box by at least 4/3, 4 or 8 (see `_DECODE_MIN_RATIO`), with the
  affine adjusted so the crop geometry is unchanged.
* An optional LRU cache keeps decoded images (`cache_mb`, per worker process).

Bad images: a missing or undecodable image does not stop training. The sample is replaced by the
next readable instance, the file is named in one warning (with its annotation id) and counted in
`dataset.skipped` (per process: DataLoader workers keep their own counts; `check_images()` scans
every file up front and returns the bad ones).
"""
from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from typing import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from posedistill.data import transforms as T
from posedistill.data.coco import PersonInstance
from posedistill.errors import PosedistillError, TrainingStopped
from posedistill.keypoints import KeypointMeta

try:        # optional faster JPEG decoder; OpenCV decodes everything without it
    import simplejpeg
except ImportError:  # pragma: no cover - depends on the install
    simplejpeg = None
try:        # C extension (setup.py, csrc/jpeg_band.c): decodes only the JPEG rows a crop needs
    from posedistill import _jpeg_band
except ImportError:  # pragma: no cover - built only where the libjpeg headers are installed
    _jpeg_band = None

_READ_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
               8: cv2.IMREAD_REDUCED_COLOR_8}


class ImageReadError(PosedistillError, OSError):
    """An image file is missing or cannot be decoded."""


def read_bgr(path: str, factor: int = 1) -> np.ndarray:
    """HxWx3 uint8 BGR image, decoded at 1/factor resolution (1, 2, 4, 8); EXIF orientation is
    ignored as in the HRNet code (annotations refer to the stored pixel grid)."""
    img = cv2.imread(path, _READ_FLAGS[factor] | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        reason = "file not found" if not os.path.exists(path) else "cannot be decoded by OpenCV"
        raise ImageReadError(f"image {path}: {reason}")
    return img


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        reason = "file not found" if not os.path.exists(path) else f"cannot be read ({e.strerror})"
        raise ImageReadError(f"image {path}: {reason}") from None


def decode_image(path: str, factor: int = 1) -> np.ndarray:
    """The dataset's decoder: uint8 image at 1/factor resolution (1, 2, 4, 8), either HxWx4 RGBX
    (a JPEG decoded by simplejpeg) or HxWx3 BGR (OpenCV: other formats, JPEGs simplejpeg rejects,
    or simplejpeg not installed); the channel count tells which. EXIF orientation is ignored."""
    return _decode(_read_bytes(path), path, factor)


def decode_image_rows(path: str, factor: int, y0: int, y1: int) -> np.ndarray:
    """Like `decode_image(path, factor)`, for a reader that only looks at rows [y0, y1): those
    rows (clipped to the image) hold the same pixels, the other rows may hold anything.

    A JPEG (YCbCr / RGB / greyscale) is then decoded down to row y1 only, and only the band is
    converted to pixels (`csrc/jpeg_band.c`; speed: benchmarks/data_pipeline.py). Other
    files, JPEGs the extension rejects, and installs without it get the whole image decoded."""
    data = _read_bytes(path)
    if _jpeg_band is not None and data[:2] == b"\xff\xd8":
        try:
            pixels, width, height, _, _ = _jpeg_band.decode(data, factor, y0, y1)
            return np.frombuffer(pixels, np.uint8).reshape(height, width, 4)
        except ValueError:
            pass    # CMYK, damaged data: the general path below decides (and names the file)
    return _decode(data, path, factor)


# Largest image decoded (pixels): a few-KB damaged JPEG can declare 65495 x 2528 and cost OpenCV seconds and
# hundreds of MB in a loader worker (found by fuzzing, docs/reliability.md). PIL warns of a decompression
# bomb from 89.5 Mpx; 100 Mpx is above any photo a pose dataset holds.
MAX_IMAGE_PIXELS = 100_000_000


def jpeg_declared_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's first start-of-frame segment, read without decoding; None when
    there is none before the scan data (a broken file). Used to refuse huge images before decoding
    them, here and in `posedistill serve`."""
    i = 2
    while i + 9 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:                                      # fill byte before a marker
            i += 1
        elif 0xD0 <= marker <= 0xD9 or marker == 0x01:          # markers without a length
            i += 2
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):   # SOFn: P, Y, X
            return int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
        elif marker == 0xDA:                                    # scan data before any frame header
            return None
        else:
            i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def _decode(data: bytes, path: str, factor: int) -> np.ndarray:
    size = jpeg_declared_size(data) if data[:2] == b"\xff\xd8" else None
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise ImageReadError(f"image {path}: declares {size[1]}x{size[0]} pixels, more than MAX_IMAGE_PIXELS="
                             f"{MAX_IMAGE_PIXELS} (a damaged file?)")
    if simplejpeg is not None and data[:2] == b"\xff\xd8":
        try:
            # libjpeg scales to ceil(size / factor); ask for exactly that (the smallest scale that
            # still gives this size is 1/factor) and check it, so that the reduced-read affine holds
            h, w = simplejpeg.decode_jpeg_header(data)[:2]
            want = (-(-h // factor), -(-w // factor))
            img = simplejpeg.decode_jpeg(data, "RGBX", min_height=want[0], min_width=want[1])
            if img.shape[:2] == want:
                return img
        except ValueError:
            pass    # CMYK, or damaged data that OpenCV may still decode (it is lenient, as before)
    if not data:
        raise ImageReadError(f"image {path}: empty file")
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), _READ_FLAGS[factor] | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error:   # OpenCV asserts instead of returning None on some input (an empty buffer: fuzzing)
        img = None
    if img is None:
        raise ImageReadError(f"image {path}: cannot be decoded by OpenCV")
    return img


def load_image(path: str | os.PathLike) -> np.ndarray:
    """HxWx3 uint8 RGB image read with OpenCV; raises ImageReadError naming the file."""
    return cv2.cvtColor(read_bgr(str(path)), cv2.COLOR_BGR2RGB)


def _scalar(value, dtype) -> torch.Tensor:
    """0-d tensor; a third of the time of torch.tensor(value) (seven of them per sample)."""
    return torch.from_numpy(np.array(value, dtype=dtype))


class SkipsUnreadable:
    """What the datasets share about unreadable images: `_first_readable` returns `_make(i, rng)` for the
    first item from `index` on (cyclically) whose image can be read; an unreadable one is remembered in
    `bad_indices`, counted in `skipped` and warned about once per file. The dataset provides `_make`,
    `_items` (records with `image_path`) and `_label(i)` (how a warning names item i)."""

    def _init_skips(self) -> None:
        self.skipped = 0
        self.bad_indices: set[int] = set()
        self._warned: set[str] = set()

    def _first_readable(self, index: int, rng, what: str) -> dict:
        items = self._items
        n = len(items)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} {what}")
        index %= n
        for step in range(n):
            i = (index + step) % n
            if i in self.bad_indices:
                continue
            try:
                sample = self._make(i, rng)
                # which requested item was replaced (-1: none), for the run's count of skipped samples
                sample["skipped_from"] = _scalar(index if i != index else -1, np.int64)
                return sample
            except ImageReadError as e:
                self._mark_bad(i, e)
        raise RuntimeError(f"no readable image among the {n} {what} of this dataset (first: {items[0].image_path})")

    def _mark_bad(self, i: int, err: Exception) -> None:
        self.bad_indices.add(i)
        self.skipped += 1
        path = self._items[i].image_path
        if path not in self._warned:
            self._warned.add(path)
            warnings.warn(f"skipping {self._label(i)}: {err}; a readable one is used instead", stacklevel=4)


class TopDownDataset(SkipsUnreadable, Dataset):
    """Person crops with codec targets.

    instances: PersonInstance list (`data.coco` / `data.mpii`).
    meta: keypoint metadata (flip pairs, joint weights, half-body split).
    codec: object with `encode(keypoints [K, 2], visible [K]) -> dict` (e.g. HeatmapCodec).
    input_size: (width, height) of the crop.
    train: random augmentation on (half-body, scale, rotation, flip); off = deterministic crop.
    flip / scale_factor / rotation_factor / rotation_prob / half_body_prob / half_body_min_joints:
        HRNet augmentation knobs (defaults as the official COCO recipe).
    use_udp: size-1 based (UDP) affine; None = the codec's `udp` attribute (False if it has none).
    use_joint_weights: multiply `target_weight` by `meta.joint_weights`.
    normalize: True: `image` is the ImageNet-normalised float32 crop. False: the uint8 RGB crop
        [3, H, W], a quarter of the bytes for DataLoader workers to hand over (15-25% more
        samples/s through one worker: the DataLoader lines of benchmarks/data_pipeline.py);
        `transforms.normalize_images`
        finishes it on the device (the engine does, in `to_device` and `predict`).
    reduced_decode: decode JPEGs at reduced resolution when the crop downsamples enough;
        None = on for training, off for evaluation (evaluation then matches the official pipeline
        pixel for pixel).
    cache_mb: LRU cache of decoded images, in MiB per process (0 = off). It pays off only when the
        same image comes back soon (evaluation in image order, several people per image);
        a 640x480 COCO image costs 1.2 MiB (4-byte RGBX pixels; 0.9 MiB when OpenCV decodes it).
    """

    def __init__(self, instances: Sequence[PersonInstance], meta: KeypointMeta, codec,
                 input_size: tuple[int, int] = (192, 256), train: bool = False, *, flip: bool = True,
                 scale_factor: float = 0.35, rotation_factor: float = 45.0, rotation_prob: float = 0.6,
                 half_body_prob: float = 0.3, half_body_min_joints: int = 8, use_udp: bool | None = None,
                 use_joint_weights: bool = False, normalize: bool = True, reduced_decode: bool | None = None,
                 cache_mb: float = 0.0):
        self.instances = list(instances)
        self.meta = meta
        self.codec = codec
        self.input_size = (int(input_size[0]), int(input_size[1]))
        if min(self.input_size) < 2:
            raise ValueError(f"input_size must be (width, height) >= 2, got {tuple(input_size)}")
        self.aspect_ratio = self.input_size[0] / self.input_size[1]
        self.train = bool(train)
        self.flip = flip
        self.scale_factor = scale_factor
        self.rotation_factor = rotation_factor
        self.rotation_prob = rotation_prob
        self.half_body_prob = half_body_prob
        self.half_body_min_joints = half_body_min_joints
        self.use_udp = bool(getattr(codec, "udp", False)) if use_udp is None else bool(use_udp)
        self.use_joint_weights = use_joint_weights
        self.normalize = bool(normalize)
        self.reduced_decode = self.train if reduced_decode is None else bool(reduced_decode)
        self.cache_bytes = int(cache_mb * 2**20)
        self._cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._cache_used = 0
        self.cache_hits = 0
        self._init_skips()
        self._flip_index = meta.flip_index
        self._joint_weights = np.asarray(meta.joint_weights, dtype=np.float32)
        for i, inst in enumerate(self.instances):
            if inst.keypoints.shape != (meta.num_joints, 3):
                raise ValueError(f"instance {i} (annotation id {inst.ann_id}, {inst.image_path}): keypoints have "
                                 f"shape {inst.keypoints.shape}, expected ({meta.num_joints}, 3) for the "
                                 f"keypoint set {meta.name!r}")

    def __len__(self) -> int:
        return len(self.instances)

    # ---------------------------------------------------------------- images

    def _read(self, path: str, factor: int, rows: tuple[int, int]) -> np.ndarray:
        """The image (RGBX or BGR) at 1/factor, valid at least in `rows`: without the cache only
        those rows are decoded (`decode_image_rows`); the cache keeps whole images."""
        if self.cache_bytes <= 0:
            return decode_image_rows(path, factor, *rows)
        return self._read_cached(path, factor)

    def _read_cached(self, path: str, factor: int) -> np.ndarray:
        key = (path, factor)
        img = self._cache.get(key)
        if img is not None:
            self._cache.move_to_end(key)
            self.cache_hits += 1
            return img
        img = decode_image(path, factor)
        if img.nbytes <= self.cache_bytes:
            self._cache[key] = img
            self._cache_used += img.nbytes
            while self._cache_used > self.cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cache_used -= old.nbytes
        return img

    # Decode at 1/f when the crop has at least this many image pixels per crop pixel. Measured
    # (COCO/OCHuman/MPII test images, rotated 256x192 crops) as the mean difference to an
    # area-averaged crop of the full-resolution image: from 4/3 on, bilinear sampling of the full
    # decode aliases more than the 1/2 decode (DCT scaling averages 2x2 pixels) loses detail, so 1/2
    # is both faster and closer (4.3 vs 4.5 grey levels at 4/3, 4.9 vs 5.8 at 2); 1/4 and 1/8 only
    # catch up with the next finer factor at about f pixels per crop pixel.
    _DECODE_MIN_RATIO = ((8, 8.0), (4, 4.0), (2, 4.0 / 3.0))

    def _decode_factor(self, scale: np.ndarray) -> int:
        """JPEG decode reduction (8, 4, 2 or 1) for a crop of `scale` image pixels (1 if disabled)."""
        if not self.reduced_decode:
            return 1
        ow, oh = self.input_size
        if self.use_udp:
            ow, oh = ow - 1, oh - 1
        ratio = min(float(scale[0]) / ow, float(scale[1]) / oh)
        for f, min_ratio in self._DECODE_MIN_RATIO:
            if ratio >= min_ratio:
                return f
        return 1

    def check_images(self, progress: bool = False) -> list[tuple[str, list[int], str]]:
        """Decode every distinct image once; return (path, annotation ids, reason) of the bad ones."""
        by_path: dict[str, list[int]] = {}
        for inst in self.instances:
            by_path.setdefault(inst.image_path, []).append(inst.ann_id)
        bad = []
        items = by_path.items()
        if progress:
            from tqdm import tqdm
            items = tqdm(items, desc="check images", total=len(by_path))
        for path, ann_ids in items:
            try:
                read_bgr(path, 8)   # still runs the full entropy decode; 1/8 keeps it cheap
            except ImageReadError as e:
                bad.append((path, ann_ids, str(e)))
        return bad

    # ---------------------------------------------------------------- samples

    def _geometry(self, inst: PersonInstance, rng: np.random.Generator | None):
        """(center, scale) of the box, and the augmented (center, scale, rot, flip)."""
        center, scale = T.box_to_center_scale(inst.bbox, self.aspect_ratio)
        if rng is None:
            return center, scale, center, scale, 0.0, False
        c, s = center, scale
        if (self.half_body_prob > 0 and inst.num_labelled > self.half_body_min_joints
                and rng.random() < self.half_body_prob):
            hb = T.half_body_center_scale(inst.keypoints, self.meta, self.aspect_ratio, rng)
            if hb is not None:
                c, s = hb
        mult, rot = T.random_scale_rotation(rng, self.scale_factor, self.rotation_factor, self.rotation_prob)
        flipped = bool(self.flip and rng.random() < 0.5)
        return center, scale, c, s * mult, rot, flipped

    def _make(self, index: int, rng: np.random.Generator | None) -> dict:
        inst = self.instances[index]
        center, scale, c_aug, s_aug, rot, flipped = self._geometry(inst, rng)
        size = self.input_size
        affine = T.get_affine(c_aug, s_aug, rot, size, flip=flipped, udp=self.use_udp)
        factor = self._decode_factor(s_aug)
        warp = affine if factor == 1 else T.compose_affine(affine, T.reduced_read_affine(factor))
        img = self._read(inst.image_path, factor, T.source_rows(warp, size))
        crop = T.warp_crop(img, warp, size)                  # [H, W, 4] RGBX or [H, W, 3] BGR
        bgr = crop.shape[2] == 3
        image = T.normalize_image(crop, bgr=bgr) if self.normalize else T.rgb_planes(crop, bgr=bgr)

        kps = T.keypoints_to_crop(inst.keypoints, affine, self._flip_index if flipped else None)
        targets = self.codec.encode(kps[:, :2], kps[:, 2] > 0)
        weight = np.asarray(targets["target_weight"], dtype=np.float32).reshape(-1)
        if self.use_joint_weights:
            weight = weight * self._joint_weights
        if rng is None:
            aug = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        else:
            plain = T.get_affine(center, scale, 0.0, size, udp=self.use_udp)
            aug = T.compose_affine(affine, T.invert_affine(plain))

        sample = {"image": torch.from_numpy(image)}
        for key, value in targets.items():
            if key != "target_weight":
                sample[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        sample.update({
            "target_weight": torch.from_numpy(weight),
            "keypoints": torch.from_numpy(kps),
            "center": torch.from_numpy(np.asarray(center, dtype=np.float32)),
            "scale": torch.from_numpy(np.asarray(scale, dtype=np.float32)),
            "affine": torch.from_numpy(affine.astype(np.float32)),
            "aug_affine": torch.from_numpy(aug.astype(np.float32)),
            "flipped": _scalar(flipped, np.bool_),
            "image_id": _scalar(inst.image_id, np.int64),
            "ann_id": _scalar(inst.ann_id, np.int64),
            "index": _scalar(index, np.int64),
            "bbox_score": _scalar(inst.score, np.float32),
            "area": _scalar(inst.area, np.float32),
            "head_size": _scalar(inst.head_size, np.float32),
        })
        return sample

    def _rng(self) -> np.random.Generator | None:
        if not self.train:
            return None
        # Drawn from torch's generator: seeded by torch.manual_seed in the main process and
        # differently in every DataLoader worker (numpy's global state would repeat across workers).
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))

    def __getitem__(self, index: int) -> dict:
        return self._first_readable(index, self._rng(), "instances")

    @property
    def _items(self) -> list:
        return self.instances

    def _label(self, i: int) -> str:
        return f"annotation id {self.instances[i].ann_id} (instance {i})"


class SkippedSamples:
    """Training instances whose image could not be read (each replaced by a readable one), gathered over a
    run from the samples' `skipped_from`; more than `max_fraction` of the dataset stops the run."""

    def __init__(self, dataset: TopDownDataset, max_fraction: float = 0.01):
        self.dataset, self.max_fraction = dataset, float(max_fraction)
        self.indices: set[int] = set()

    def add(self, skipped_from: torch.Tensor) -> None:
        self.indices.update(int(i) for i in skipped_from[skipped_from >= 0].tolist())

    def examples(self, n: int = 3) -> list[str]:
        """"path (reason)" of the first `n` skipped instances (the reason read again here: workers keep theirs)."""
        out = []
        for i in sorted(self.indices)[:n]:
            path = self.dataset.instances[i].image_path
            try:
                read_bgr(path, 8)
                reason = "unreadable when sampled"
            except ImageReadError as e:
                reason = str(e).split(": ", 1)[-1]
            out.append(f"{path} ({reason})")
        return out

    def summary(self) -> dict:
        """For the run log: count, fraction of the dataset, the first few with their reasons."""
        n = len(self.indices)
        return {"skipped": n, "skipped_fraction": n / max(len(self.dataset), 1),
                "skipped_examples": "; ".join(self.examples()) if n else ""}

    def check(self, resume_from: str) -> None:
        """Stop (TrainingStopped, listing them) when more than `max_fraction` of the samples are unreadable."""
        n, total = len(self.indices), len(self.dataset)
        if n > self.max_fraction * total:
            raise TrainingStopped(f"{n} of {total} training samples ({100 * n / total:.1f}%) have unreadable images, "
                                  f"more than train.max_skipped_fraction={self.max_fraction:g}: "
                                  f"{'; '.join(self.examples(5))}",
                                  hint=f"fix or remove those images (or raise train.max_skipped_fraction), then "
                                       f"--resume {resume_from}")
