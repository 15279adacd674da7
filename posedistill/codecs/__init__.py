"""Codecs: training targets in, keypoints out. Networks know nothing about them.

Every codec follows the `Codec` protocol below (architecture.md, "Codec"), so datasets, the
training loop and evaluation work with any of them, including a later part-affinity-field codec
for bottom-up models.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from posedistill.codecs.coords import CoordinateCodec
from posedistill.codecs.grouping import GroupingParams, group_people
from posedistill.codecs.heatmap import HeatmapCodec
from posedistill.codecs.paf import PafCodec, PafLayout, coco_paf_layout, paf_layout_from_meta
from posedistill.codecs.simcc import SimCCCodec

__all__ = ["Codec", "CoordinateCodec", "HeatmapCodec", "SimCCCodec",
           "PafCodec", "PafLayout", "coco_paf_layout", "paf_layout_from_meta", "GroupingParams", "group_people"]


@runtime_checkable
class Codec(Protocol):
    """What a codec provides.

    target_keys: keys `encode` returns besides "target_weight".
    encode(keypoints [K, 2] crop pixels, visible [K]) -> {key: array, ..., "target_weight": float32 [K]}.
    decode(model output) -> (keypoints float32 [B, K, 2] crop pixels, scores float32 [B, K]).
    flip_back(output of the flipped crop, flip_index) -> output aligned with the unflipped crop.
    """

    target_keys: tuple[str, ...]

    def encode(self, keypoints: np.ndarray, visible: np.ndarray) -> dict[str, np.ndarray]: ...

    def decode(self, output: Any) -> tuple[np.ndarray, np.ndarray]: ...

    def flip_back(self, output: Any, flip_index: Any) -> Any: ...
