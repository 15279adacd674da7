"""The fuzz targets and the contract they check; used by run.py (atheris) and test_regressions.py.
(The checks that need only the C extension are in contract.py.)

Every target takes the raw bytes of one input and either returns (the input decoded, or it was
rejected the way the contract allows) or raises `ContractViolation` saying what went wrong. A
crash (segfault, ASan report, hang) is the other way to fail; the fuzzer and the replay test see it
from outside the process.

Targets:
  jpeg        posedistill._jpeg_band.decode directly, then the Python wrapper of data/topdown.py
              (`decode_image_rows`, `decode_image`). Input: a 5-byte header, then the JPEG file:
              byte 0: scale denominator, [1, 2, 4, 8, 1, 2, 4, 3][b & 7] (3 is invalid on purpose),
              bytes 1-2 / 3-4: y0 / y1 of the band, int16 little-endian. `make_jpeg_input` writes it.
              Contract: the C function returns a band of the right shape or raises ValueError; the
              wrapper returns an HxWx(3|4) uint8 image or raises ImageReadError; when both the band
              and the whole-image decoder return RGBX, the band's rows are the same pixels.
  coco        a COCO keypoint file, through CocoKeypoints (strict and not, with and without a
              keypoint set), gt_instances and the pycocotools index (`.coco`).
  detections  a COCO detection-results file, through inference/boxes.py `read_detections` (+
              `boxes_for`) and data/coco.py `load_coco_instances(..., detections=...)`, with the
              annotation file tests/fuzz/corpus/coco/coco_small.json (its image ids: 785, 40083).
  mpii        an HRNet MPII JSON file, through data/mpii.py `load_mpii`.
  The annotation targets' contract: the file loads into well-formed instances (finite boxes and
  keypoints of the right shapes), or a ValueError (AnnotationError) is raised whose message is one
  line, names the file and is of readable length; any other exception type is a violation.
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import cv2
import numpy as np

import posedistill.data.topdown as topdown
from posedistill.data.coco import CocoKeypoints, load_coco_instances
from posedistill.data.mpii import load_mpii
from posedistill.inference.boxes import read_detections
from posedistill.keypoints import COCO

from contract import (ContractViolation, check_band, clip_band, expect, jpeg_params,  # noqa: F401
                      make_jpeg_input)

TARGETS = ("jpeg", "coco", "detections", "mpii")
HERE = Path(__file__).resolve().parent
DET_ANNOTATIONS = HERE / "corpus" / "coco" / "coco_small.json"
# Compare the band's pixels with the whole-image decoder's (simplejpeg). run.py turns it off when
# the band decoder runs on a libjpeg-turbo built from source without SIMD: its upsampling differs.
COMPARE_PIXELS = True
# Findings reported and not fixed yet (the file is someone else's): the check is relaxed so that the
# fuzzer looks further; test_regressions.py keeps their inputs as expected failures.
#   boxes-float32-overflow: inference/boxes.py read_detections accepts bbox numbers beyond float32
#   (e.g. 1e39, finite in JSON and Python) and boxes_for() returns inf boxes.
KNOWN_ISSUES: tuple[str, ...] = ()   # "boxes-float32-overflow" fixed: boxes.py uses data.coco.is_number


# ---------------------------------------------------------------- helpers

def _check_instances(instances, num_joints: int | None, what: str) -> None:
    for i, inst in enumerate(instances):
        box, kps = np.asarray(inst.bbox), np.asarray(inst.keypoints)
        if box.shape != (4,) or not np.isfinite(box).all():
            raise ContractViolation(f"{what}: instance {i} has bbox {box!r}")
        if kps.ndim != 2 or kps.shape[1] != 3 or (num_joints and kps.shape[0] != num_joints) \
                or not np.isfinite(kps).all():
            raise ContractViolation(f"{what}: instance {i} has keypoints of shape {kps.shape} / non-finite")
        if not (math.isfinite(inst.score) and math.isfinite(inst.area) and math.isfinite(inst.head_size)):
            raise ContractViolation(f"{what}: instance {i} has score/area/head_size "
                                    f"{inst.score}, {inst.area}, {inst.head_size}")
        if not (isinstance(inst.image_path, str) and isinstance(inst.image_id, int)
                and isinstance(inst.ann_id, int) and all(-2**63 <= v < 2**63 for v in (inst.image_id, inst.ann_id))):
            raise ContractViolation(f"{what}: instance {i} has image_path/image_id/ann_id (int64 for the samples) "
                                    f"{type(inst.image_path).__name__}, {type(inst.image_id).__name__}, "
                                    f"{type(inst.ann_id).__name__}")


def _write(workdir: str | os.PathLike, name: str, data: bytes) -> str:
    path = os.path.join(str(workdir), name)
    with open(path, "wb") as f:
        f.write(data)
    return path


# ---------------------------------------------------------------- jpeg

def check_jpeg_wrapper(data: bytes, workdir: str | os.PathLike) -> None:
    """data/topdown.py's decoders on the input written to a file: an image, or ImageReadError."""
    factor, y0, y1, jpeg = jpeg_params(data)
    if factor == 3:
        return
    path = _write(workdir, "input.jpg", jpeg)
    rows = expect(lambda: topdown.decode_image_rows(path, factor, y0, y1), (topdown.ImageReadError,), path,
                   "decode_image_rows")
    whole = expect(lambda: topdown.decode_image(path, factor), (topdown.ImageReadError,), path, "decode_image")
    for name, img in (("decode_image_rows", rows), ("decode_image", whole)):
        if img is not None and not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3
                                    and img.shape[2] in (3, 4) and img.shape[0] > 0 and img.shape[1] > 0):
            raise ContractViolation(f"{name}: returned {type(img).__name__} "
                                    f"{getattr(img, 'shape', None)} {getattr(img, 'dtype', None)}")
    if rows is None or whole is None:
        return
    if rows.shape[:2] != whole.shape[:2]:
        raise ContractViolation(f"decode_image_rows gives {rows.shape}, decode_image {whole.shape} (1/{factor})")
    if COMPARE_PIXELS and rows.shape[2] == 4 and whole.shape[2] == 4:
        a, b = clip_band(y0, y1, rows.shape[0])
        if not np.array_equal(rows[a:b, :, :3], whole[a:b, :, :3]):
            # simplejpeg and OpenCV (different libjpeg-turbo builds) disagree on some damaged files
            # themselves (extreme quantisers: the reduced-size IDCTs overflow differently); the band
            # must then match one of them
            flags = topdown._READ_FLAGS[factor] | cv2.IMREAD_IGNORE_ORIENTATION
            bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), flags)
            if bgr is None or bgr.shape[:2] != rows.shape[:2] or \
                    not np.array_equal(rows[a:b, :, :3], bgr[a:b, :, ::-1]):
                raise ContractViolation(f"band rows [{a}, {b}) differ from the whole-image decode (1/{factor})")


def check_jpeg(data: bytes, workdir: str | os.PathLike, band=None) -> None:
    """The jpeg target: the C function directly, then the Python wrapper (which uses `band`)."""
    band = band if band is not None else topdown._jpeg_band
    if band is not None:
        check_band(band, data)
    check_jpeg_wrapper(data, workdir)


# ---------------------------------------------------------------- annotations

def check_coco(data: bytes, workdir: str | os.PathLike) -> None:
    path = _write(workdir, "annotations.json", data)
    for strict in (True, False):
        for meta in (None, COCO):
            what = f"CocoKeypoints(strict={strict}, meta={'COCO' if meta else None})"
            ds = expect(lambda: CocoKeypoints(path, str(workdir), meta=meta, strict=strict), (ValueError,),
                         path, what)
            if ds is None:
                continue
            instances = expect(ds.gt_instances, (ValueError,), path, what + ".gt_instances()")
            _check_instances(instances or [], ds.num_joints, what + ".gt_instances()")
            if strict and meta is None:
                expect(lambda: ds.coco, (ValueError,), path, what + ".coco")


def check_detections(data: bytes, workdir: str | os.PathLike, known: tuple[str, ...] = KNOWN_ISSUES) -> None:
    path = _write(workdir, "detections.json", data)
    dets = expect(lambda: read_detections(path), (ValueError,), path, "read_detections")
    if dets is not None:
        for name, image_id in (("000000000785.jpg", None), ("x/40083.jpg", None), ("a.jpg", 785), ("b.jpg", "7")):
            boxes = expect(lambda: dets.boxes_for(name, image_id), (), None, "DetectionFile.boxes_for")
            finite = "boxes-float32-overflow" in known or np.isfinite(boxes).all()
            if boxes.ndim != 2 or boxes.shape[1] != 5 or boxes.dtype != np.float32 or not finite:
                raise ContractViolation(f"DetectionFile.boxes_for({name!r}): {boxes.shape} {boxes.dtype}, "
                                        f"finite: {bool(np.isfinite(boxes).all())}")
    for strict in (True, False):
        what = f"load_coco_instances(detections=..., strict={strict})"
        instances = expect(lambda: load_coco_instances(DET_ANNOTATIONS, str(workdir), detections=path,
                                                        strict=strict), (ValueError,), path, what)
        _check_instances(instances or [], None, what)


def check_mpii(data: bytes, workdir: str | os.PathLike) -> None:
    path = _write(workdir, "mpii.json", data)
    out = expect(lambda: load_mpii(path, str(workdir)), (ValueError,), path, "load_mpii")
    if out is not None:
        _check_instances(out[0], 16, "load_mpii")


def run_target(name: str, data: bytes, workdir: str | os.PathLike, band=None) -> None:
    """Run one input through target `name`; raises ContractViolation on a finding."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")         # strict=False reports skipped entries in a warning
        _run_target(name, data, workdir, band)


def _run_target(name: str, data: bytes, workdir: str | os.PathLike, band) -> None:
    if name == "jpeg":
        check_jpeg(data, workdir, band)
    elif name == "coco":
        check_coco(data, workdir)
    elif name == "detections":
        check_detections(data, workdir)
    elif name == "mpii":
        check_mpii(data, workdir)
    else:
        raise ValueError(f"unknown fuzz target {name!r}; one of {TARGETS}")


def input_files(name: str) -> list[Path]:
    """Seed corpus and regression inputs of target `name`."""
    return sorted(p for d in (HERE / "corpus" / name, HERE / "regressions" / name) if d.is_dir()
                  for p in d.iterdir() if p.is_file())


def replay(name: str, files: list[Path] | None = None) -> list[str]:
    """Run the inputs of target `name` (default: corpus + regressions); returns the violations.
    Prints each file before running it, so that a crash names its input."""
    import tempfile

    problems = []
    with tempfile.TemporaryDirectory(prefix="posedistill-fuzz-replay-") as workdir:
        for path in files if files is not None else input_files(name):
            print(f"RUN {path}", flush=True)
            try:
                run_target(name, path.read_bytes(), workdir)
            except ContractViolation as e:
                problems.append(f"{path.relative_to(HERE) if path.is_relative_to(HERE) else path}: {e}")
    return problems


if __name__ == "__main__":       # python fuzz_targets.py TARGET [FILE ...]: replay, one line per violation
    import sys

    found = replay(sys.argv[1], [Path(p) for p in sys.argv[2:]] or None)
    for line in found:
        print(f"VIOLATION {line}")
    print(f"replayed target {sys.argv[1]}: {len(found)} violation(s)")
