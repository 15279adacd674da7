"""Keypoint metadata for the datasets the toolkit reads.

One `KeypointMeta` per skeleton: joint names, left/right flip pairs, limbs for drawing and
skeleton losses, OKS sigmas for evaluation, per-joint loss weights and the upper/lower-body split
used by half-body augmentation. Everything else (datasets, codecs, metrics, drawing) takes a
`KeypointMeta` rather than hard-coding a joint order.

Sources: COCO sigmas and skeleton from pycocotools / the COCO annotation files; COCO joint
weights from the official HRNet config (`w32_256x192_adam_lr1e-3.yaml`); CrowdPose sigmas from
xtcocotools; MPII order from the HRNet/SimpleBaseline `mpii.py`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from posedistill.errors import InputError, UnknownNameError


# Built-in sets, which must carry a sigma per joint; any other name is a custom set read from a file.
DATASET_NAMES = ("coco", "crowdpose", "mpii")


@dataclass(frozen=True)
class KeypointMeta:
    name: str                                  # dataset name: "coco", "crowdpose", "mpii"
    joints: tuple[str, ...]                    # joint names in annotation order
    flip_pairs: tuple[tuple[int, int], ...]    # (left, right) index pairs swapped by a horizontal flip
    skeleton: tuple[tuple[int, int], ...]      # limbs as 0-based joint index pairs
    sigmas: tuple[float, ...]                  # OKS per-joint falloff (COCO evaluation constants)
    joint_weights: tuple[float, ...]           # per-joint weight for heatmap losses
    upper_body: tuple[int, ...]                # joints used for the upper half in half-body augmentation

    def __post_init__(self) -> None:
        k = len(self.joints)
        # A custom set may train without OKS sigmas; evaluation asks for them (`require_sigmas`).
        sigmas_optional = self.sigmas == () and self.name not in DATASET_NAMES
        for field in ("joint_weights",) if sigmas_optional else ("sigmas", "joint_weights"):
            if len(getattr(self, field)) != k:
                raise InputError(f"KeypointMeta {self.name!r}: {field} has {len(getattr(self, field))} "
                                 f"entries, expected {k} (one per joint)")
        for a, b in self.flip_pairs + self.skeleton:
            if not (0 <= a < k and 0 <= b < k):
                raise InputError(f"KeypointMeta {self.name!r}: joint index pair ({a}, {b}) out of range 0..{k - 1}")

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @property
    def lower_body(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.num_joints) if i not in self.upper_body)

    @property
    def flip_index(self) -> np.ndarray:
        """Permutation p such that flipped[..., j] = original[..., p[j]] after a horizontal flip."""
        perm = np.arange(self.num_joints)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def index(self, joint: str) -> int:
        return self.joints.index(joint)

    def require_sigmas(self, where: str) -> None:
        """OKS needs one sigma per joint: a custom keypoint set must give `data.keypoint_sigmas`."""
        if len(self.sigmas) != self.num_joints:
            raise InputError(f"{where}: keypoint set {self.name!r} has no OKS sigmas; set data.keypoint_sigmas "
                             f"to {self.num_joints} numbers (one per joint: {', '.join(self.joints)})")

    def to_dict(self) -> dict:
        """Plain lists and strings (checkpoints load `weights_only`); inverse of `meta_from_dict`."""
        return {"name": self.name, "joints": list(self.joints),
                "flip_pairs": [list(p) for p in self.flip_pairs], "skeleton": [list(p) for p in self.skeleton],
                "sigmas": list(self.sigmas), "joint_weights": list(self.joint_weights),
                "upper_body": list(self.upper_body)}


COCO = KeypointMeta(
    name="coco",
    joints=("nose", "left_eye", "right_eye", "left_ear", "right_ear",
            "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
            "left_wrist", "right_wrist", "left_hip", "right_hip",
            "left_knee", "right_knee", "left_ankle", "right_ankle"),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    # COCO's own skeleton (1-based in the annotation file), converted to 0-based.
    skeleton=((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
              (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6)),
    sigmas=(.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062,
            .107, .107, .087, .087, .089, .089),
    joint_weights=(1., 1., 1., 1., 1., 1., 1., 1.2, 1.2, 1.5, 1.5, 1., 1., 1.2, 1.2, 1.5, 1.5),
    upper_body=tuple(range(11)),
)

CROWDPOSE = KeypointMeta(
    name="crowdpose",
    joints=("left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
            "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
            "head_top", "neck"),
    flip_pairs=((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11)),
    skeleton=((12, 13), (13, 0), (13, 1), (0, 2), (2, 4), (1, 3), (3, 5), (0, 6), (1, 7),
              (6, 7), (6, 8), (8, 10), (7, 9), (9, 11)),
    sigmas=(.079, .079, .072, .072, .062, .062, .107, .107, .087, .087, .089, .089, .079, .079),
    # CrowdPose has no official loss weights; these mirror COCO's (elbows/knees 1.2, wrists/ankles 1.5).
    joint_weights=(1., 1., 1.2, 1.2, 1.5, 1.5, 1., 1., 1.2, 1.2, 1.5, 1.5, 1., 1.),
    upper_body=(0, 1, 2, 3, 4, 5, 12, 13),
)

MPII = KeypointMeta(
    name="mpii",
    joints=("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
            "pelvis", "thorax", "upper_neck", "head_top",
            "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist"),
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    skeleton=((0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
              (7, 12), (12, 11), (11, 10), (7, 13), (13, 14), (14, 15)),
    # MPII has no OKS sigmas of its own; these are MMPose's choice (used only if someone runs OKS on MPII).
    sigmas=(.089, .083, .107, .107, .083, .089, .026, .026, .026, .026, .062, .072, .179, .179, .072, .062),
    joint_weights=(1.5, 1.2, 1., 1., 1.2, 1.5, 1., 1., 1., 1., 1.5, 1.2, 1., 1., 1.2, 1.5),
    upper_body=(7, 8, 9, 10, 11, 12, 13, 14, 15),
)

DATASETS: dict[str, KeypointMeta] = {m.name: m for m in (COCO, CROWDPOSE, MPII)}


def get_meta(name: str) -> KeypointMeta:
    """Metadata by dataset name; an unknown name lists the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise UnknownNameError(f"unknown keypoint set {name!r}; known: {sorted(DATASETS)}") from None


def meta_from_dict(d: dict) -> KeypointMeta:
    """A KeypointMeta from `KeypointMeta.to_dict()` output (as stored in checkpoints and ONNX files)."""
    pairs = lambda key: tuple(tuple(int(i) for i in p) for p in d.get(key, ()))  # noqa: E731
    return KeypointMeta(name=str(d["name"]), joints=tuple(str(j) for j in d["joints"]),
                        flip_pairs=pairs("flip_pairs"), skeleton=pairs("skeleton"),
                        sigmas=tuple(float(x) for x in d.get("sigmas", ())),
                        joint_weights=tuple(float(x) for x in d["joint_weights"]),
                        upper_body=tuple(int(i) for i in d.get("upper_body", ())))


_SIDES = (("left_", "right_"), ("left-", "right-"), ("l_", "r_"), ("left", "right"))


def infer_flip_pairs(joints: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """(left, right) index pairs from joint names that differ only by a left/right prefix
    (`left_eye` / `right_eye`, `l_paw` / `r_paw`, `leftEar` / `rightEar`); case-insensitive."""
    lower = [j.lower() for j in joints]
    pairs = []
    for i, name in enumerate(lower):
        for left, right in _SIDES:
            if name.startswith(left):
                twin = right + name[len(left):]
                if twin in lower:
                    pairs.append((i, lower.index(twin)))
                break
    return tuple(pairs)


def meta_from_category(category: dict, *, name: str, where: str, sigmas: Sequence[float] = (),
                       flip_pairs: Sequence[Sequence[str]] = (), joint_weights: Sequence[float] = (),
                       upper_body: Sequence[str] = ()) -> KeypointMeta:
    """The KeypointMeta of a COCO-format category with its own `keypoints` (names) and `skeleton`
    (1-based pairs, COCO's convention). Flip pairs are given by name or, when not given, found from
    left/right names; joint weights default to 1; without `upper_body` names half-body augmentation
    does nothing. `where` names the file / config key in errors."""
    joints = category.get("keypoints")
    if not isinstance(joints, list) or not joints or not all(isinstance(j, str) for j in joints):
        raise InputError(f"{where}: category 'keypoints' must be a non-empty list of joint names")
    joints = tuple(joints)
    skeleton = category.get("skeleton", [])
    bad = [p for p in skeleton if not (isinstance(p, list) and len(p) == 2
                                       and all(isinstance(i, int) and 1 <= i <= len(joints) for i in p))]
    if bad:
        raise InputError(f"{where}: category 'skeleton' entries must be [a, b] with 1-based joint indices "
                         f"1..{len(joints)}; got {bad[0]!r}")

    def index_of(joint: str, key: str) -> int:
        if joint not in joints:
            raise InputError(f"{where}: {key} names joint {joint!r}, which is not one of {list(joints)}")
        return joints.index(joint)

    pairs = (tuple((index_of(a, "data.flip_pairs"), index_of(b, "data.flip_pairs")) for a, b in flip_pairs)
             if flip_pairs else infer_flip_pairs(joints))
    return KeypointMeta(name=name, joints=joints, flip_pairs=pairs,
                        skeleton=tuple((a - 1, b - 1) for a, b in skeleton),
                        sigmas=tuple(float(s) for s in sigmas),
                        joint_weights=tuple(float(w) for w in joint_weights) or (1.0,) * len(joints),
                        upper_body=tuple(index_of(j, "data.upper_body") for j in upper_body))
