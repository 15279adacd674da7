import math

import cv2
import numpy as np
import pytest

from posedistill.data import transforms as T
from posedistill.keypoints import COCO, MPII


def hrnet_three_point_affine(center, scale_px, rot, out_size):
    """The published HRNet construction (three point pairs -> cv2.getAffineTransform), scale in px."""
    src_w, dst_w, dst_h = scale_px[0], out_size[0], out_size[1]
    r = math.radians(rot)
    sn, cs = math.sin(r), math.cos(r)
    src_dir = np.array([-(-0.5 * src_w) * sn, (-0.5 * src_w) * cs])   # (0, -w/2) rotated by rot
    dst_dir = np.array([0.0, -0.5 * dst_w])
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0], dst[0] = center, [dst_w * 0.5, dst_h * 0.5]
    src[1], dst[1] = center + src_dir, dst[0] + dst_dir
    src[2] = src[1] + np.array([-(src[0] - src[1])[1], (src[0] - src[1])[0]])
    dst[2] = dst[1] + np.array([-(dst[0] - dst[1])[1], (dst[0] - dst[1])[0]])
    return cv2.getAffineTransform(src, dst)


def test_box_to_center_scale_fixes_aspect_and_pads():
    c, s = T.box_to_center_scale([10, 20, 30, 80], aspect_ratio=0.75)
    np.testing.assert_allclose(c, [25, 60])
    np.testing.assert_allclose(s, [60 * 1.25, 80 * 1.25])          # width grown to 0.75 * 80
    c, s = T.box_to_center_scale([0, 0, 120, 40], aspect_ratio=0.75)
    np.testing.assert_allclose(s, [120 * 1.25, 160 * 1.25])        # height grown to 120 / 0.75
    box = T.center_scale_to_box(c, s)
    np.testing.assert_allclose(box[2:], [120, 160])


@pytest.mark.parametrize("rot", [0.0, 30.0, -75.0])
def test_affine_matches_hrnet_construction(rot):
    c, s = np.array([300.0, 200.0]), np.array([150.0, 200.0])
    ours = T.get_affine(c, s, rot, (192, 256))
    ref = hrnet_three_point_affine(c, s, rot, (192, 256))
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_flip_in_affine_equals_hrnet_image_flip():
    # HRNet flips the whole image (x -> W - 1 - x, centre too) and then crops.
    W = 640
    c, s, rot = np.array([300.0, 200.0]), np.array([150.0, 200.0]), 20.0
    pts = np.array([[250.0, 120.0], [333.3, 290.0], [301.0, 201.0]])
    ours = T.apply_affine(pts, T.get_affine(c, s, rot, (192, 256), flip=True))
    c_f = np.array([W - 1 - c[0], c[1]])
    pts_f = np.stack([W - 1 - pts[:, 0], pts[:, 1]], 1)
    ref = T.apply_affine(pts_f, T.get_affine(c_f, s, rot, (192, 256)))
    np.testing.assert_allclose(ours, ref, atol=1e-9)
    assert T.affine_has_flip(T.get_affine(c, s, rot, (192, 256), flip=True))
    assert not T.affine_has_flip(T.get_affine(c, s, rot, (192, 256)))


def test_udp_maps_box_edges_to_first_and_last_pixel_centres():
    c, s = np.array([100.0, 50.0]), np.array([96.0, 128.0])
    a = T.get_affine(c, s, 0.0, (48, 64), udp=True)
    corners = np.array([c - s / 2, c, c + s / 2])
    np.testing.assert_allclose(T.apply_affine(corners, a), [[0, 0], [23.5, 31.5], [47, 63]], atol=1e-9)
    b = T.get_affine(c, s, 0.0, (48, 64))
    np.testing.assert_allclose(T.apply_affine(corners, b), [[0, 0], [24, 32], [48, 64]], atol=1e-9)


@pytest.mark.parametrize("udp", [False, True])
def test_affine_then_inverse_returns_points(udp):
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 500, (17, 2))
    a = T.get_affine([250, 240], [180, 240], 37.0, (192, 256), flip=True, udp=udp)
    back = T.apply_affine(T.apply_affine(pts, a), T.invert_affine(a))
    np.testing.assert_allclose(back, pts, atol=1e-9)
    # batched crop -> image, as used for predictions
    batch_a = np.stack([a, T.get_affine([100, 100], [50, 60], -10, (192, 256))])
    crop_pts = np.stack([T.apply_affine(pts, batch_a[0]), T.apply_affine(pts, batch_a[1])])
    np.testing.assert_allclose(T.crop_to_image(crop_pts, batch_a), np.stack([pts, pts]), atol=1e-9)
    np.testing.assert_allclose(T.crop_to_image(crop_pts[0], a), pts, atol=1e-9)


def test_compose_affine():
    a = T.get_affine([250, 240], [180, 240], 10.0, (192, 256))
    b = T.get_affine([90, 120], [100, 150], -20.0, (96, 128), flip=True)
    p = np.array([[3.0, 4.0], [100.0, -20.0]])
    np.testing.assert_allclose(T.apply_affine(p, T.compose_affine(b, a)),
                               T.apply_affine(T.apply_affine(p, a), b), atol=1e-9)


@pytest.mark.parametrize("meta", [COCO, MPII])
def test_flip_keypoints_twice_is_identity(meta):
    rng = np.random.default_rng(1)
    k = meta.num_joints
    kps = np.concatenate([rng.uniform(0, 300, (k, 2)), rng.integers(0, 3, (k, 1))], 1).astype(np.float32)
    for kwargs in ({}, {"width": 640}, {"center_x": 123.5}):
        once = T.flip_keypoints(kps, meta.flip_index, **kwargs)
        assert not np.array_equal(once, kps)
        np.testing.assert_allclose(T.flip_keypoints(once, meta.flip_index, **kwargs), kps, atol=1e-4)
    once = T.flip_keypoints(kps, meta.flip_index, width=640)
    lab = once[:, 2] > 0
    src = kps[meta.flip_index]
    np.testing.assert_allclose(once[lab, 0], 639 - src[lab, 0], atol=1e-4)   # x -> W - 1 - x, joints swapped


def test_random_scale_rotation_ranges():
    rng = np.random.default_rng(0)
    draws = np.array([T.random_scale_rotation(rng, 0.35, 45.0, 0.6) for _ in range(2000)])
    assert draws[:, 0].min() >= 0.65 - 1e-9 and draws[:, 0].max() <= 1.35 + 1e-9
    assert np.abs(draws[:, 1]).max() <= 90.0
    frac_rot = (draws[:, 1] != 0).mean()
    assert 0.55 < frac_rot < 0.65


def test_half_body_box_covers_chosen_half():
    rng = np.random.default_rng(0)
    kps = np.zeros((17, 3), np.float32)
    kps[:, 0] = np.linspace(100, 200, 17)
    kps[:, 1] = np.linspace(50, 450, 17)
    kps[:, 2] = 2
    seen_upper = seen_lower = False
    for _ in range(30):
        c, s = T.half_body_center_scale(kps, COCO, 0.75, rng)
        assert abs(s[0] / s[1] - 0.75) < 1e-5
        upper_y = kps[list(COCO.upper_body), 1]
        if c[1] == pytest.approx(upper_y.mean()):
            seen_upper = True
            assert c[1] - s[1] / 2 <= upper_y.min() and c[1] + s[1] / 2 >= upper_y.max()
        else:
            seen_lower = True
    assert seen_upper and seen_lower
    kps[:, 2] = 0
    kps[0, 2] = 2
    assert T.half_body_center_scale(kps, COCO, 0.75, rng) is None


def test_normalize_image_matches_formula():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    out = T.normalize_image(rgb[:, :, ::-1][:, :, ::-1])
    ref = ((rgb / 255.0 - np.array(T.IMAGENET_MEAN)) / np.array(T.IMAGENET_STD)).transpose(2, 0, 1)
    assert out.dtype == np.float32 and out.shape == (3, 5, 4)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    # BGR input, and 4-byte RGBX / BGRX pixels (4th channel ignored), give the same result
    np.testing.assert_allclose(T.normalize_image(np.ascontiguousarray(rgb[:, :, ::-1]), bgr=True), ref, atol=1e-5)
    x = np.full((5, 4, 1), 255, np.uint8)
    np.testing.assert_allclose(T.normalize_image(np.concatenate([rgb, x], 2)), ref, atol=1e-5)
    np.testing.assert_allclose(T.normalize_image(np.concatenate([rgb[:, :, ::-1], x], 2), bgr=True), ref, atol=1e-5)
    custom = T.normalize_image(rgb, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    np.testing.assert_allclose(custom, ((rgb / 255.0 - 0.5) / np.array([0.25, 0.5, 1.0])).transpose(2, 0, 1), atol=1e-5)
    with pytest.raises(ValueError, match="HxWx3"):
        T.normalize_image(rgb[:, :, :2])


def test_warp_crop_puts_a_dot_where_the_affine_sends_it():
    img = np.zeros((300, 400, 3), np.uint8)
    p = np.array([250.0, 120.0])
    cv2.circle(img, (250, 120), 4, (255, 255, 255), -1)
    a = T.get_affine([200, 150], [180, 240], 30.0, (96, 128), flip=True)
    crop = T.warp_crop(img, a, (96, 128))
    assert crop.shape == (128, 96, 3)
    ys, xs = np.nonzero(crop[:, :, 0] > 100)
    q = T.apply_affine(p, a)
    assert abs(xs.mean() - q[0]) < 0.6 and abs(ys.mean() - q[1]) < 0.6


def test_reduced_decode_affine_keeps_geometry(tmp_path):
    # A JPEG decoded at 1/4 and cropped with the adjusted affine matches the full-resolution crop.
    yy, xx = np.mgrid[0:480, 0:640]
    img = np.stack([(xx * 0.4) % 256, (yy * 0.5) % 256, ((xx + yy) * 0.2) % 256], -1).astype(np.uint8)
    cv2.circle(img, (400, 260), 20, (255, 255, 255), -1)
    path = str(tmp_path / "a.jpg")
    cv2.imwrite(path, img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    a = T.get_affine([380, 250], [300, 400], 15.0, (48, 64))      # 6.25 image px per crop px
    full = T.warp_crop(cv2.imread(path), a, (48, 64)).astype(np.float32)
    small = cv2.imread(path, cv2.IMREAD_REDUCED_COLOR_4)
    red = T.warp_crop(small, T.compose_affine(a, T.reduced_read_affine(4)), (48, 64)).astype(np.float32)
    assert np.abs(full - red).mean() < 6.0
    # the dot lands on the same crop pixels
    cf = np.argwhere(full[..., 0] > 200).mean(0)
    cr = np.argwhere(red[..., 0] > 200).mean(0)
    np.testing.assert_allclose(cf, cr, atol=0.5)


@pytest.mark.parametrize("udp", [False, True])
def test_source_rows_hold_every_row_the_warp_reads(udp):
    """Rows outside `source_rows` can hold anything: the crop does not change."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (300, 400, 4), dtype=np.uint8)
    for _ in range(200):
        center = rng.uniform(-50, 450, 2)
        scale = rng.uniform(20, 600) * np.array([0.75, 1.0])
        size = (int(rng.integers(2, 200)), int(rng.integers(2, 260)))
        affine = T.get_affine(center, scale, rng.uniform(-180, 180), size, flip=bool(rng.integers(2)), udp=udp)
        y0, y1 = T.source_rows(affine, size)
        noisy = img.copy()
        noisy[:max(y0, 0)] = 255 - noisy[:max(y0, 0)]
        noisy[max(y1, 0):] = 255 - noisy[max(y1, 0):]
        np.testing.assert_array_equal(T.warp_crop(noisy, affine, size), T.warp_crop(img, affine, size))


def test_uint8_planes_normalised_later_equal_normalize_image():
    torch = pytest.importorskip("torch")
    rgbx = np.random.default_rng(0).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    ref = T.normalize_image(rgbx)
    planes = T.rgb_planes(rgbx)
    assert planes.dtype == np.uint8 and planes.shape == (3, 5, 7)
    np.testing.assert_allclose(T.normalize_images(torch.from_numpy(planes)).numpy(), ref, atol=1e-6)
    bgr = np.ascontiguousarray(rgbx[:, :, 2::-1])
    np.testing.assert_array_equal(T.rgb_planes(bgr, bgr=True), planes)
    batch = torch.from_numpy(np.stack([planes, planes]))                   # [B, 3, H, W]
    np.testing.assert_allclose(T.normalize_images(batch)[1].numpy(), ref, atol=1e-6)
    already = torch.from_numpy(ref)
    assert T.normalize_images(already) is already                           # float: unchanged
    with pytest.raises(ValueError, match="uint8"):
        T.rgb_planes(rgbx.astype(np.float32))
    with pytest.raises(ValueError, match=r"\[\.\.\., 3, H, W\]"):
        T.normalize_images(torch.from_numpy(rgbx))                         # HxWx4, not channels-first
