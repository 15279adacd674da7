"""Part-Affinity-Field codec (seed 004: Kato et al., "Improving Multi-Person Pose Estimation using
Label Correction", on CMU-Pose, Cao et al. CVPR 2017): bottom-up training targets for all people of
an image, and people back from a network's maps.

Layout (`PafLayout`): the extended keypoint set (the source set, plus a neck made from two source
joints when asked) and its limbs. `coco_paf_layout()` is CMU-Pose's: COCO's 17 joints in COCO order,
the neck appended as index 17 (midpoint of the shoulders, labelled only when both are), and CMU's 19
limbs (reference-notes, "Bottom-up PAF": `limbSeq`, 1-indexed in CMU's own joint order) translated
to that order by `_CMU_TO_COCO`. `paf_layout_from_meta` builds one from any `KeypointMeta`, its
skeleton being the limbs.

Channels: confidence maps = one per extended joint, in layout order, then the background
(1 - max of the joint channels); PAFs interleaved, x then y per limb: channel 2l = x, 2l + 1 = y of
limb l, pointing from the limb's first joint to its second.

Coordinates (CMU's confidence-map convention): output pixel u is centred on input pixel
(u + 0.5) * stride - 0.5, i.e. an input point x sits at output (x + 0.5) / stride - 0.5. This is
also OpenCV's resize convention, so `upsample` (bicubic, by `stride`) lands on input pixels, and a
horizontal flip of an input of width w * stride is exactly a flip of the output arrays (no shift,
unlike `HeatmapCodec`). Both the Gaussians and the limbs use it.

Encoding (`encode_people`), per labelled joint (v > 0, finite) of each person, labelled joints
outside the input included (their tails and limbs still reach into it):
* confidence map exp(-d^2 / (2 sigma^2)), sigma in input pixels (7, CMU), d the distance from the
  pixel centre, combined over people by max (CMU; a sum would raise two close joints above 1);
* PAF of a limb whose two ends are labelled and distinct: the unit vector from its first to its
  second joint at output pixels p with 0 <= (p - a) . v <= |b - a| and |(p - a) x v| <= limb_width
  (output pixels, 1 as CMU), the paper's region; where several people's limbs of one type cover a
  pixel, the mean of their vectors (count-based, as CMU), so two opposite collinear limbs cancel.
  A limb shorter than an output pixel (eye - nose, ~3% of a person's height, is for people under
  ~250 input px tall at stride 8) may cover no pixel centre and then has no field, so nothing can
  group its joint (the paper's region is kept all the same: it defines the targets it trains on);
* mask: 1 where the pixel counts in the loss, 0 where any input pixel of its stride x stride block
  is in the ignore mask (crowd / unlabelled people): an unlabelled person partly inside a block is
  not penalised, and the loss code of the paper's authors' group is as conservative (it resizes the
  mask to the output and ignores every pixel where it is > 0: `train_coco_pose_estimation.py`,
  nk35jk/Chainer_Realtime_Multi-Person_Pose_Estimation).

Decoding (`decode`): `grouping.group_people` (peak finding, PAF line integrals, greedy matching,
assembly; constants and sources there) on the output grid, then (x, y) back to input pixels and the
neck dropped. Default `upsample=False`: peaks are refined to sub-pixel and the fields read by
bilinear interpolation on the stride-8 grid, which decodes ground truth exactly with 64x fewer
pixels to search (tests/test_codecs_grouping.py: COCO OKS AP 1.0). `upsample=True` first resizes all
maps by `stride` with bicubic interpolation, as CMU's test code does (its python demo then also
smooths the keypoint maps with a Gaussian of sigma 3 before peak finding; not done here).

Flip (`flip_back`): maps of the mirrored input -> maps of the input: flip along W, swap left/right
joint channels, put each limb's field in the channel of its mirror limb (negated when the mirror
limb runs the other way, e.g. COCO's left_hip -> right_hip) and negate the x components.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch

from posedistill.codecs.grouping import GroupingParams, group_people
from posedistill.keypoints import COCO, KeypointMeta

__all__ = ["PafLayout", "PafCodec", "coco_paf_layout", "paf_layout_from_meta"]

Array = np.ndarray

# CMU-Pose's 19 limbs (reference-notes, "Bottom-up PAF", from the public CMU code), 1-indexed in CMU's
# joint order: 1 nose, 2 neck, 3-5 right shoulder / elbow / wrist, 6-8 left ones, 9-11 right hip /
# knee / ankle, 12-14 left ones, 15 right eye, 16 left eye, 17 right ear, 18 left ear.
_CMU_LIMBS = ((2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13),
              (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18), (3, 17), (6, 18))
# CMU joint n (1-based) -> index in our order (COCO's 17 in COCO order, neck = 17).
_CMU_TO_COCO = (0, 17, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
_COCO_SHOULDERS = (5, 6)


@dataclass(frozen=True)
class PafLayout:
    """Joints and limbs of a PAF codec.

    joints: names of the extended set; limbs: (from, to) 0-based indices in it, one PAF each;
    source_to_extended: extended index of each source joint (the keypoints `encode_people` reads);
    flip_pairs: (left, right) pairs in the extended set; neck: extended index of the made neck or None;
    neck_from: the two source joints whose midpoint it is (labelled only when both are)."""
    joints: tuple[str, ...]
    limbs: tuple[tuple[int, int], ...]
    source_to_extended: tuple[int, ...]
    flip_pairs: tuple[tuple[int, int], ...] = ()
    neck: int | None = None
    neck_from: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        k, src = len(self.joints), list(self.source_to_extended)
        made = [] if self.neck is None else [self.neck]
        if sorted(src + made) != list(range(k)):
            raise ValueError(f"PafLayout: source_to_extended {src} and neck {self.neck} must cover the "
                             f"{k} joints 0..{k - 1} once each")
        if (self.neck is None) != (self.neck_from is None):
            raise ValueError("PafLayout: neck and neck_from go together (both None or both set)")
        if self.neck_from is not None and not all(0 <= i < len(src) for i in self.neck_from):
            raise ValueError(f"PafLayout: neck_from {self.neck_from} must be two source joints 0..{len(src) - 1}")
        for what, pairs in (("limbs", self.limbs), ("flip_pairs", self.flip_pairs)):
            bad = [p for p in pairs if len(p) != 2 or not all(0 <= i < k for i in p) or p[0] == p[1]]
            if bad:
                raise ValueError(f"PafLayout: {what} entry {bad[0]} is not two different joints 0..{k - 1}")

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @property
    def num_limbs(self) -> int:
        return len(self.limbs)

    @property
    def flip_index(self) -> Array:
        """Joint permutation p with flipped[..., j] = original[..., p[j]] (extended set)."""
        perm = np.arange(self.num_joints)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def limb_flip(self) -> tuple[Array, Array]:
        """(m, sign): limb l of a mirrored image is limb m[l] of the original, running the same way
        (sign 1) or the other way (-1). ValueError when a limb has no mirror in `limbs`."""
        p = self.flip_index
        where = {limb: i for i, limb in enumerate(self.limbs)}
        m, sign = np.zeros(self.num_limbs, np.intp), np.ones(self.num_limbs)
        for i, (a, b) in enumerate(self.limbs):
            if (p[a], p[b]) in where:
                m[i] = where[(p[a], p[b])]
            elif (p[b], p[a]) in where:
                m[i], sign[i] = where[(p[b], p[a])], -1.0
            else:
                raise ValueError(f"PafLayout: limb {self.joints[a]} -> {self.joints[b]} has no mirror limb "
                                 f"({self.joints[p[a]]} - {self.joints[p[b]]}), so flip_back cannot map it")
        return m, sign


def coco_paf_layout() -> PafLayout:
    """CMU-Pose's layout: COCO's 17 joints + neck (index 17) = 18, and CMU's 19 limbs."""
    limbs = tuple((_CMU_TO_COCO[a - 1], _CMU_TO_COCO[b - 1]) for a, b in _CMU_LIMBS)
    return PafLayout(joints=COCO.joints + ("neck",), limbs=limbs, source_to_extended=tuple(range(17)),
                     flip_pairs=COCO.flip_pairs, neck=17, neck_from=_COCO_SHOULDERS)


def paf_layout_from_meta(meta: KeypointMeta, neck_from: tuple[int, int] | None = None) -> PafLayout:
    """A layout for any keypoint set: its joints in its order, its skeleton as limbs. With
    `neck_from` (two joint indices), a neck is appended with limbs neck -> each of the two first
    (otherwise nothing would link it to the rest)."""
    k = meta.num_joints
    joints, limbs = tuple(meta.joints), tuple(tuple(int(i) for i in p) for p in meta.skeleton)
    if neck_from is None:
        return PafLayout(joints=joints, limbs=limbs, source_to_extended=tuple(range(k)),
                         flip_pairs=tuple(meta.flip_pairs))
    pair = tuple(int(i) for i in neck_from)
    if len(pair) != 2 or pair[0] == pair[1] or not all(0 <= i < k for i in pair):
        raise ValueError(f"paf_layout_from_meta: neck_from must be two different joints 0..{k - 1} of "
                         f"{meta.name!r}, got {neck_from!r}")
    return PafLayout(joints=joints + ("neck",), limbs=((k, pair[0]), (k, pair[1])) + limbs,
                     source_to_extended=tuple(range(k)), flip_pairs=tuple(meta.flip_pairs),
                     neck=k, neck_from=pair)


def _numpy_maps(x, name: str, ndim: int = 3) -> Array:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == ndim + 1 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != ndim:
        raise ValueError(f"PafCodec.decode: {name} must be [C, h, w] (or [1, C, h, w]), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"PafCodec.decode: {name} contains NaN or infinite values")
    return x


def _upsample(maps: Array, factor: int) -> Array:
    """[C, h, w] -> [C, h * factor, w * factor] float32, bicubic (OpenCV), one map at a time (no
    channel-last copies)."""
    c, h, w = maps.shape
    out = np.empty((c, h * factor, w * factor), dtype=np.float32)
    for i in range(c):
        out[i] = cv2.resize(maps[i], (w * factor, h * factor), interpolation=cv2.INTER_CUBIC)
    return out


class PafCodec:
    """Confidence maps + PAFs + loss mask for all people of an image; people from maps (module docstring).

    layout: joints and limbs (default `coco_paf_layout()`); input_size: (width, height) of the
    network input, multiples of `stride`; sigma: Gaussian std in input pixels; limb_width: PAF
    half-width in output pixels; upsample: decode's default (see the module docstring);
    grouping: decoding constants (`GroupingParams`, defaults from CMU / OpenPose)."""

    target_keys = ("confidence_maps", "pafs", "mask")

    def __init__(self, layout: PafLayout | None = None, input_size: Sequence[int] = (368, 368), stride: int = 8,
                 sigma: float = 7.0, limb_width: float = 1.0, upsample: bool = False,
                 grouping: GroupingParams | None = None):
        self.layout = coco_paf_layout() if layout is None else layout
        if not isinstance(self.layout, PafLayout):
            raise ValueError(f"PafCodec: layout must be a PafLayout, got {type(layout).__name__}")
        if int(stride) != stride or int(stride) < 1:
            raise ValueError(f"PafCodec: stride must be a positive integer, got {stride!r}")
        self.stride = int(stride)
        try:
            w, h = (int(v) for v in input_size)
        except (TypeError, ValueError):
            raise ValueError(f"PafCodec: input_size must be (width, height), got {input_size!r}") from None
        if w < 1 or h < 1 or w % self.stride or h % self.stride:
            raise ValueError(f"PafCodec: input_size must be positive multiples of stride {self.stride}, "
                             f"got {input_size!r}")
        if not float(sigma) > 0 or not float(limb_width) > 0:
            raise ValueError(f"PafCodec: sigma and limb_width must be > 0, got {sigma!r}, {limb_width!r}")
        self.input_size = (w, h)
        self.heatmap_size = (w // self.stride, h // self.stride)
        self.sigma = float(sigma)
        self.limb_width = float(limb_width)
        self.upsample = bool(upsample)
        self.grouping = GroupingParams() if grouping is None else grouping

    def __repr__(self) -> str:
        return (f"PafCodec(joints={self.layout.num_joints}, limbs={self.layout.num_limbs}, "
                f"input_size={self.input_size}, stride={self.stride}, sigma={self.sigma}, "
                f"limb_width={self.limb_width}, upsample={self.upsample})")

    @property
    def num_confidence_maps(self) -> int:
        return self.layout.num_joints + 1

    @property
    def num_pafs(self) -> int:
        return 2 * self.layout.num_limbs

    # ------------------------------------------------------------------ encode
    def _extended(self, keypoints) -> tuple[Array, Array]:
        """[P, K_src, 3] input pixels -> (output-grid (x, y) float64 [P, K, 2], labelled bool [P, K])."""
        kps = np.asarray(keypoints, dtype=np.float64)
        k_src = len(self.layout.source_to_extended)
        if kps.ndim == 2 and kps.shape[0] == 0:
            kps = kps.reshape(0, k_src, 3)
        if kps.ndim != 3 or kps.shape[1:] != (k_src, 3):
            raise ValueError(f"PafCodec.encode_people: keypoints must be [P, {k_src}, 3] (x, y, visibility) "
                             f"in input pixels, got shape {kps.shape}")
        p = kps.shape[0]
        xy = np.zeros((p, self.layout.num_joints, 2))
        vis = np.zeros((p, self.layout.num_joints), dtype=bool)
        src = list(self.layout.source_to_extended)
        xy[:, src] = kps[..., :2]
        vis[:, src] = (kps[..., 2] > 0) & np.isfinite(kps[..., :2]).all(axis=-1)
        if self.layout.neck is not None:
            i, j = self.layout.neck_from
            xy[:, self.layout.neck] = 0.5 * (xy[:, src[i]] + xy[:, src[j]])
            vis[:, self.layout.neck] = vis[:, src[i]] & vis[:, src[j]]
        xy = np.where(vis[..., None], (xy + 0.5) / self.stride - 0.5, 0.0)
        return xy, vis

    def _confidence_maps(self, xy: Array, vis: Array) -> Array:
        w, h = self.heatmap_size
        s = self.sigma / self.stride                          # std in output pixels
        gx = np.exp(-0.5 * ((np.arange(w) - xy[..., 0, None]) / s) ** 2) * vis[..., None]   # [P, K, w]
        gy = np.exp(-0.5 * ((np.arange(h) - xy[..., 1, None]) / s) ** 2) * vis[..., None]   # [P, K, h]
        maps = np.zeros((self.layout.num_joints + 1, h, w), dtype=np.float32)
        for person in range(xy.shape[0]):                     # max over people, one person at a time
            np.maximum(maps[:-1], (gy[person, :, :, None] * gx[person, :, None, :]).astype(np.float32),
                       out=maps[:-1])
        maps[-1] = 1.0 - maps[:-1].max(axis=0)
        return maps

    def _pafs(self, xy: Array, vis: Array) -> Array:
        w, h = self.heatmap_size
        gx, gy = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)[:, None]
        pafs = np.zeros((self.num_pafs, h, w), dtype=np.float32)
        for l, (ja, jb) in enumerate(self.layout.limbs):      # all people of one limb type at once
            ok = vis[:, ja] & vis[:, jb]
            a, d = xy[ok, ja], xy[ok, jb] - xy[ok, ja]       # [n, 2]
            length = np.sqrt((d * d).sum(axis=1))
            a, d, length = a[length > 0], d[length > 0], length[length > 0]
            if not len(length):
                continue
            v = d / length[:, None]
            rx = gx - a[:, 0, None, None]                     # [n, 1, w]
            ry = gy - a[:, 1, None, None]                     # [n, h, 1]
            along = rx * v[:, 0, None, None] + ry * v[:, 1, None, None]
            across = np.abs(rx * v[:, 1, None, None] - ry * v[:, 0, None, None])
            inside = ((along >= 0) & (along <= length[:, None, None]) & (across <= self.limb_width))
            inside = inside.reshape(len(v), -1).astype(np.float64)
            count = inside.sum(axis=0)
            total = v.T @ inside                              # [2, h * w]
            pafs[2 * l:2 * l + 2] = (total / np.maximum(count, 1.0)).reshape(2, h, w)
        return pafs

    def _mask(self, ignore_mask) -> Array:
        w, h = self.heatmap_size
        if ignore_mask is None:
            return np.ones((1, h, w), dtype=np.float32)
        m = np.asarray(ignore_mask)
        if m.shape != (self.input_size[1], self.input_size[0]):
            raise ValueError(f"PafCodec.encode_people: ignore_mask must be [H_in, W_in] = "
                             f"[{self.input_size[1]}, {self.input_size[0]}] (True = ignore), got shape {m.shape}")
        s = self.stride
        ignored = (m != 0).reshape(h, s, w, s).any(axis=(1, 3))
        return (~ignored).astype(np.float32)[None]

    def encode_people(self, keypoints, ignore_mask=None) -> dict[str, Array]:
        """keypoints [P, K_src, 3] (x, y, visibility; v > 0 = labelled) in input pixels, ignore_mask
        bool [H_in, W_in] (True = ignore) or None -> {"confidence_maps": float32 [K + 1, h, w],
        "pafs": float32 [2L, h, w], "mask": float32 [1, h, w] (1 = counts in the loss)}."""
        xy, vis = self._extended(keypoints)
        return {"confidence_maps": self._confidence_maps(xy, vis), "pafs": self._pafs(xy, vis),
                "mask": self._mask(ignore_mask)}

    # ------------------------------------------------------------------ decode
    def decode(self, confidence_maps, pafs, upsample: bool | None = None) -> tuple[Array, Array]:
        """One image's maps (confidence_maps [K + 1 or K, h, w], pafs [2L, h, w]; [1, ...] or tensors
        accepted; any h, w) -> (keypoints float32 [P, K_src, 3] = (x, y, score) in input pixels,
        0 for joints not found; person scores float32 [P]), best first. `upsample`: None = the codec's."""
        cm = _numpy_maps(confidence_maps, "confidence_maps")
        pf = _numpy_maps(pafs, "pafs")
        k = self.layout.num_joints
        if cm.shape[0] not in (k, k + 1):
            raise ValueError(f"PafCodec.decode: confidence_maps has {cm.shape[0]} channels, expected {k + 1} "
                             f"({k} joints + background) or {k}")
        if pf.shape[0] != self.num_pafs or pf.shape[1:] != cm.shape[1:]:
            raise ValueError(f"PafCodec.decode: pafs must be [{self.num_pafs}, {cm.shape[1]}, {cm.shape[2]}] "
                             f"(2 x {self.layout.num_limbs} limbs, the maps' size), got shape {pf.shape}")
        up = self.upsample if upsample is None else bool(upsample)
        cm = cm[:k]
        if up and self.stride > 1:
            cm, pf = _upsample(cm, self.stride), _upsample(pf, self.stride)
        people, scores = group_people(cm, pf, self.layout.limbs, self.grouping)
        found = people[..., 2] > 0
        xy = people[..., :2] if up else (people[..., :2] + 0.5) * self.stride - 0.5
        people[..., :2] = np.where(found[..., None], xy, 0.0)
        out = people[:, list(self.layout.source_to_extended)]
        return np.ascontiguousarray(out, dtype=np.float32), scores.astype(np.float32)

    # ------------------------------------------------------------------ flip
    def flip_back(self, confidence_maps, pafs):
        """(confidence_maps, pafs) of the horizontally mirrored input ([C, h, w] or [B, C, h, w],
        arrays or tensors) -> the same for the input itself (module docstring). An involution."""
        k, n = self.layout.num_joints, self.num_pafs
        if confidence_maps.ndim not in (3, 4) or confidence_maps.shape[-3] not in (k, k + 1):
            raise ValueError(f"PafCodec.flip_back: confidence_maps must be [(B,) {k + 1} or {k}, h, w], "
                             f"got shape {tuple(confidence_maps.shape)}")
        if pafs.ndim != confidence_maps.ndim or pafs.shape[-3] != n:
            raise ValueError(f"PafCodec.flip_back: pafs must be [(B,) {n}, h, w] like confidence_maps, "
                             f"got shape {tuple(pafs.shape)}")
        cm_idx = np.concatenate([self.layout.flip_index, np.arange(k, confidence_maps.shape[-3])])
        m, sign = self.layout.limb_flip()
        paf_idx = np.stack([2 * m, 2 * m + 1], axis=1).reshape(-1)
        paf_sign = np.stack([-sign, sign], axis=1).reshape(-1)           # x negated by the mirror
        if isinstance(confidence_maps, torch.Tensor):
            dev = confidence_maps.device
            cm = confidence_maps.flip(-1)[..., torch.as_tensor(cm_idx, device=dev), :, :]
            pf = pafs.flip(-1)[..., torch.as_tensor(paf_idx, device=dev), :, :]
            return cm, pf * torch.as_tensor(paf_sign, dtype=pf.dtype, device=dev)[:, None, None]
        cm = np.asarray(confidence_maps)[..., cm_idx, :, ::-1]
        pf = np.asarray(pafs)[..., paf_idx, :, ::-1] * paf_sign[:, None, None].astype(np.asarray(pafs).dtype)
        return np.ascontiguousarray(cm), np.ascontiguousarray(pf)
