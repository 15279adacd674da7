import warnings

import cv2
import numpy as np
import pytest
import torch

from posedistill.data import transforms as T
from posedistill.data.coco import PersonInstance, load_coco_instances
from posedistill.data.mpii import load_mpii_instances
from posedistill.data.topdown import ImageReadError, TopDownDataset, _decode, jpeg_declared_size, load_image
from posedistill.keypoints import COCO, CROWDPOSE, MPII


class TinyCodec:
    """Stand-in heatmap codec for these tests: one Gaussian per joint at stride 4."""
    target_keys = ("heatmaps",)

    def __init__(self, input_size, sigma=2.0):
        self.w, self.h = input_size[0] // 4, input_size[1] // 4
        self.sigma = sigma

    def encode(self, keypoints, visible):
        xs, ys = np.arange(self.w, dtype=np.float32), np.arange(self.h, dtype=np.float32)[:, None]
        k = len(keypoints)
        hm = np.zeros((k, self.h, self.w), np.float32)
        w = np.zeros(k, np.float32)
        for j, ((x, y), v) in enumerate(zip(keypoints / 4.0, visible)):
            if v and 0 <= x < self.w and 0 <= y < self.h:
                hm[j] = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * self.sigma ** 2))
                w[j] = 1.0
        return {"heatmaps": hm, "target_weight": w}


def _coco(data_dir):
    return load_coco_instances(data_dir / "coco/test_coco.json", data_dir / "coco", meta=COCO)


def test_sample_keys_shapes_and_eval_geometry(data_dir):
    inst = _coco(data_dir)
    ds = TopDownDataset(inst, meta=COCO, codec=TinyCodec((192, 256)), input_size=(192, 256), train=False)
    s = ds[0]
    expected = {"image": (3, 256, 192), "heatmaps": (17, 64, 48), "target_weight": (17,), "keypoints": (17, 3),
                "center": (2,), "scale": (2,), "affine": (2, 3), "aug_affine": (2, 3), "flipped": (),
                "image_id": (), "ann_id": (), "index": (), "bbox_score": (), "area": (), "head_size": (),
                "skipped_from": ()}
    assert set(s) == set(expected)
    for k, shape in expected.items():
        assert tuple(s[k].shape) == shape, k
    assert s["image"].dtype == torch.float32 and s["flipped"].dtype == torch.bool and s["index"].dtype == torch.int64
    assert int(s["ann_id"]) == inst[0].ann_id and int(s["image_id"]) == inst[0].image_id and int(s["index"]) == 0
    c, sc = T.box_to_center_scale(inst[0].bbox, 0.75)
    np.testing.assert_allclose(s["center"], c)
    np.testing.assert_allclose(s["scale"], sc)
    np.testing.assert_allclose(s["affine"].numpy(), T.get_affine(c, sc, 0, (192, 256)), atol=1e-4)
    np.testing.assert_allclose(s["aug_affine"].numpy(), [[1, 0, 0], [0, 1, 0]])
    lab = inst[0].keypoints[:, 2] > 0
    np.testing.assert_allclose(T.crop_to_image(s["keypoints"][:, :2].numpy(), s["affine"].numpy())[lab],
                               inst[0].keypoints[lab, :2], atol=1e-2)
    # the crop is the normalised RGB of the warped image
    rgb = load_image(inst[0].image_path)
    ref = T.normalize_image(T.warp_crop(rgb, s["affine"].numpy(), (192, 256)))
    # within one grey level: the stored affine is float32, the dataset warps with float64
    np.testing.assert_allclose(s["image"].numpy(), ref, atol=0.02)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["heatmaps"].shape == (3, 17, 64, 48) and batch["flipped"].shape == (3,)


@pytest.mark.parametrize("fmt", ["coco", "coco_det", "crowdpose", "crowdpose_det", "ochuman", "mpii"])
def test_every_sample_format_gives_samples(data_dir, fmt):
    if fmt.startswith("crowdpose"):
        meta, root = CROWDPOSE, data_dir / "crowdpose"
        det = root / "test_crowdpose_det_AP_40.json" if fmt.endswith("det") else None
        inst = load_coco_instances(root / "test_crowdpose.json", root, meta=meta, detections=det)
    elif fmt.startswith("coco"):
        meta, root = COCO, data_dir / "coco"
        det = root / "test_coco_det_AP_H_56.json" if fmt.endswith("det") else None
        inst = load_coco_instances(root / "test_coco.json", root, meta=meta, detections=det)[:6]
    elif fmt == "ochuman":
        meta, root = COCO, data_dir / "ochuman"
        inst = load_coco_instances(root / "test_ochuman.json", root, meta=meta)
    else:
        meta, root = MPII, data_dir / "mpii"
        inst = load_mpii_instances(root / "test_mpii.json", root, meta=meta)
    for train in (False, True):
        ds = TopDownDataset(inst, meta=meta, codec=TinyCodec((48, 64)), input_size=(48, 64), train=train)
        for i in range(len(ds)):
            s = ds[i]
            assert s["image"].shape == (3, 64, 48) and s["heatmaps"].shape == (meta.num_joints, 16, 12)
            assert torch.isfinite(s["image"]).all()
        assert ds.skipped == 0
    if fmt == "mpii":
        assert float(s["head_size"]) > 0


COLORS = [((37 * j) % 256, (91 * j + 60) % 256, (151 * j + 120) % 256) for j in range(17)]


def _dot_instance(tmp_path, size=(640, 480)):
    """A synthetic image with one coloured disc per COCO joint, and its instance."""
    w, h = size
    img = np.full((h, w, 3), 0, np.uint8)
    rng = np.random.default_rng(3)
    cx, cy = w / 2, h / 2
    pts = np.stack([cx + rng.uniform(-0.18, 0.18, 17) * w, cy + np.linspace(-0.35, 0.35, 17) * h], 1)
    r = int(0.025 * max(w, h))
    kps = np.zeros((17, 3), np.float32)
    for j, (x, y) in enumerate(pts):
        cv2.circle(img, (int(round(x)), int(round(y))), r, COLORS[j][::-1], -1)   # BGR file
        kps[j] = (round(x), round(y), 2)
    path = str(tmp_path / f"dots_{w}.png")
    cv2.imwrite(path, img)
    lo, hi = kps[:, :2].min(0) - r, kps[:, :2].max(0) + r
    inst = PersonInstance(path, 1, 7, np.array([*lo, *(hi - lo)], np.float32), kps, area=float(np.prod(hi - lo)))
    return inst


@pytest.mark.parametrize("size", [(640, 480), (2400, 1800)])   # the large one exercises reduced JPEG decoding
def test_augmentation_keeps_keypoints_on_their_pixels(tmp_path, size):
    inst = _dot_instance(tmp_path, size)
    ds = TopDownDataset([inst], meta=COCO, codec=TinyCodec((96, 128)), input_size=(96, 128), train=True,
                        half_body_prob=0.5, reduced_decode=True)
    factors = []
    read = ds._read
    ds._read = lambda path, factor, rows: factors.append(factor) or read(path, factor, rows)
    mean, std = np.array(T.IMAGENET_MEAN), np.array(T.IMAGENET_STD)
    torch.manual_seed(0)
    n_checked, flips = 0, 0
    for _ in range(25):
        s = ds[0]
        flipped = bool(s["flipped"])
        flips += flipped
        rgb = ((s["image"].numpy().transpose(1, 2, 0) * std + mean) * 255).round()
        # un-augmented crop -> augmented crop is aug_affine, and composes to affine
        plain = T.get_affine(s["center"].numpy(), s["scale"].numpy(), 0, (96, 128))
        np.testing.assert_allclose(T.compose_affine(s["aug_affine"].numpy(), plain), s["affine"].numpy(),
                                   atol=2e-3)
        for j, (x, y, v) in enumerate(s["keypoints"].numpy()):
            if v <= 0 or not (2 <= x < 94 and 2 <= y < 126):
                continue
            src = COCO.flip_index[j] if flipped else j
            got = rgb[int(round(y)), int(round(x))]
            assert np.abs(got - np.array(COLORS[src])).max() < 40, (j, src, got, COLORS[src])
            n_checked += 1
        tw = s["target_weight"].numpy()
        assert set(np.unique(tw)) <= {0.0, 1.0}
    assert n_checked > 100 and 0 < flips < 25
    assert max(factors) >= (8 if size[0] > 1000 else 2)          # crops came from reduced decodes


def test_joint_weights(data_dir):
    inst = _coco(data_dir)[:1]
    ds = TopDownDataset(inst, meta=COCO, codec=TinyCodec((48, 64)), input_size=(48, 64), use_joint_weights=True)
    tw = ds[0]["target_weight"].numpy()
    np.testing.assert_allclose(tw, np.array(COCO.joint_weights, np.float32) * (tw > 0))
    assert tw.max() == pytest.approx(1.5)


def test_missing_and_corrupt_images_are_skipped_and_counted(data_dir, tmp_path):
    good = _coco(data_dir)[:2]
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 10)
    missing = tmp_path / "missing.jpg"
    bad1 = PersonInstance(str(missing), 5, 111, good[0].bbox, good[0].keypoints)
    bad2 = PersonInstance(str(corrupt), 6, 222, good[0].bbox, good[0].keypoints)
    ds = TopDownDataset([bad1, good[0], bad2, good[1]], meta=COCO, codec=TinyCodec((48, 64)),
                        input_size=(48, 64), train=True)
    with pytest.warns(UserWarning) as rec:
        s0 = ds[0]
        s2 = ds[2]
        ds[0]                                      # known bad: no new warning, no double count
    msgs = [str(r.message) for r in rec]
    assert any("annotation id 111" in m and "missing.jpg" in m and "not found" in m for m in msgs)
    assert any("annotation id 222" in m and "corrupt.jpg" in m and "decoded" in m for m in msgs)
    assert len(msgs) == 2 and ds.skipped == 2 and ds.bad_indices == {0, 2}
    assert int(s0["index"]) == 1 and int(s2["index"]) == 3      # replaced by the next readable instance
    bad = ds.check_images()
    assert [(p, ids) for p, ids, _ in bad] == [(str(missing), [111]), (str(corrupt), [222])]
    with pytest.raises(ImageReadError, match="corrupt.jpg"):
        load_image(corrupt)
    all_bad = TopDownDataset([bad1], meta=COCO, codec=TinyCodec((48, 64)), input_size=(48, 64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="no readable image"):
            all_bad[0]


def test_train_randomness_follows_torch_seed(data_dir):
    inst = _coco(data_dir)[:1]
    ds = TopDownDataset(inst, meta=COCO, codec=TinyCodec((48, 64)), input_size=(48, 64), train=True)
    torch.manual_seed(5)
    a = [ds[0]["affine"] for _ in range(3)]
    torch.manual_seed(5)
    b = [ds[0]["affine"] for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[0], a[1])


def test_joint_count_mismatch_is_named(data_dir):
    inst = _coco(data_dir)[:1]
    with pytest.raises(ValueError, match=r"annotation id 442619.*expected \(16, 3\).*'mpii'"):
        TopDownDataset(inst, meta=MPII, codec=TinyCodec((48, 64)), input_size=(48, 64))


def test_with_the_project_heatmap_codec(data_dir):
    heatmap = pytest.importorskip("posedistill.codecs.heatmap")
    codec = heatmap.HeatmapCodec(input_size=(192, 256), heatmap_size=(48, 64), sigma=2.0)
    ds = TopDownDataset(_coco(data_dir)[:3], meta=COCO, codec=codec, input_size=(192, 256), train=True)
    torch.manual_seed(1)
    for i in range(3):
        s = ds[i]
        assert s["heatmaps"].shape == (17, 64, 48) and s["heatmaps"].dtype == torch.float32
        kpts, _ = codec.decode(s["heatmaps"][None])
        xy = s["keypoints"].numpy()[:, :2]
        inside = (xy[:, 0] >= 0) & (xy[:, 0] < 192) & (xy[:, 1] >= 0) & (xy[:, 1] < 256)
        # The codec keeps weight 1 for a joint just outside the crop whose Gaussian tail still
        # touches the map (official HRNet rule); only in-crop joints can decode onto themselves.
        on = (s["target_weight"].numpy() > 0) & inside
        assert on.any()
        # decoded peaks sit on the augmented keypoints (within one heatmap pixel = 4 input pixels)
        np.testing.assert_allclose(np.asarray(kpts)[0][on], s["keypoints"].numpy()[on, :2], atol=4.0)


def test_decode_image_matches_opencv_at_every_reduction(data_dir):
    """simplejpeg (RGBX) and OpenCV (BGR) give the same pixels and the same reduced sizes."""
    import posedistill.data.topdown as td
    flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
             8: cv2.IMREAD_REDUCED_COLOR_8}
    paths = sorted(str(p) for p in (data_dir / "coco").glob("*.jpg"))[:2] + \
        sorted(str(p) for p in (data_dir / "ochuman").glob("*.jpg"))[:1]      # 4:4:4 and 4:2:0 files
    for path in paths:
        for factor, flag in flags.items():
            img = td.decode_image(path, factor)
            ref = cv2.imread(path, flag | cv2.IMREAD_IGNORE_ORIENTATION)
            if img.shape[2] == 4:                                   # simplejpeg: RGBX
                img = img[:, :, 2::-1]
            assert img.shape == ref.shape, (path, factor)
            assert np.abs(img.astype(int) - ref).max() <= 1, (path, factor)


def test_samples_without_simplejpeg_match(data_dir, monkeypatch):
    """The OpenCV fallback (BGR, 3 channels) gives the same samples as the simplejpeg path (RGBX)."""
    import posedistill.data.topdown as td
    inst = _coco(data_dir)[:3]
    ds = TopDownDataset(inst, meta=COCO, codec=TinyCodec((192, 256)), input_size=(192, 256), train=True)
    torch.manual_seed(0)
    fast = [ds[i] for i in range(3)]
    monkeypatch.setattr(td, "simplejpeg", None)
    monkeypatch.setattr(td, "_jpeg_band", None)
    assert td.decode_image(inst[0].image_path).shape[2] == 3
    torch.manual_seed(0)
    slow = [ds[i] for i in range(3)]
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a["affine"], b["affine"])
        # same decoder library underneath: equal up to float rounding (1 grey level = 0.017)
        assert (a["image"] - b["image"]).abs().max() < 0.02


def test_uint8_samples_normalised_by_to_device_match(data_dir):
    """normalize=False (training loaders) + the engine's to_device == the normalised sample."""
    from posedistill.engine.loop import to_device
    inst = _coco(data_dir)[:3]
    kw = dict(meta=COCO, codec=TinyCodec((192, 256)), input_size=(192, 256), train=True)
    plain, raw = TopDownDataset(inst, **kw), TopDownDataset(inst, normalize=False, **kw)
    for i in range(3):
        torch.manual_seed(i)
        a = plain[i]
        torch.manual_seed(i)
        b = raw[i]
        assert b["image"].dtype == torch.uint8 and b["image"].shape == (3, 256, 192)
        torch.testing.assert_close(b["heatmaps"], a["heatmaps"])
        moved = to_device({k: v[None] for k, v in b.items()}, torch.device("cpu"))
        torch.testing.assert_close(moved["image"][0], a["image"], atol=1e-6, rtol=0)


def test_a_jpeg_declaring_a_huge_image_is_refused_before_decoding():
    """Found by fuzzing: a few-KB damaged file declaring 65495 x 2528 px cost OpenCV seconds and hundreds
    of MB; its start-of-frame size is read first and the file refused (skipped like any unreadable image)."""
    ok, buf = cv2.imencode(".jpg", np.zeros((48, 64, 3), np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    data = bytearray(buf.tobytes())
    assert jpeg_declared_size(bytes(data)) == (48, 64)
    sof = bytes(data).find(b"\xff\xc2")                      # progressive start of frame
    data[sof + 5:sof + 7], data[sof + 7:sof + 9] = (2528).to_bytes(2, "big"), (65495).to_bytes(2, "big")
    with pytest.raises(ImageReadError, match="declares 65495x2528 pixels"):
        _decode(bytes(data), "big.jpg", 1)
    assert jpeg_declared_size(b"\xff\xd8\xff\xd9") is None
