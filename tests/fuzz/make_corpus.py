"""Write the seed corpus tests/fuzz/corpus/<target>/ (small, deterministic): run once, commit the files.

    .venv/bin/python tests/fuzz/make_corpus.py

jpeg: tiny crops of a test image encoded by OpenCV at several sizes (not multiples of the MCU
too), quality, chroma subsampling (4:2:0, 4:2:2, 4:4:4, 4:1:1, 4:4:0), progressive, restart
markers, greyscale, plus a CMYK JPEG (Pillow) and truncated files, each with a band request
header (fuzz_targets.make_jpeg_input). Annotations: trimmed copies of the files in tests/data.
"""
from __future__ import annotations

import io
import json
import shutil

import cv2
import numpy as np

from fuzz_targets import HERE, make_jpeg_input

DATA = HERE.parent / "data"
CORPUS = HERE / "corpus"


def _jpeg_seeds() -> dict[str, bytes]:
    img = cv2.imread(str(DATA / "coco" / "000000000785.jpg"))[100:164, 300:380]   # 64 x 80 of a person
    sf = cv2.IMWRITE_JPEG_SAMPLING_FACTOR
    variants = {
        "420_q75_64x80": (img, []),
        "420_q30_17x13": (cv2.resize(img, (17, 13)), [cv2.IMWRITE_JPEG_QUALITY, 30]),
        "422_33x24": (cv2.resize(img, (33, 24)), [sf, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422]),
        "444_24x20": (cv2.resize(img, (24, 20)), [sf, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]),
        "411_40x9": (cv2.resize(img, (40, 9)), [sf, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_411]),
        "440_16x31": (cv2.resize(img, (16, 31)), [sf, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_440]),
        "progressive_48x40": (cv2.resize(img, (48, 40)), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        "restart_40x32": (cv2.resize(img, (40, 32)), [cv2.IMWRITE_JPEG_RST_INTERVAL, 1]),
        "grey_30x21": (cv2.cvtColor(cv2.resize(img, (30, 21)), cv2.COLOR_BGR2GRAY), []),
        "grey_progressive_9x9": (cv2.cvtColor(cv2.resize(img, (9, 9)), cv2.COLOR_BGR2GRAY),
                                 [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        "optimized_1x1": (img[:1, :1], [cv2.IMWRITE_JPEG_OPTIMIZE, 1]),
    }
    out = {name: cv2.imencode(".jpg", pixels, params)[1].tobytes() for name, (pixels, params) in variants.items()}
    try:
        from PIL import Image
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(img[:16, :16, ::-1])).convert("CMYK").save(buf, format="JPEG")
        out["cmyk_16x16"] = buf.getvalue()
    except ImportError:         # Pillow is optional; the CMYK seed is then left out
        pass
    return out


def write_jpeg() -> None:
    d = CORPUS / "jpeg"
    bands = [(1, 0, 10_000), (2, 5, 9), (4, -3, 2), (8, 0, 1), (1, 30, 31), (2, -100, 200), (1, 12, 4)]
    for k, (name, jpeg) in enumerate(sorted(_jpeg_seeds().items())):
        factor, y0, y1 = bands[k % len(bands)]
        (d / f"{name}.bin").write_bytes(make_jpeg_input(jpeg, factor, y0, y1))
        if k % 3 == 0:      # truncated: inside the entropy data, and inside the headers
            (d / f"{name}_cut_scan.bin").write_bytes(make_jpeg_input(jpeg[: len(jpeg) * 3 // 4], factor, y0, y1))
            (d / f"{name}_cut_header.bin").write_bytes(make_jpeg_input(jpeg[:200], 1, 0, 5))


def _coco_small() -> dict:
    src = json.loads((DATA / "coco" / "test_coco.json").read_text())
    keep = {785, 40083}
    images = [{k: v for k, v in im.items() if k in ("id", "file_name", "width", "height")}
              for im in src["images"] if im["id"] in keep]
    anns = [{k: v for k, v in a.items() if k != "segmentation"} for a in src["annotations"] if a["image_id"] in keep]
    return {"images": images, "annotations": anns[:3], "categories": src["categories"]}


def write_annotations() -> None:
    coco = _coco_small()
    (CORPUS / "coco" / "coco_small.json").write_text(json.dumps(coco))
    crowd = json.loads((DATA / "crowdpose" / "test_crowdpose.json").read_text())
    crowd["annotations"] = [{k: v for k, v in a.items() if k != "segmentation"} for a in crowd["annotations"][:2]]
    crowd["images"] = [im for im in crowd["images"] if im["id"] in {a["image_id"] for a in crowd["annotations"]}]
    (CORPUS / "coco" / "crowdpose_small.json").write_text(json.dumps(crowd))
    custom = {"images": [{"id": 7, "file_name": "a.png"}],
              "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [1, 2, 30, 40], "area": 0,
                               "iscrowd": 0, "keypoints": [5, 6, 2, 0, 0, 0, 9.5, 10, 1]}],
              "categories": [{"id": 3, "name": "hand", "keypoints": ["a", "b", "c"]}, {"id": 1, "name": "x"}]}
    (CORPUS / "coco" / "custom_joints.json").write_text(json.dumps(custom))

    dets = json.loads((DATA / "coco" / "test_coco_det_AP_H_56.json").read_text())
    small = [d for d in dets if d["image_id"] in {785, 40083}][:4]
    (CORPUS / "detections" / "coco_results.json").write_text(json.dumps(small))
    extra = [{"image_id": 785, "category_id": 1, "bbox": [0, 0, 10, 20], "score": 0.5, "file_name": "val/785.jpg"},
             {"image_id": 999, "category_id": 1, "bbox": [1, 1, 2, 2], "score": 0.1},
             {"file_name": "40083.jpg", "image_id": "40083", "category_id": 2, "bbox": [1, 1, 2, 2], "score": 1}]
    (CORPUS / "detections" / "file_names.json").write_text(json.dumps(extra))

    mpii = json.loads((DATA / "mpii" / "test_mpii.json").read_text())
    (CORPUS / "mpii" / "mpii_small.json").write_text(json.dumps(mpii[:2]))
    boxed = [dict(mpii[0], head_box=[900.0, 60.0, 1000.0, 160.0]), dict(mpii[2], image="x.jpg", head_box=[1, 2, 3, 4])]
    (CORPUS / "mpii" / "mpii_head_box.json").write_text(json.dumps(boxed))


if __name__ == "__main__":
    for target in ("jpeg", "coco", "detections", "mpii"):
        shutil.rmtree(CORPUS / target, ignore_errors=True)
        (CORPUS / target).mkdir(parents=True)
    write_jpeg()
    write_annotations()
    total = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    print(f"{sum(1 for p in CORPUS.rglob('*') if p.is_file())} seed files, {total / 1024:.1f} KiB in {CORPUS}")
