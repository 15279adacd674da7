"""What `predict` reads and writes: an image, a folder, a glob or a video in; drawn pictures or an .mp4,
and COCO-results JSON out.

Images are decoded with OpenCV; a file that does not decode is skipped, counted and named (never the
end of the run). Videos are read and written with OpenCV (`mp4v` FourCC for .mp4), frame for frame.
"""
from __future__ import annotations

import glob
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from posedistill.errors import InputError, MissingFileError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass
class Frame:
    name: str                     # file name, or "<video stem>_<frame index>" for a video frame
    path: str                     # the file read
    index: int                    # position in the source (frame number for a video)
    image: np.ndarray | None      # BGR uint8, None when the file would not decode
    image_id: int                 # COCO image id: a numeric file stem (000000397133.jpg -> 397133), else `index`
    video: bool = False


@dataclass
class Source:
    """Images of a file / folder / glob, or the frames of a video."""
    spec: str
    paths: list[str] = field(default_factory=list)
    video: str = ""
    fps: float = 0.0
    frame_count: int = 0
    size: tuple[int, int] = (0, 0)   # video frame (width, height)

    def __len__(self) -> int:
        return self.frame_count if self.video else len(self.paths)

    def frames(self) -> Iterator[Frame]:
        if self.video:
            yield from _video_frames(self.video)
            return
        for i, path in enumerate(self.paths):
            image = cv2.imread(path, cv2.IMREAD_COLOR)
            stem = Path(path).stem
            yield Frame(os.path.basename(path), path, i, image, int(stem) if stem.isascii() and stem.isdigit() else i)


def _video_frames(path: str) -> Iterator[Frame]:
    cap = cv2.VideoCapture(path)
    stem = Path(path).stem
    try:
        i = 0
        while True:
            ok, image = cap.read()
            if not ok:
                break
            yield Frame(f"{stem}_{i:06d}", path, i, image, i, video=True)
            i += 1
    finally:
        cap.release()


def open_source(spec: str) -> Source:
    """An image file, a video file (by suffix), a folder (its images, sorted) or a glob pattern."""
    path = Path(spec)
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise InputError(f"{spec}: OpenCV could not open this video")
        src = Source(spec, video=str(path), fps=float(cap.get(cv2.CAP_PROP_FPS) or 25.0),
                     frame_count=int(cap.get(cv2.CAP_PROP_FRAME_COUNT)),
                     size=(int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))))
        cap.release()
        return src
    if path.is_file():
        return Source(spec, paths=[str(path)])
    if path.is_dir():
        paths = sorted(str(p) for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        what = f"folder {spec} holds no images ({', '.join(IMAGE_SUFFIXES)})"
    else:
        paths = sorted(p for p in glob.glob(spec, recursive=True) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
        what = f"{spec}: no such file or folder, and no image matches it as a glob pattern"
    if not paths:
        raise MissingFileError(what)
    return Source(spec, paths=paths)


def coco_result(person: dict, frame: Frame, category_id: int = 1) -> dict:
    """One person in COCO keypoint-results format, with the file name (and the frame, track) added."""
    out = {"image_id": frame.image_id, "file_name": os.path.basename(frame.path), "category_id": category_id,
           "keypoints": [round(float(v), 2) for v in np.asarray(person["keypoints"]).reshape(-1)],
           "score": round(float(person["score"]), 4),
           "bbox": [round(float(v), 2) for v in np.asarray(person["box"]).reshape(-1)[:4]]}
    if frame.video:
        out["frame"] = frame.index
    if "track_id" in person:
        out["track_id"] = int(person["track_id"])
    return out


def write_json(obj, path: str | Path) -> Path:
    """JSON written atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)
    return path


class VideoOut:
    """Frames written to an .mp4 (OpenCV `mp4v`) at the source's rate and size."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self.writer = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*"mp4v"), fps or 25.0, tuple(size))
        if not self.writer.isOpened():
            raise InputError(f"{path}: OpenCV could not open an mp4v video writer")
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        self.writer.write(image)
        self.frames += 1

    def close(self) -> None:
        self.writer.release()


def warn_skipped(frame: Frame) -> None:
    warnings.warn(f"{frame.path}: not a readable image, skipped", stacklevel=2)
