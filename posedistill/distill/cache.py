"""Teacher-output cache for offline distillation.

One pass of the frozen teacher over the *un-augmented* training crops (the same instances, the
same crop size, no random flip / scale / rotation / half-body) stores its outputs in numpy memmaps
(float16): heatmaps `[N, K, h, w]`, or SimCC logits `[N, K, W_bins]` and `[N, K, H_bins]`. At training
time a batch's cached outputs are read by the samples' `index` and moved into each sample's
augmented crop with the sample's `aug_affine` (un-augmented crop pixels -> augmented crop pixels,
flip included), so augmentation stays on while the teacher never runs:

* heatmaps: the affine is conjugated to heatmap pixels (`S A S^-1`, S = heatmap / input size, or
  (size - 1) ratios with UDP) and applied to the whole batch at once with `affine_grid` +
  `grid_sample` (bilinear, zeros outside the stored crop);
* SimCC: the stored x / y logits are two 1-D marginals; they are turned into the separable 2-D
  distribution p(x) p(y) on the bin grid, warped the same way, and marginalised back (log
  probabilities are valid logits). Exact for flip and scale, an approximation under rotation;
* a flipped sample also swaps left / right joint channels (`flip_index`), as its labels were.

Bottom-up (PAF) teachers (`head_type` "paf", seed 004's LC / KD): the teacher's last stage is stored
for every training image in its plain view, the whole image fitted into the input as evaluation
does (`BottomUpDataset` with train=False: `fit_affine` / `fit_image`): confidence maps `paf_maps`
[N, K + 1, h, w] and fields `paf_fields` [N, 2L, h, w], float16, with each image's plain affine
(image -> plain input pixels) in float64 (`plain_affine.npy`: float16 would move a translation of a
few hundred pixels by a fraction of a pixel). A sample's augmented input is the image under its
`affine` (flip included), so plain input pixels map to augmented ones by `affine @ plain^-1`,
conjugated to the output grid of `PafCodec` (output pixel u at input (u + 0.5) stride - 0.5):
* maps are warped as heatmaps are; the background channel is 1 outside the stored view (warped as
  background - 1, plus 1), the joint channels 0;
* every limb's (x, y) vector is turned by the affine's linear part over sqrt(|det|) (a rotation,
  or a reflection for a flipped sample, which negates x);
* a flipped sample permutes the confidence-map channels (`flip_index`, the background last) and
  the limbs (limb l takes limb `limb_flip[l]` times `limb_sign[l]`), as `PafCodec.flip_back` does
  (which negates x itself, having no affine).
The plain view is usually much smaller than the augmented input (a whole image fitted versus one
person zoomed to 0.6 x the input height), so the warp enlarges the stored maps: their Gaussians and
limb widths grow with the zoom, unlike the online teacher's.

The error against running the teacher online on the augmented crop is not zero: the warp
interpolates, regions outside the un-augmented crop are unknown (zeros), and a network's output
is not equivariant to scaling (a teacher trained on fixed-sigma targets answers a zoomed crop with
the same sigma; the warped cache zooms the blob too), and a bottom-up plain view holds the image at a
lower resolution than most augmented inputs. `measure_cache_error` puts numbers on it;
`posedistill cache CONFIG` prints them (README).

Cache folders are keyed by a fingerprint of teacher (model, kwargs, checkpoint content) and dataset
(instances or images with their people, input size, UDP; bottom-up also its kind and border grey),
so a changed checkpoint or dataset never reads stale outputs. A cache is written to a temporary
folder and renamed when complete; with several processes rank 0 builds it and the others wait
(`engine/build.py`, `open_teacher_cache`).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from posedistill.data.bottomup import BottomUpDataset
from posedistill.data.topdown import TopDownDataset
from posedistill.data.transforms import normalize_images

CACHE_VERSION = 1
CACHED_HEADS = ("heatmap", "simcc", "paf")


# --------------------------------------------------------------------------------------------------
# geometry


def _affine3(affine: torch.Tensor) -> torch.Tensor:
    """[B, 2, 3] -> [B, 3, 3]"""
    full = torch.zeros(affine.shape[0], 3, 3, dtype=affine.dtype, device=affine.device)
    full[:, :2] = affine
    full[:, 2, 2] = 1.0
    return full


def conjugate_affine(affine: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """Crop-pixel affine [B, 2, 3] expressed on a grid scaled by (sx, sy): S A S^-1."""
    s = torch.diag(torch.tensor([sx, sy, 1.0], dtype=affine.dtype, device=affine.device))
    s_inv = torch.diag(torch.tensor([1.0 / sx, 1.0 / sy, 1.0], dtype=affine.dtype, device=affine.device))
    return (s @ _affine3(affine) @ s_inv)[:, :2]


def grid_scale(input_size: tuple[int, int], grid_size: tuple[int, int], udp: bool) -> tuple[float, float]:
    """(sx, sy) from input-crop pixels to a (width, height) grid: size ratio, or (n-1) ratio with UDP."""
    (iw, ih), (gw, gh) = input_size, grid_size
    if udp:
        return (gw - 1) / (iw - 1), (gh - 1) / (ih - 1)
    return gw / iw, gh / ih


def warp_maps(maps: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """Warp maps [B, C, h, w] by per-sample pixel affines [B, 2, 3] (source pixel -> destination
    pixel, pixel centres at integers as in OpenCV); bilinear, zeros outside. Same result as
    cv2.warpAffine(map, affine, (w, h)) with INTER_LINEAR and a zero border."""
    b, _, h, w = maps.shape
    if h < 2 or w < 2:
        raise ValueError(f"warp_maps needs maps of at least 2x2, got {h}x{w}")
    inv = torch.linalg.inv(_affine3(affine.double()))                    # destination -> source pixels
    norm = torch.tensor([[2.0 / (w - 1), 0.0, -1.0], [0.0, 2.0 / (h - 1), -1.0], [0.0, 0.0, 1.0]],
                        dtype=torch.float64, device=maps.device)
    theta = (norm @ inv @ torch.linalg.inv(norm))[:, :2]                 # normalised coordinates
    grid = F.affine_grid(theta.to(maps.dtype), [b, 1, h, w], align_corners=True)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def swap_flipped(maps: torch.Tensor, flipped: torch.Tensor, flip_index: torch.Tensor) -> torch.Tensor:
    """Channel j of a flipped sample takes channel flip_index[j] (its labels were swapped the same way)."""
    if not bool(flipped.any()):
        return maps
    swapped = maps[:, flip_index]
    sel = flipped.to(maps.device).view(-1, *([1] * (maps.dim() - 1)))
    return torch.where(sel, swapped, maps)


# --------------------------------------------------------------------------------------------------
# the cache


class TeacherOutputCache:
    """Memory-mapped teacher outputs of every training instance, warped on request.

    `targets(batch, device)` -> teacher outputs in the batch's augmented crops: heatmaps
    [B, K, h, w], (x_logits, y_logits), or for a PAF teacher (confidence_maps [B, K + 1, h, w],
    pafs [B, 2L, h, w]), float32 on `device`."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        meta_path = self.directory / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"teacher cache {self.directory}: meta.json missing (incomplete cache?)")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("version") != CACHE_VERSION:
            raise ValueError(f"teacher cache {self.directory}: version {self.meta.get('version')}, expected "
                             f"{CACHE_VERSION}; delete the folder to rebuild it")
        self.head_type = self.meta["head_type"]
        self.input_size = tuple(self.meta["input_size"])
        self.udp = bool(self.meta["udp"])
        self.split_ratio = float(self.meta.get("split_ratio", 0.0))
        self.num_instances = int(self.meta["num_instances"])
        self.arrays = {name: np.memmap(self.directory / f"{name}.f16", dtype=np.float16, mode="r",
                                       shape=tuple(shape))
                       for name, shape in self.meta["arrays"].items()}
        self.flip_index = torch.as_tensor(self.meta["flip_index"], dtype=torch.long)
        if self.head_type == "paf":
            self.stride = int(self.meta["stride"])
            self.limb_flip = torch.as_tensor(self.meta["limb_flip"], dtype=torch.long)
            self.limb_sign = torch.as_tensor(self.meta["limb_sign"], dtype=torch.float32)
            self.plain_affine = np.load(self.directory / "plain_affine.npy")          # [N, 2, 3] float64

    def __len__(self) -> int:
        return self.num_instances

    def stored(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw stored outputs (float16, CPU) of the instances `index` [B]."""
        idx = np.asarray(index.cpu(), dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_instances):
            raise IndexError(f"teacher cache {self.directory}: instance index out of range 0..{self.num_instances - 1} "
                             f"(was the cache built for another dataset?)")
        return {name: torch.from_numpy(np.ascontiguousarray(arr[idx])) for name, arr in self.arrays.items()}

    def targets(self, batch: dict[str, torch.Tensor], device: torch.device | str | None = None) -> Any:
        """Teacher outputs of `batch` in its augmented inputs: top-down batches carry `aug_affine`
        (plain crop -> augmented crop), bottom-up ones `affine` (image -> augmented input)."""
        key = "affine" if self.head_type == "paf" else "aug_affine"
        device = torch.device(device) if device is not None else batch[key].device
        raw = {k: v.to(device, non_blocking=True).float() for k, v in self.stored(batch["index"]).items()}
        if self.head_type == "paf":
            return self._paf_targets(raw["paf_maps"], raw["paf_fields"], batch, device)
        affine = batch["aug_affine"].to(device).double()
        flipped = batch["flipped"].to(device).bool()
        flip_index = self.flip_index.to(device)
        if self.head_type == "heatmap":
            maps = raw["heatmaps"]
            sx, sy = grid_scale(self.input_size, (maps.shape[-1], maps.shape[-2]), self.udp)
            out = warp_maps(maps, conjugate_affine(affine, sx, sy))
            return swap_flipped(out, flipped, flip_index)
        return self._simcc_targets(raw["simcc_x"], raw["simcc_y"], affine, flipped, flip_index)

    def _simcc_targets(self, x: torch.Tensor, y: torch.Tensor, affine: torch.Tensor, flipped: torch.Tensor,
                       flip_index: torch.Tensor, chunk: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.split_ratio
        wb, hb = x.shape[-1], y.shape[-1]
        # SimCC bin b covers input pixel b / k (bin centres at integers, as the SimCC codec's labels)
        aff = conjugate_affine(affine, k, k)
        xs, ys = [], []
        for s in range(0, x.shape[0], chunk):
            px = F.softmax(x[s:s + chunk], dim=-1)                           # [b, K, Wb]
            py = F.softmax(y[s:s + chunk], dim=-1)                           # [b, K, Hb]
            b, kk = px.shape[:2]
            joint = (py.unsqueeze(-1) * px.unsqueeze(-2)).reshape(b, kk, hb, wb)
            warped = warp_maps(joint, aff[s:s + chunk])
            xs.append(torch.log(warped.sum(-2).clamp_min(1e-12)))
            ys.append(torch.log(warped.sum(-1).clamp_min(1e-12)))
        out_x, out_y = torch.cat(xs), torch.cat(ys)
        return swap_flipped(out_x, flipped, flip_index), swap_flipped(out_y, flipped, flip_index)

    def paf_grid_affine(self, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
        """[B, 3, 3] float64: plain-view output pixels -> augmented output pixels of the batch's samples."""
        idx = np.asarray(batch["index"].cpu(), dtype=np.int64)
        plain = _affine3(torch.from_numpy(self.plain_affine[idx]).to(device))
        move = _affine3(batch["affine"].to(device).double()) @ torch.linalg.inv(plain)   # plain -> augmented input
        # PafCodec's grid: output pixel u sits at input pixel s u + (s - 1) / 2
        s = float(self.stride)
        t = torch.tensor([[s, 0.0, 0.5 * (s - 1)], [0.0, s, 0.5 * (s - 1)], [0.0, 0.0, 1.0]], dtype=torch.float64,
                         device=device)
        return torch.linalg.inv(t) @ move @ t

    def _paf_targets(self, maps: torch.Tensor, fields: torch.Tensor, batch: dict[str, torch.Tensor],
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        grid = self.paf_grid_affine(batch, device)
        flipped = batch["flipped"].to(device).bool()
        # the background channel is 1 where nothing was stored, so it is warped as (background - 1)
        shift = torch.zeros(maps.shape[1], 1, 1, device=device)
        shift[-1] = 1.0
        out_maps = warp_maps(maps - shift, grid[:, :2]) + shift
        out_maps = swap_flipped(out_maps, flipped, self.flip_index.to(device))
        b, c, h, w = fields.shape
        vec = warp_maps(fields, grid[:, :2]).view(b, c // 2, 2, h, w)
        # vectors turn with the warp: its linear part without the scale (a reflection when flipped)
        lin = grid[:, :2, :2]
        rot = (lin / torch.linalg.det(lin).abs().sqrt()[:, None, None]).float()
        vec = torch.einsum("bij,bljhw->blihw", rot, vec)
        # limb l of a flipped sample is its mirror limb, run the same way or the other way
        vec = swap_flipped(vec, flipped, self.limb_flip.to(device))
        sign = torch.where(flipped[:, None], self.limb_sign.to(device)[None], 1.0)            # [B, L]
        return out_maps, (vec * sign[:, :, None, None, None]).reshape(b, c, h, w)


# --------------------------------------------------------------------------------------------------
# building


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_fingerprint(teacher_cfg, dataset) -> str:
    """Hex key of (teacher model, kwargs, checkpoint bytes) x (instances, crop size, UDP, version); for a
    BottomUpDataset (images, input size, border grey, its kind) x (images with their people)."""
    h = hashlib.sha256()
    ckpt = teacher_cfg.checkpoint
    teacher = {"model": teacher_cfg.model, "kwargs": teacher_cfg.model_kwargs,
               "checkpoint": _file_digest(ckpt) if ckpt else ""}
    h.update(json.dumps(teacher, sort_keys=True, default=str).encode())
    data = {"version": CACHE_VERSION, "input_size": list(dataset.input_size),
            "udp": bool(getattr(dataset, "use_udp", False)), "n": len(dataset)}
    if isinstance(dataset, BottomUpDataset):
        # top-down fingerprints stay as they were (no key added), so existing caches remain valid
        data.update({"kind": "bottomup", "border_value": dataset.border_value})
        h.update(json.dumps(data).encode())
        for im in dataset.images:
            h.update(f"{im.image_path}|{im.image_id}|".encode())
            h.update(np.ascontiguousarray(im.keypoints, dtype=np.float32).tobytes())
        return h.hexdigest()[:20]
    h.update(json.dumps(data).encode())
    for inst in dataset.instances:
        h.update(f"{inst.image_path}|{inst.ann_id}|".encode())
        h.update(np.asarray(inst.bbox, dtype=np.float32).tobytes())
    return h.hexdigest()[:20]


def plain_view(train_set):
    """The training samples un-augmented: a TopDownDataset's instances as deterministic crops, or a
    BottomUpDataset's images fitted whole into the input (its evaluation view)."""
    if isinstance(train_set, BottomUpDataset):
        # a shallow copy keeps the `images` list, hence the indices the cache is read by (a new
        # train=False dataset would keep images without people too, shifting every index)
        view = copy.copy(train_set)
        view.train = False
        view._init_skips()
        return view
    if not isinstance(train_set, TopDownDataset):
        raise TypeError(f"teacher cache: expected a TopDownDataset or BottomUpDataset, got {type(train_set).__name__}")
    return TopDownDataset(train_set.instances, train_set.meta, train_set.codec, input_size=train_set.input_size,
                          train=False, use_udp=train_set.use_udp, reduced_decode=train_set.reduced_decode,
                          normalize=train_set.normalize)


def _output_parts(out, head_type: str) -> dict[str, torch.Tensor]:
    """A teacher's output (head_type in CACHED_HEADS) -> the named arrays stored for it."""
    if head_type == "heatmap":
        return {"heatmaps": out}
    if head_type == "simcc":
        return {"simcc_x": out[0], "simcc_y": out[1]}
    maps, pafs = out[-1] if isinstance(out, list) else out              # paf: the last stage
    return {"paf_maps": maps, "paf_fields": pafs}


def _check_paf_channels(parts: dict[str, torch.Tensor], codec) -> None:
    """The flip permutations come from the dataset's codec, so the teacher must have its channels."""
    want = (codec.layout.num_joints + 1, 2 * codec.layout.num_limbs)
    got = (parts["paf_maps"].shape[1], parts["paf_fields"].shape[1])
    if got != want:
        raise ValueError(f"teacher cache: the teacher outputs {got[0]} confidence maps and {got[1]} PAF channels, the "
                         f"dataset's codec expects {want[0]} and {want[1]} ({codec.layout.num_joints} joints + "
                         f"background, {codec.layout.num_limbs} limbs)")


def _cache_meta(plain_set, head_type: str, n: int) -> dict:
    """meta.json entries describing the stored outputs (besides the arrays' shapes)."""
    meta = {"version": CACHE_VERSION, "head_type": head_type, "num_instances": n,
            "input_size": list(plain_set.input_size), "udp": bool(getattr(plain_set, "use_udp", False)),
            "split_ratio": float(getattr(plain_set.codec, "split_ratio", 0.0) or 0.0)}
    if head_type != "paf":
        meta["flip_index"] = plain_set.meta.flip_index.tolist()
        return meta
    layout = plain_set.codec.layout
    m, sign = layout.limb_flip()
    # confidence-map channels of a flipped sample: mirrored joints, the background (last) in place
    meta.update({"stride": int(plain_set.codec.stride),
                 "flip_index": [int(i) for i in layout.flip_index] + [layout.num_joints],
                 "limb_flip": [int(i) for i in m], "limb_sign": [float(v) for v in sign]})
    return meta


@torch.no_grad()
def fill_cache(teacher: nn.Module, plain_set, directory: str | os.PathLike, *, batch_size: int = 64,
               workers: int = 0, device: torch.device | str = "cpu", progress: bool = False,
               extra_meta: dict | None = None) -> TeacherOutputCache:
    """Run `teacher` over every crop of `plain_set` (no augmentation) and write the cache folder."""
    directory = Path(directory)
    if plain_set.train:
        raise ValueError("fill_cache needs the un-augmented dataset (train=False); see plain_view()")
    head_type = teacher.head_type
    if head_type not in CACHED_HEADS:
        raise ValueError(f"teacher cache: a {head_type!r} teacher has no cached form ({' | '.join(CACHED_HEADS)})")
    tmp = directory.with_name(directory.name + f".tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    device = torch.device(device)
    loader = DataLoader(plain_set, batch_size=batch_size, shuffle=False, num_workers=workers)
    n = len(plain_set)
    arrays: dict[str, np.memmap] = {}
    # bottom-up: each image's plain affine, to compose with the sample's affine at training time
    plain_affine = np.zeros((n, 2, 3), dtype=np.float64) if head_type == "paf" else None
    for batch in tqdm(loader, desc="teacher cache", disable=not progress, dynamic_ncols=True):
        out = teacher(normalize_images(batch["image"].to(device)))
        idx = batch["index"].numpy()
        parts = _output_parts(out, head_type)
        if head_type == "paf" and not arrays:
            _check_paf_channels(parts, plain_set.codec)
        for name, value in parts.items():
            value = value.float().cpu().numpy()
            if name not in arrays:
                arrays[name] = np.memmap(tmp / f"{name}.f16", dtype=np.float16, mode="w+",
                                         shape=(n,) + value.shape[1:])
            arrays[name][idx] = value.astype(np.float16)
        if plain_affine is not None:
            plain_affine[idx] = batch["affine"].double().numpy()
    for arr in arrays.values():
        arr.flush()
    if plain_affine is not None:
        np.save(tmp / "plain_affine.npy", plain_affine)
    meta = _cache_meta(plain_set, head_type, n)
    meta.update({"arrays": {k: list(v.shape) for k, v in arrays.items()},
                 "created": time.strftime("%Y-%m-%d %H:%M:%S")})
    meta.update(extra_meta or {})
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    del arrays
    if directory.exists():      # another process finished first: keep theirs
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, directory)
    return TeacherOutputCache(directory)


def cache_directory(cache_dir: str | os.PathLike, teacher_cfg, dataset) -> Path:
    """The folder of (teacher, dataset)'s cache under `cache_dir`; complete when it holds meta.json."""
    return Path(cache_dir) / f"{teacher_cfg.model}_{cache_fingerprint(teacher_cfg, dataset)}"


def build_cache(teacher: nn.Module, teacher_cfg, train_set, directory: Path, *, batch_size: int = 64,
                workers: int = 0, device: torch.device | str = "cpu") -> None:
    """One teacher pass over `train_set`'s un-augmented crops into `directory` (one process builds it;
    `engine/build.py` makes the others wait)."""
    print(f"[posedistill] teacher cache: one teacher pass over {len(train_set)} un-augmented crops -> "
          f"{directory}", flush=True)
    t0 = time.perf_counter()
    fill_cache(teacher, plain_view(train_set), directory, batch_size=batch_size, workers=workers,
               device=device, progress=sys.stderr.isatty(),
               extra_meta={"teacher": teacher_cfg.model, "checkpoint": teacher_cfg.checkpoint})
    print(f"[posedistill] teacher cache built in {time.perf_counter() - t0:.1f}s", flush=True)


# --------------------------------------------------------------------------------------------------
# error of cached-and-warped targets against the online teacher


def _paf_cache_error(teacher: nn.Module, cache: TeacherOutputCache, loader, device: torch.device) -> dict[str, float]:
    """measure_cache_error's numbers for a PAF teacher (its docstring)."""
    sums = {name: [0.0, 0.0, 0] for name in ("maps", "joint_maps", "pafs")}     # |diff|, |online|, count
    for batch in loader:
        out = teacher(normalize_images(batch["image"].to(device)))
        on_maps, on_pafs = out[-1] if isinstance(out, list) else out
        ca_maps, ca_pafs = cache.targets(batch, device)
        for name, on, ca in (("maps", on_maps, ca_maps), ("joint_maps", on_maps[:, :-1], ca_maps[:, :-1]),
                             ("pafs", on_pafs, ca_pafs)):
            sums[name][0] += float((ca - on).abs().sum())
            sums[name][1] += float(on.abs().sum())
            sums[name][2] += on.numel()
    res = {}
    for name, (diff, ref, count) in sums.items():
        res[f"{name}_mean_abs_diff"] = diff / max(count, 1)
        res[f"{name}_rel_mean_abs_diff"] = diff / max(ref, 1e-12)
    return res


@torch.no_grad()
def measure_cache_error(teacher: nn.Module, cache: TeacherOutputCache, train_set, codec, *, samples: int = 256,
                        batch_size: int = 32, device: torch.device | str = "cpu", seed: int = 0) -> dict[str, float]:
    """Compare cached-and-warped teacher outputs with the teacher run online on the same augmented
    crops (`samples` random training samples). Returns:

    heatmaps: mean_abs_diff (per pixel), rel_mean_abs_diff (/ mean abs online output), peak_ratio
    (cached max / online max, per joint, median); both heads: keypoint distance in input pixels
    between the two decoded poses (mean / median / p90, all joints and labelled joints), and for
    scale the online teacher's own distance to the ground truth on the labelled joints.

    PAF teachers (bottom-up images): mean_abs_diff / rel_mean_abs_diff of the confidence maps
    (`maps_*`, background included), of the joint channels alone (`joint_maps_*`: the background,
    near 1 almost everywhere, dilutes the relative number) and of the fields (`pafs_*`); no
    decoded-pose distances."""
    device = torch.device(device)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train_set), generator=g)[:samples].tolist()
    loader = DataLoader(Subset(train_set, order), batch_size=batch_size, shuffle=False)
    if cache.head_type == "paf":
        return {"samples": float(len(order)), **_paf_cache_error(teacher, cache, loader, device)}
    dists, dists_lab, gt_err, abs_diff, abs_ref, peaks = [], [], [], 0.0, 0.0, []
    count = 0
    for batch in loader:
        online = teacher(normalize_images(batch["image"].to(device)))
        cached = cache.targets(batch, device)
        if cache.head_type == "heatmap":
            abs_diff += float((cached - online).abs().sum())
            abs_ref += float(online.abs().sum())
            count += online.numel()
            on_max = online.flatten(2).amax(-1)
            peaks.append((cached.flatten(2).amax(-1) / on_max.clamp_min(1e-6)).flatten().cpu())
            on_cpu, ca_cpu = online.cpu(), cached.cpu()
        else:
            on_cpu, ca_cpu = tuple(o.cpu() for o in online), tuple(c.cpu() for c in cached)
        kp_on, _ = codec.decode(on_cpu)
        kp_ca, _ = codec.decode(ca_cpu)
        d = np.linalg.norm(np.asarray(kp_on, dtype=np.float64) - np.asarray(kp_ca, dtype=np.float64), axis=-1)
        dists.append(d.ravel())
        labelled = batch["target_weight"].numpy() > 0
        dists_lab.append(d[labelled])
        gt = batch["keypoints"].numpy()[..., :2].astype(np.float64)
        gt_err.append(np.linalg.norm(np.asarray(kp_on, dtype=np.float64) - gt, axis=-1)[labelled])
    d_all, d_lab = np.concatenate(dists), np.concatenate(dists_lab)
    res = {"samples": float(len(order)),
           "kp_dist_mean_px": float(d_all.mean()), "kp_dist_median_px": float(np.median(d_all)),
           "kp_dist_p90_px": float(np.percentile(d_all, 90)),
           "kp_dist_labelled_mean_px": float(d_lab.mean()) if d_lab.size else float("nan"),
           "kp_dist_labelled_median_px": float(np.median(d_lab)) if d_lab.size else float("nan"),
           # for scale: how far the online teacher itself is from the ground truth on the same joints
           "teacher_vs_gt_labelled_mean_px": float(np.concatenate(gt_err).mean()) if d_lab.size else float("nan")}
    if cache.head_type == "heatmap":
        res.update({"mean_abs_diff": abs_diff / max(count, 1), "rel_mean_abs_diff": abs_diff / max(abs_ref, 1e-12),
                    "peak_ratio_median": float(torch.cat(peaks).median())})
    return res
