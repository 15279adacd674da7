"""Bottom-up dataset: one whole image -> augmented input with all people's targets and a loss mask.

For bottom-up (Part Affinity Field) training, seed 004 (Kato et al., "Improving Multi-Person Pose
Estimation using Label Correction", on CMU-Pose, Cao et al. CVPR 2017). The codec (e.g.
`codecs.paf.PafCodec`) turns the people of the augmented input into targets with
`codec.encode_people(keypoints [P, K, 3], ignore_mask [H_in, W_in] | None)`; this module supplies
those keypoints and the ignore mask.

Which people are trained on, which are masked (`load_bottomup_images`). Per image of a COCO-format
keypoint file (read and checked by `coco.CocoKeypoints`):
* crowd annotations (`iscrowd` 1): their segmentation (RLE or polygons) is ignored in the loss;
* a person with fewer than `min_keypoints` labelled joints or an `area` below `min_area` is not
  trained on: its keypoints are left out of the targets and its segmentation (its box when it has
  none) is ignored in the loss. Defaults 5 and 32 x 32: the thresholds of CMU's training-set builder
  (ZheC/Realtime_Multi-Person_Pose_Estimation `training/genJSON.m`: "skip this person if parts
  number is too low or if segmentation area is too small", `num_keypoints < 5 || area < 32*32`),
  used for the ignore mask by the Chainer re-implementation of the paper's authors' group
  (DeNA/Chainer_Realtime_Multi-Person_Pose_Estimation `gen_ignore_mask.py` and `entity.py`:
  `min_keypoints` 5, `min_area` 32 * 32, such people masked and left out of the labels). CMU's
  own mask (`training/genCOCOMask.m`) covers only crowds and people without any keypoint: that is
  `min_keypoints=1, min_area=0`;
* everyone else is trained on, and the ignore region never covers their segmentation (a crowd
  region drawn over a labelled person does not hide that person; CMU and DeNA subtract the people
  listed before the crowd, we subtract all of them). People with no segmentation subtract nothing.
Everything is at image resolution and warped with the image, nearest neighbour.

Augmentation (`train=True`), seed 004 section 4.2: random flip, rotation +-40 degrees and scale
0.5-1.1, then a random 368 x 368 crop. Those are CMU-Pose's training settings (its
`pose_train_test.prototxt`: `max_rotate_degree 40, scale_min 0.5, scale_max 1.1, target_dist 0.6,
center_perterb_max 40, crop_size 368`), whose meaning we follow: a person of the image (one the
image is trained on, at random) sets the scale, its box height becoming `target_dist x input
height x U(scale_min, scale_max)` input pixels; the crop is centred on that person's box centre
plus a uniform shift of up to `center_perturb` input pixels in x and y; the rotation is
U(-40, 40) degrees about that centre; the flip (probability 0.5) mirrors the crop and swaps
left/right joints (`meta.flip_index`). An image without such a person (only with `min_people=0`)
is scaled so its longer side fits the input, times the random factor, around a uniform random centre.
All of it is ONE affine (`transforms.get_affine`, flip included), applied once with
cv2.warpAffine: bilinear for the image with `border_value` (128, CMU's grey) outside it, nearest for
the ignore mask (outside the image nothing is ignored: padding trains as background, as in CMU).
Keypoints go through the same affine; joints that land outside the input become unlabelled (v = 0,
as CMU's transformer does), unless `keep_outside=True`, which hands them to the codec (PafCodec
still draws the part of their limbs and Gaussians that reaches into the input).

Evaluation (`train=False`): no randomness; the whole image is resized (area interpolation when it
shrinks) so that it fits the input with its aspect kept, its longer side equal to the input's
(for a square input), placed in the top-left corner and padded right / down with `border_value`
(as CMU's test code pads the right / bottom). `affine` maps image pixels to input pixels
(x_in = s x + (s - 1) / 2, OpenCV's resize convention) and `inverse_affine` maps predictions in
input pixels back to the original image (`transforms.apply_affine`).

Sample (all tensors of fixed shape, so the default collate works): `image` float32 [3, H, W]
ImageNet-normalised RGB (uint8 with `normalize=False`, finished on the device by
`transforms.normalize_images`), the codec's targets (`confidence_maps`, `pafs`, `mask`, float32),
`affine` / `inverse_affine` float32 [2, 3], `image_size` int64 (width, height) of the original image,
`flipped`, `num_people` (people in the targets), `image_id`, `index`, `skipped_from`.

Randomness: as `TopDownDataset`, drawn from torch's generator by default (seeded by
torch.manual_seed, per DataLoader worker by torch), so a resumed run that restores torch's state
replays it. With `seed` set instead, sample i of epoch e uses numpy.random.default_rng([seed, e, i])
whatever the worker or order (call `set_epoch(e)` before each epoch's DataLoader iteration; workers
copy the dataset when they start, so this needs non-persistent workers).

Bad images: a missing or undecodable image does not stop training. The sample is replaced by the
next readable image, the file is named in one warning and counted in `dataset.skipped`; the samples'
`skipped_from` feed `topdown.SkippedSamples` (which reads `dataset.instances`) as for top-down.

Speed: benchmarks/bottomup_data.py.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import torch
from torch.utils.data import Dataset

from posedistill.data import transforms as T
from posedistill.data.coco import CocoKeypoints
from posedistill.data.topdown import SkipsUnreadable, decode_image
from posedistill.keypoints import KeypointMeta

MIN_KEYPOINTS = 5          # CMU genJSON.m / DeNA entity.py (module docstring)
MIN_AREA = 32 * 32


@dataclass
class BottomUpImage:
    """One image and its people, split by the mask rule (module docstring).

    keypoints: [P, K, 3] float32 (x, y, v) in image pixels of the people trained on (unlabelled
    joints 0); boxes: their [P, 4] (x, y, w, h); ignore_regions: (segmentation or None, box) of crowd
    regions and of masked people; keep_regions: segmentations of the people trained on (cut out of
    the ignore region); width / height: from the file (0 when it does not say)."""
    image_path: str
    image_id: int
    width: int
    height: int
    keypoints: np.ndarray
    boxes: np.ndarray
    ignore_regions: list = field(default_factory=list)
    keep_regions: list = field(default_factory=list)
    num_crowd: int = 0
    num_masked: int = 0

    @property
    def num_people(self) -> int:
        return int(self.keypoints.shape[0])


def _image_record(ds: CocoKeypoints, image_id: int, anns: list[dict], min_keypoints: int,
                  min_area: float) -> BottomUpImage:
    k = ds.num_joints
    img = ds.images[image_id]
    kps, boxes, ignore, keep = [], [], [], []
    crowd = masked = 0
    for ann in anns:
        box = [float(v) for v in ann["bbox"]]
        segm = ann.get("segmentation") or None
        if ann.get("iscrowd", 0):
            ignore.append((segm, box))
            crowd += 1
            continue
        pts = np.asarray(ann["keypoints"], dtype=np.float32).reshape(k, 3)
        labelled = int((pts[:, 2] > 0).sum())
        area = float(ann.get("area", box[2] * box[3]))
        if labelled < min_keypoints or area < min_area:
            ignore.append((segm, box))
            masked += 1
            continue
        pts[pts[:, 2] <= 0] = 0.0
        kps.append(pts)
        boxes.append(box)
        if segm is not None:
            keep.append(segm)
    return BottomUpImage(image_path=ds.image_path(image_id), image_id=int(image_id),
                         width=int(img.get("width", 0)), height=int(img.get("height", 0)),
                         keypoints=np.asarray(kps, dtype=np.float32).reshape(-1, k, 3),
                         boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                         ignore_regions=ignore, keep_regions=keep, num_crowd=crowd, num_masked=masked)


def load_bottomup_images(ann_file: str | os.PathLike, image_dir: str | os.PathLike, meta: KeypointMeta | None = None,
                         min_keypoints: int = MIN_KEYPOINTS, min_area: float = MIN_AREA,
                         strict: bool = True) -> list[BottomUpImage]:
    """Every image of a COCO-format keypoint file (file order) with its people split by the mask
    rule (module docstring). Annotations of other categories are ignored; the file is checked by
    `CocoKeypoints` (bad annotations raise AnnotationError naming file and field, or are skipped
    with strict=False)."""
    if min_keypoints < 0 or min_area < 0:
        raise ValueError(f"min_keypoints and min_area must be >= 0, got {min_keypoints}, {min_area}")
    ds = CocoKeypoints(ann_file, image_dir, meta=meta, strict=strict)
    by_image: dict[int, list[dict]] = {i: [] for i in ds.images}
    for ann in ds.annotations:
        if ann["category_id"] == ds.category_id:
            by_image[ann["image_id"]].append(ann)
    return [_image_record(ds, i, anns, min_keypoints, min_area) for i, anns in by_image.items()]


def segmentation_mask(segmentation, box, height: int, width: int) -> np.ndarray:
    """bool [height, width] of one COCO segmentation: polygons, uncompressed RLE (crowd) or
    compressed RLE; the box (x, y, w, h) when there is no usable segmentation. An RLE of another
    size than the image (a file whose width / height disagree with the image) is resized to it."""
    rle = None
    if isinstance(segmentation, list):
        polys = [p for p in segmentation if isinstance(p, list) and len(p) >= 6]
        if polys:
            rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if isinstance(segmentation["counts"], list):
            rle = mask_utils.frPyObjects(segmentation, *segmentation["size"])
        else:
            rle = dict(segmentation)
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
    if rle is None:
        m = np.zeros((height, width), bool)
        x, y, w, h = box
        x0, y0 = max(int(math.floor(x)), 0), max(int(math.floor(y)), 0)
        m[y0:max(int(math.ceil(y + h)), y0), x0:max(int(math.ceil(x + w)), x0)] = True
        return m
    with warnings.catch_warnings():    # pycocotools under numpy 2: "__array__ implementation doesn't accept a copy"
        warnings.simplefilter("ignore", DeprecationWarning)
        m = mask_utils.decode(rle)
    if m.shape[:2] != (height, width):
        m = cv2.resize(m, (width, height), interpolation=cv2.INTER_NEAREST)
    return m.reshape(height, width) > 0


def build_ignore_mask(image: BottomUpImage, height: int, width: int) -> np.ndarray | None:
    """bool [height, width], True = ignored in the loss: crowd regions and masked people, minus the
    people trained on; None when nothing is ignored."""
    if not image.ignore_regions:
        return None
    ignore = np.zeros((height, width), bool)
    for segm, box in image.ignore_regions:
        ignore |= segmentation_mask(segm, box, height, width)
    for segm in image.keep_regions:
        ignore &= ~segmentation_mask(segm, (0, 0, 0, 0), height, width)
    return ignore if ignore.any() else None


def people_to_input(keypoints: np.ndarray, affine: np.ndarray, input_size: tuple[int, int],
                    flip_index: np.ndarray | None = None, keep_outside: bool = False) -> np.ndarray:
    """Image-pixel keypoints [P, K, 3] -> input pixels [P, K, 3] float32 with the sample's affine;
    `flip_index` swaps left/right joints when the affine mirrors. Unlabelled joints are (0, 0, 0);
    joints outside the input (pixel centres: x in [-0.5, W - 0.5)) become unlabelled too, unless
    `keep_outside`."""
    kps = np.asarray(keypoints, dtype=np.float64).reshape(-1, np.shape(keypoints)[-2], 3)
    out = np.zeros(kps.shape, dtype=np.float32)
    out[..., :2] = T.apply_affine(kps[..., :2], affine)
    out[..., 2] = kps[..., 2]
    w, h = input_size
    inside = (out[..., 0] >= -0.5) & (out[..., 0] < w - 0.5) & (out[..., 1] >= -0.5) & (out[..., 1] < h - 0.5)
    out[(kps[..., 2] <= 0) | ~(inside | keep_outside)] = 0.0
    if flip_index is not None:
        out = out[:, np.asarray(flip_index)]
    return out


def fit_affine(width: int, height: int, input_size: tuple[int, int]) -> np.ndarray:
    """Image -> input affine of evaluation and prediction: the whole image fitted with its aspect kept,
    top-left, OpenCV's resize convention (x_in = s x + (s - 1) / 2)."""
    w_in, h_in = input_size
    s = min(w_in / width, h_in / height)
    sx, sy = max(round(width * s), 1) / width, max(round(height * s), 1) / height
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])


def fit_image(img: np.ndarray, affine: np.ndarray, input_size: tuple[int, int], border_value: int = 128) -> np.ndarray:
    """The image resized by `fit_affine`'s `affine` (area interpolation when shrinking) into the top-left of
    an `input_size` canvas of `border_value`."""
    new_w, new_h = round(affine[0, 0] * img.shape[1]), round(affine[1, 1] * img.shape[0])
    interp = cv2.INTER_AREA if new_w < img.shape[1] else cv2.INTER_LINEAR
    crop = np.full((input_size[1], input_size[0], img.shape[2]), border_value, np.uint8)
    crop[:new_h, :new_w] = cv2.resize(img, (new_w, new_h), interpolation=interp).reshape(new_h, new_w, -1)
    return crop


def _scalar(value, dtype) -> torch.Tensor:
    return torch.from_numpy(np.array(value, dtype=dtype))


class BottomUpDataset(SkipsUnreadable, Dataset):
    """Whole images with all people's codec targets and an ignore mask (module docstring).

    ann_file / image_dir: a COCO-format keypoint file and its images; codec: has
    `encode_people(keypoints, ignore_mask)` (e.g. PafCodec with the same input size); meta: the
    file's keypoint set (flip pairs); input_size: (width, height); train: random augmentation;
    flip_prob / max_rotation (degrees) / scale_range / target_dist / center_perturb (input pixels):
    the augmentation (defaults seed 004 / CMU-Pose); min_keypoints / min_area: the mask rule;
    min_people: images with fewer people trained on are left out (None: 1 for training, as CMU,
    0 for evaluation); keep_outside: keep joints that leave the input; border_value: grey level
    outside the image; normalize: float ImageNet-normalised image, else uint8; seed: None = torch's
    generator, else per (seed, epoch, index); strict: bad annotations raise (else skipped)."""

    def __init__(self, ann_file: str | os.PathLike, image_dir: str | os.PathLike, codec, meta: KeypointMeta,
                 input_size: tuple[int, int] = (368, 368), train: bool = False, *, flip_prob: float = 0.5,
                 max_rotation: float = 40.0, scale_range: tuple[float, float] = (0.5, 1.1),
                 target_dist: float = 0.6, center_perturb: float = 40.0, min_keypoints: int = MIN_KEYPOINTS,
                 min_area: float = MIN_AREA, min_people: int | None = None, keep_outside: bool = False,
                 border_value: int = 128, normalize: bool = True, seed: int | None = None, strict: bool = True):
        self.input_size = (int(input_size[0]), int(input_size[1]))
        if min(self.input_size) < 2:
            raise ValueError(f"input_size must be (width, height) >= 2, got {tuple(input_size)}")
        codec_size = getattr(codec, "input_size", None)
        if codec_size is not None and tuple(int(v) for v in codec_size) != self.input_size:
            raise ValueError(f"BottomUpDataset: input_size {self.input_size} differs from the codec's {tuple(codec_size)}")
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be 0 < min <= max, got {tuple(scale_range)}")
        if not 0.0 <= flip_prob <= 1.0 or max_rotation < 0 or center_perturb < 0 or target_dist <= 0:
            raise ValueError("flip_prob must be in [0, 1], max_rotation / center_perturb >= 0, target_dist > 0")
        self.codec, self.meta, self.train = codec, meta, bool(train)
        self.flip_prob, self.max_rotation = float(flip_prob), float(max_rotation)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.target_dist, self.center_perturb = float(target_dist), float(center_perturb)
        self.keep_outside, self.normalize = bool(keep_outside), bool(normalize)
        self.border_value = int(border_value)
        self.seed, self.epoch = seed, 0
        self.min_people = (1 if self.train else 0) if min_people is None else int(min_people)
        images = load_bottomup_images(ann_file, image_dir, meta=meta, min_keypoints=min_keypoints,
                                      min_area=min_area, strict=strict)
        self.images = [im for im in images if im.num_people >= self.min_people]
        if not self.images:
            raise ValueError(f"{ann_file}: no image has at least {self.min_people} person(s) with >= "
                             f"{min_keypoints} labelled keypoints and area >= {min_area:g}")
        self._flip_index = meta.flip_index
        self._init_skips()

    def __len__(self) -> int:
        return len(self.images)

    @property
    def instances(self) -> list[BottomUpImage]:
        """The images (each with `image_path`), under the name `topdown.SkippedSamples` reads."""
        return self.images

    def set_epoch(self, epoch: int) -> None:
        """Epoch of the per-(seed, epoch, index) augmentation (only with `seed` set)."""
        self.epoch = int(epoch)

    # ---------------------------------------------------------------- geometry

    def train_affine(self, image: BottomUpImage, width: int, height: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, bool]:
        """(image -> input affine [2, 3] float64, flipped) of one random augmentation (module doc).
        The draws are made in a fixed order whatever the branch, so they stay reproducible."""
        w_in, h_in = self.input_size
        mult = rng.uniform(*self.scale_range)
        rot = rng.uniform(-self.max_rotation, self.max_rotation)
        flipped = bool(rng.random() < self.flip_prob)
        person = int(rng.integers(max(image.num_people, 1)))
        anywhere = rng.uniform(0.0, 1.0, 2) * (width, height)
        shift = rng.uniform(-self.center_perturb, self.center_perturb, 2)
        if image.num_people:
            x, y, bw, bh = (float(v) for v in image.boxes[person])
            center = (x + 0.5 * bw, y + 0.5 * bh)
            zoom = self.target_dist * h_in * mult / max(bh, 1.0)
        else:
            center = (float(anywhere[0]), float(anywhere[1]))
            zoom = min(w_in / width, h_in / height) * mult
        affine = T.get_affine(center, (w_in / zoom, h_in / zoom), rot, self.input_size, flip=flipped)
        affine[:, 2] += shift
        return affine, flipped

    def eval_affine(self, width: int, height: int) -> np.ndarray:
        """Image -> input affine of evaluation (`fit_affine`)."""
        return fit_affine(width, height, self.input_size)

    # ---------------------------------------------------------------- pixels

    def _warp(self, img: np.ndarray, ignore: np.ndarray | None, affine: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray | None]:
        size = self.input_size
        border = (self.border_value,) * 4
        if self.train:
            crop = cv2.warpAffine(img, affine, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                  borderValue=border)
            mask = None if ignore is None else cv2.warpAffine(
                ignore.astype(np.uint8), affine, size, flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                borderValue=0) > 0
            return crop, mask
        crop = fit_image(img, affine, size, self.border_value)
        new_w, new_h = round(affine[0, 0] * img.shape[1]), round(affine[1, 1] * img.shape[0])
        mask = None
        if ignore is not None:
            mask = np.zeros((size[1], size[0]), bool)
            mask[:new_h, :new_w] = cv2.resize(ignore.astype(np.uint8), (new_w, new_h),
                                              interpolation=cv2.INTER_NEAREST) > 0
        return crop, mask

    # ---------------------------------------------------------------- samples

    def _make(self, index: int, rng: np.random.Generator | None) -> dict:
        rec = self.images[index]
        img = decode_image(rec.image_path)                   # [h, w, 4] RGBX or [h, w, 3] BGR
        height, width = img.shape[:2]
        ignore = build_ignore_mask(rec, height, width)
        if rng is None:
            affine, flipped = self.eval_affine(width, height), False
        else:
            affine, flipped = self.train_affine(rec, width, height, rng)
        crop, mask = self._warp(img, ignore, affine)
        bgr = crop.shape[2] == 3
        image = T.normalize_image(crop, bgr=bgr) if self.normalize else T.rgb_planes(crop, bgr=bgr)
        kps = people_to_input(rec.keypoints, affine, self.input_size, self._flip_index if flipped else None,
                              self.keep_outside)
        targets = self.codec.encode_people(kps, mask)
        sample = {"image": torch.from_numpy(image)}
        for key, value in targets.items():
            sample[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        sample.update({
            "affine": torch.from_numpy(affine.astype(np.float32)),
            "inverse_affine": torch.from_numpy(T.invert_affine(affine).astype(np.float32)),
            "image_size": torch.tensor([width, height], dtype=torch.int64),
            "flipped": _scalar(flipped, np.bool_),
            "num_people": _scalar(int((kps[..., 2] > 0).any(axis=-1).sum()), np.int64),
            "image_id": _scalar(rec.image_id, np.int64),
            "index": _scalar(index, np.int64),
        })
        return sample

    def _rng(self, index: int) -> np.random.Generator | None:
        if not self.train:
            return None
        if self.seed is not None:
            return np.random.default_rng([int(self.seed), self.epoch, int(index)])
        # as TopDownDataset: torch's generator, seeded per DataLoader worker (numpy's global state is not)
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))

    def __getitem__(self, index: int) -> dict:
        n = len(self.images)
        return self._first_readable(index, self._rng(index % n) if -n <= index < n else None, "images")

    @property
    def _items(self) -> list:
        return self.images

    def _label(self, i: int) -> str:
        return f"image id {self.images[i].image_id} (index {i})"
