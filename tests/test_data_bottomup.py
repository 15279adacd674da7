"""Bottom-up dataset: one affine moves pixels, keypoints and the ignore mask together; flip swaps
sides; crowds and rule-masked people are ignored; outside joints are dropped; bad images are
skipped; evaluation maps back to the original image."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch

from posedistill.data.bottomup import (BottomUpDataset, build_ignore_mask, load_bottomup_images, people_to_input,
                                       segmentation_mask)
from posedistill.data.topdown import SkippedSamples
from posedistill.data.transforms import apply_affine
from posedistill.keypoints import COCO

DATA = Path(__file__).parent / "data"
W, H = 200, 150
INPUT = (96, 96)
L_SHO, R_SHO, L_ANK = 5, 6, 15
# dot colours (RGB): left shoulder red, right shoulder blue, left ankle green
DOTS = {L_SHO: (255, 0, 0), R_SHO: (0, 0, 255), L_ANK: (0, 255, 0)}
CROWD_BOX = (140, 10, 50, 40)            # x, y, w, h of the crowd region


class RecordingCodec:
    """Stand-in for PafCodec: remembers what `encode_people` got, returns fixed-shape targets."""

    def __init__(self, input_size=INPUT, stride=8):
        self.input_size, self.stride = input_size, stride
        self.calls = []

    def encode_people(self, keypoints, ignore_mask=None):
        self.calls.append((np.array(keypoints), None if ignore_mask is None else np.array(ignore_mask)))
        w, h = self.input_size[0] // self.stride, self.input_size[1] // self.stride
        mask = np.ones((1, h, w), np.float32)
        if ignore_mask is not None:
            mask[0] = cv2.resize(ignore_mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) < 0.5
        return {"confidence_maps": np.zeros((18, h, w), np.float32), "pafs": np.zeros((38, h, w), np.float32),
                "mask": mask}


def _person(x0, y0, scale=1.0):
    """17 COCO joints of a standing figure (all labelled, integer pixels) with its box."""
    rel = np.array([[20, 5], [22, 3], [18, 3], [24, 4], [16, 4], [30, 15], [10, 15], [33, 30], [7, 30],
                    [35, 45], [5, 45], [26, 50], [14, 50], [27, 70], [13, 70], [28, 90], [12, 90]], float)
    xy = np.round(rel * scale) + (x0, y0)
    kps = np.concatenate([xy, np.full((17, 1), 2.0)], axis=1)
    box = [x0, y0, 40 * scale, 95 * scale]
    return kps, box


def _uncompressed_rle(mask):
    flat = mask.ravel(order="F").astype(np.int8)
    edges = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(edges).tolist()
    return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + counts}


def _ann(ann_id, image_id, kps, box, **extra):
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "bbox": [float(v) for v in box],
            "area": float(box[2] * box[3]), "keypoints": [float(v) for v in np.asarray(kps).ravel()],
            "num_keypoints": int((np.asarray(kps)[:, 2] > 0).sum()), **extra}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Two PNG images: image 1 has a dotted person (trained on), a crowd region, a person with 3
    labelled joints and a small one (both masked by the rule); image 2 is a plain person."""
    root = tmp_path_factory.mktemp("bottomup")
    kps, box = _person(40, 30)
    img = np.zeros((H, W, 3), np.uint8)
    for j, rgb in DOTS.items():
        cv2.circle(img, (int(kps[j, 0]), int(kps[j, 1])), 3, rgb[::-1], -1)        # BGR on disk
    cv2.imwrite(str(root / "one.png"), img)
    cv2.imwrite(str(root / "two.png"), np.full((H, W, 3), 60, np.uint8))
    crowd = np.zeros((H, W), bool)
    x, y, w, h = CROWD_BOX
    crowd[y:y + h, x:x + w] = True
    few = np.zeros((17, 3))
    few[:3] = [[100, 110, 2], [104, 108, 2], [96, 108, 1]]
    small_kps, small_box = _person(150, 100, scale=0.25)                   # 10 x 24 px: area < 32 x 32
    seg = [[90.0, 100.0, 120.0, 100.0, 120.0, 140.0, 90.0, 140.0]]
    dotted_seg = mask_utils.encode(np.asfortranarray(_box_mask(box).astype(np.uint8)))
    dotted_seg["counts"] = dotted_seg["counts"].decode("ascii")           # compressed RLE, as in results files
    anns = [_ann(1, 1, kps, box, segmentation=dotted_seg),
            _ann(2, 1, np.zeros((17, 3)), CROWD_BOX, iscrowd=1, segmentation=_uncompressed_rle(crowd)),
            _ann(3, 1, few, [90, 100, 30, 40], segmentation=seg),
            _ann(4, 1, small_kps, small_box),
            _ann(5, 2, *_person(60, 20))]
    data = {"images": [{"id": 1, "file_name": "one.png", "width": W, "height": H},
                       {"id": 2, "file_name": "two.png", "width": W, "height": H}],
            "annotations": anns,
            "categories": [{"id": 1, "name": "person", "keypoints": list(COCO.joints),
                            "skeleton": [[a + 1, b + 1] for a, b in COCO.skeleton]}]}
    (root / "ann.json").write_text(json.dumps(data))
    return {"root": root, "ann": root / "ann.json", "kps": kps, "box": box, "crowd": crowd}


def _box_mask(box):
    m = np.zeros((H, W), bool)
    x, y, w, h = (int(v) for v in box)
    m[y:y + h, x:x + w] = True
    return m


def _dataset(tiny, train=True, **kw):
    codec = RecordingCodec()
    kw.setdefault("seed", 0)
    ds = BottomUpDataset(tiny["ann"], tiny["root"], codec, COCO, input_size=INPUT, train=train,
                         normalize=False, **kw)
    return ds, codec


def _centroid(image_chw, rgb):
    """Centroid of the pixels of one pure colour (weight: that channel minus the other two)."""
    img = image_chw.numpy().astype(np.float64)
    c = int(np.argmax(rgb))
    weight = np.clip(img[c] - img[[i for i in range(3) if i != c]].max(axis=0), 0, None)
    if weight.sum() < 255:
        return None
    ys, xs = np.mgrid[:img.shape[1], :img.shape[2]]
    return np.array([(xs * weight).sum(), (ys * weight).sum()]) / weight.sum()


def test_mask_rule_on_real_coco_sample():
    images = load_bottomup_images(DATA / "coco" / "test_coco.json", DATA / "coco", COCO)
    by_id = {im.image_id: im for im in images}
    assert sum(im.num_people for im in images) == 12 and sum(im.num_masked for im in images) == 2
    assert by_id[40083].num_people == 2 and by_id[40083].num_masked == 1       # the person without keypoints
    mask = build_ignore_mask(by_id[40083], 333, 500)
    assert mask is not None and mask.sum() > 0.5 * 491                          # its segmentation (area 491)
    assert build_ignore_mask(by_id[785], 425, 640) is None
    cmu = load_bottomup_images(DATA / "coco" / "test_coco.json", DATA / "coco", COCO, min_keypoints=1, min_area=0)
    assert sum(im.num_masked for im in cmu) == 2


def test_keypoints_move_with_the_pixels(tiny):
    ds, codec = _dataset(tiny, flip_prob=0.0)
    checked = 0
    for epoch in range(6):
        ds.set_epoch(epoch)
        s = ds[0]
        kps = codec.calls[-1][0]
        assert kps.shape == (1, 17, 3) and not s["flipped"]
        expected = apply_affine(tiny["kps"][:, :2], s["affine"].numpy().astype(np.float64))
        for j, rgb in DOTS.items():
            if kps[0, j, 2] == 0:
                continue
            assert np.allclose(kps[0, j, :2], expected[j], atol=1e-3)
            c = _centroid(s["image"], rgb)
            if c is not None and 4 < c.min() and c.max() < INPUT[0] - 5:            # dot wholly inside
                assert np.linalg.norm(c - kps[0, j, :2]) < 0.5, (epoch, j, c, kps[0, j])
                checked += 1
    assert checked >= 6


def test_flip_swaps_left_and_right(tiny):
    ds, codec = _dataset(tiny, flip_prob=1.0, max_rotation=0.0, center_perturb=0.0)
    s = ds[0]
    kps = codec.calls[-1][0][0]
    assert s["flipped"] and s["affine"][0, 0] < 0
    # the joint called left shoulder now sits on the dot of the right shoulder, and the other way round
    for joint, dot in ((L_SHO, R_SHO), (R_SHO, L_SHO)):
        c = _centroid(s["image"], DOTS[dot])
        assert np.linalg.norm(c - kps[joint, :2]) < 0.75
    plain = people_to_input(tiny["kps"][None], s["affine"].numpy().astype(np.float64), INPUT)[0]
    assert np.allclose(kps, plain[COCO.flip_index], atol=1e-4)


def test_crowd_and_rule_masked_people_are_ignored(tiny):
    images = load_bottomup_images(tiny["ann"], tiny["root"], COCO)
    one = images[0]
    assert (one.num_people, one.num_crowd, one.num_masked) == (1, 1, 2)
    mask = build_ignore_mask(one, H, W)
    few = np.zeros((H, W), bool)
    few[100:141, 90:121] = True
    small = segmentation_mask(None, [150, 100, 10, 23.75], H, W)                # no segmentation: its box
    assert mask[tiny["crowd"]].all() and mask[few].mean() > 0.9 and mask[small].all()
    dotted = _box_mask(tiny["box"])
    assert not mask[dotted].any()                       # a labelled person is never ignored
    assert mask.sum() <= tiny["crowd"].sum() + few.sum() + small.sum()
    # evaluation: the mask handed to the codec is the same region at input resolution
    ds, codec = _dataset(tiny, train=False)
    s = ds[0]
    kps, in_mask = codec.calls[-1]
    assert kps.shape == (1, 17, 3) and in_mask.shape == (INPUT[1], INPUT[0])
    inv = s["inverse_affine"].numpy().astype(np.float64)
    ys, xs = np.nonzero(in_mask)
    back = np.round(apply_affine(np.stack([xs, ys], 1), inv)).astype(int)
    inside = (back[:, 0] < W) & (back[:, 1] < H)
    assert inside.all() and mask[back[:, 1], back[:, 0]].mean() > 0.9
    cx, cy = apply_affine(np.array([[165.0, 30.0]]), s["affine"].numpy())[0]   # crowd centre
    assert in_mask[int(cy), int(cx)] and s["mask"][0].min() == 0


def test_outside_keypoints_become_unlabelled(tiny):
    ds, codec = _dataset(tiny, flip_prob=0.0, scale_range=(3.0, 3.0), center_perturb=0.0)
    dropped = 0
    for epoch in range(4):
        ds.set_epoch(epoch)
        s = ds[0]
        kps = codec.calls[-1][0][0]
        pos = apply_affine(tiny["kps"][:, :2], s["affine"].numpy().astype(np.float64))
        out = (pos < -0.5).any(1) | (pos[:, 0] >= INPUT[0] - 0.5) | (pos[:, 1] >= INPUT[1] - 0.5)
        assert not kps[out].any() and (kps[~out, 2] == 2).all()
        dropped += int(out.sum())
    assert dropped > 0                                  # 3x zoom: the figure cannot fit into 96 x 96
    keep, codec2 = _dataset(tiny, flip_prob=0.0, scale_range=(3.0, 3.0), center_perturb=0.0, keep_outside=True)
    _ = keep[0]
    assert (codec2.calls[-1][0][0, :, 2] == 2).all()


def test_same_seed_epoch_index_gives_the_same_sample(tiny):
    a, _ = _dataset(tiny)
    b, _ = _dataset(tiny)
    for key in ("image", "affine", "mask"):
        assert torch.equal(a[0][key], b[0][key])
    b.set_epoch(1)
    assert not torch.equal(a[0]["affine"], b[0]["affine"])
    torch.manual_seed(3)
    c, _ = _dataset(tiny, seed=None)
    first = c[0]["affine"]
    torch.manual_seed(3)
    assert torch.equal(c[0]["affine"], first)           # seed=None: torch's generator, as TopDownDataset


def test_eval_inverse_affine_maps_back_to_the_image(tiny):
    ds, codec = _dataset(tiny, train=False)
    s = ds[0]
    scale = min(INPUT[0] / W, INPUT[1] / H)
    assert s["image_size"].tolist() == [W, H] and not s["flipped"]
    assert np.allclose(s["affine"][:, :2].numpy(), np.diag([scale, scale]), atol=1e-3)
    kps = codec.calls[-1][0][0]
    back = apply_affine(kps[:, :2], s["inverse_affine"].numpy().astype(np.float64))
    assert np.abs(back - tiny["kps"][:, :2]).max() < 1e-3
    c = _centroid(s["image"], DOTS[L_SHO])           # the dot, resized, is where the keypoint says
    assert np.linalg.norm(c - kps[L_SHO, :2]) < 0.5
    img = s["image"].numpy()
    assert (img[:, round(H * scale) + 1:, :] == 128).all()     # padded below with the border grey


def test_corrupt_and_missing_images_are_skipped_and_counted(tiny, tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    data = json.loads(tiny["ann"].read_text())
    (root / "one.png").write_bytes(b"\x89PNG not really")
    (root / "two.png").write_bytes((tiny["root"] / "two.png").read_bytes())
    data["images"].append({"id": 3, "file_name": "gone.jpg", "width": W, "height": H})
    data["annotations"].append(_ann(6, 3, *_person(10, 10)))
    (root / "ann.json").write_text(json.dumps(data))
    ds = BottomUpDataset(root / "ann.json", root, RecordingCodec(), COCO, input_size=INPUT, train=True, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        samples = [ds[i] for i in range(len(ds))]
    assert ds.skipped == 2 and ds.bad_indices == {0, 2}
    assert [int(s["image_id"]) for s in samples] == [2, 2, 2]
    assert [int(s["skipped_from"]) for s in samples] == [0, -1, 2]
    messages = [str(w.message) for w in caught]
    assert any("one.png" in m and "cannot be decoded" in m for m in messages)
    assert any("gone.jpg" in m and "file not found" in m for m in messages)
    skipped = SkippedSamples(ds, max_fraction=0.5)
    for s in samples:
        skipped.add(s["skipped_from"].reshape(1))
    assert skipped.summary()["skipped"] == 2 and "gone.jpg" in skipped.summary()["skipped_examples"]


def test_real_paf_codec_on_synthetic_crowds(tmp_path):
    paf = pytest.importorskip("posedistill.codecs.paf")
    from posedistill.data.synthetic import generate_dataset

    res = generate_dataset(tmp_path / "s", num_images=3, seed=2, size=(160, 120), difficulty="easy",
                           crowd_rate=0.5)
    codec = paf.PafCodec(paf.coco_paf_layout(), input_size=(96, 96))
    ds = BottomUpDataset(res.ann_file, res.image_dir, codec, COCO, input_size=(96, 96), train=True, seed=1,
                         min_people=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=len(ds), num_workers=0)
    batch = next(iter(loader))
    assert batch["image"].shape == (len(ds), 3, 96, 96) and batch["image"].dtype == torch.float32
    assert batch["confidence_maps"].shape == (len(ds), 19, 12, 12) and batch["pafs"].shape == (len(ds), 38, 12, 12)
    assert batch["mask"].shape == (len(ds), 1, 12, 12)
    crowds = sum(im.num_crowd for im in ds.images)
    assert crowds > 0
    ev = BottomUpDataset(res.ann_file, res.image_dir, codec, COCO, input_size=(96, 96), train=False)
    masked = [float(ev[i]["mask"].min()) for i in range(len(ev)) if ev.images[i].num_crowd]
    assert masked and min(masked) == 0.0


def test_bad_arguments(tiny):
    with pytest.raises(ValueError, match="differs from the codec"):
        BottomUpDataset(tiny["ann"], tiny["root"], RecordingCodec(input_size=(64, 64)), COCO, input_size=INPUT)
    with pytest.raises(ValueError, match="no image has at least 3"):
        BottomUpDataset(tiny["ann"], tiny["root"], RecordingCodec(), COCO, input_size=INPUT, min_people=3)
    with pytest.raises(ValueError, match="scale_range"):
        BottomUpDataset(tiny["ann"], tiny["root"], RecordingCodec(), COCO, input_size=INPUT, scale_range=(1.2, 0.5))
