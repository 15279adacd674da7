import numpy as np
import pytest
import torch

from posedistill.codecs import Codec, HeatmapCodec
from posedistill.keypoints import COCO

K = COCO.num_joints


def _interior_keypoints(rng, n, codec, margin_px=3):
    """Random sub-pixel keypoints whose argmax lands well inside the heatmap (the official quarter
    shift and DARK only refine away from the border)."""
    (hw, hh), s = codec.heatmap_size, codec.stride
    u = rng.uniform(margin_px, hw - 1 - margin_px, n)
    v = rng.uniform(margin_px, hh - 1 - margin_px, n)
    return np.stack([u * s[0], v * s[1]], axis=1)


def _encode_batch(codec, kps):
    enc = [codec.encode(kps[i:i + K], np.ones(K)) for i in range(0, len(kps), K)]
    return np.stack([e["heatmaps"] for e in enc]), np.stack([e["target_weight"] for e in enc])


def test_protocol_and_encode_layout():
    codec = HeatmapCodec(input_size=(192, 256), heatmap_size=(48, 64), sigma=2.0)
    assert isinstance(codec, Codec) and codec.target_keys == ("heatmaps",)
    kps = np.zeros((K, 2))
    kps[:, 0], kps[:, 1] = 4.0 * 20, 4.0 * 30         # heatmap pixel (20, 30) exactly
    out = codec.encode(kps, np.ones(K, bool))
    hm, w = out["heatmaps"], out["target_weight"]
    assert hm.shape == (K, 64, 48) and hm.dtype == np.float32 and w.dtype == np.float32
    assert hm[0, 30, 20] == pytest.approx(1.0)
    assert hm[0, 30, 21] == pytest.approx(np.exp(-1 / 8), rel=1e-6)   # exp(-d^2 / (2 sigma^2))
    # only the +-3 sigma window is filled
    assert hm[0, 30, 26] > 0 and hm[0, 30, 27] == 0 and hm[0, 23, 20] == 0 and hm[0, 24, 20] > 0
    assert (w == 1).all()


def test_weights_for_unlabelled_and_outside_joints():
    codec = HeatmapCodec(input_size=(192, 256), heatmap_size=(48, 64), sigma=2.0)
    kps = np.full((K, 2), 100.0)
    vis = np.ones(K)
    vis[0] = 0                                         # unlabelled
    kps[1] = (-30.0, 100.0)                            # 7.5 heatmap px left of the map: window misses
    kps[2] = (-20.0, 100.0)                            # 5 px left: window still reaches column 0
    kps[3] = (100.0, 256 + 40.0)                       # far below
    out = codec.encode(kps, vis)
    assert out["target_weight"].tolist()[:5] == [0, 0, 1, 0, 1]
    assert out["heatmaps"][[0, 1, 3]].max() == 0 and out["heatmaps"][2].max() > 0
    kps[5] = (np.nan, 3.0)
    assert codec.encode(kps, vis)["target_weight"][5] == 0
    # optional stricter rule: everything outside the crop is dropped (joint 2's tail no longer counts)
    strict = HeatmapCodec(input_size=(192, 256), heatmap_size=(48, 64), sigma=2.0, drop_outside_crop=True)
    kps[6] = (191.0, 255.0)                            # last crop pixel: inside
    out = strict.encode(kps, vis)
    assert out["target_weight"].tolist()[:7] == [0, 0, 0, 0, 1, 0, 1] and out["heatmaps"][2].max() == 0


@pytest.mark.parametrize("dark,udp,tol", [(False, False, 0.3), (True, False, 0.1), (False, True, 0.3),
                                          (True, True, 0.1)])
def test_round_trip_stride4(dark, udp, tol):
    codec = HeatmapCodec(input_size=(192, 256), heatmap_size=(48, 64), sigma=2.0, dark=dark, udp=udp)
    rng = np.random.default_rng(0)
    kps = _interior_keypoints(rng, 4 * K, codec)
    hm, _ = _encode_batch(codec, kps)
    dec, scores = codec.decode(torch.from_numpy(hm))
    assert dec.shape == (4, K, 2) and scores.shape == (4, K) and dec.dtype == np.float32
    err_hm = np.abs(dec.reshape(-1, 2) - kps) / codec.stride     # heatmap pixels
    assert err_hm.max() < tol
    assert (scores > 0.5).all() and (scores <= 1.0).all()


def test_round_trip_full_resolution_stride1():
    codec = HeatmapCodec(input_size=(48, 64), heatmap_size=(48, 64), sigma=2.0)
    assert codec.flip_shift == 0                                 # stride 1 flips exactly
    rng = np.random.default_rng(1)
    kps = _interior_keypoints(rng, K, codec)
    hm, _ = _encode_batch(codec, kps)
    dec, _ = codec.decode(hm)
    assert np.abs(dec[0] - kps).max() < 0.3


def test_quarter_shift_follows_official_condition():
    codec = HeatmapCodec(input_size=(32, 32), heatmap_size=(8, 8))
    hm = np.zeros((1, 3, 8, 8), np.float32)
    hm[0, 0, 4, 4], hm[0, 0, 4, 5], hm[0, 0, 5, 4] = 1.0, 0.5, 0.2  # interior: shift +x, +y
    hm[0, 1, 4, 1], hm[0, 1, 4, 2] = 1.0, 0.5                        # x == 1: official leaves it alone
    hm[0, 2] = -1.0                                                   # no positive peak -> (0, 0)
    dec, scores = codec.decode(hm)
    np.testing.assert_allclose(dec[0, 0], [4.25 * 4, 4.25 * 4])
    np.testing.assert_allclose(dec[0, 1], [1 * 4, 4 * 4])
    np.testing.assert_allclose(dec[0, 2], [0, 0])
    np.testing.assert_allclose(scores[0], [1.0, 1.0, -1.0])
    np.testing.assert_allclose(codec.decode(torch.from_numpy(hm))[0], dec)


def test_flip_without_shift_twice_is_identity():
    codec = HeatmapCodec(input_size=(192, 256), heatmap_size=(48, 64))
    x = torch.rand(2, K, 64, 48)
    back = codec.flip_back(codec.flip_back(x, COCO.flip_index, shift=False), COCO.flip_index, shift=False)
    assert isinstance(back, torch.Tensor) and torch.equal(back, x)
    xn = x.numpy()
    twice = codec.flip_back(codec.flip_back(xn, COCO.flip_index, False), COCO.flip_index, False)
    np.testing.assert_array_equal(twice, xn)
    # numpy and torch paths agree, shift included
    np.testing.assert_array_equal(codec.flip_back(x, COCO.flip_index).numpy(), codec.flip_back(xn, COCO.flip_index))


def _flipped_encoding(codec, kps):
    """Targets of the horizontally mirrored crop: x -> W_in - 1 - x and left/right joints swapped."""
    flip = COCO.flip_index
    kf = kps[flip].copy()
    kf[:, 0] = codec.input_size[0] - 1 - kf[:, 0]
    return codec.encode(kf, np.ones(K))["heatmaps"][None]


def test_flip_back_udp_recovers_target_exactly():
    codec = HeatmapCodec(input_size=(192, 256), heatmap_size=(48, 64), udp=True)
    assert codec.flip_shift == 0
    kps = _interior_keypoints(np.random.default_rng(2), K, codec)
    target = codec.encode(kps, np.ones(K))["heatmaps"][None]
    np.testing.assert_allclose(codec.flip_back(_flipped_encoding(codec, kps), COCO.flip_index), target, atol=1e-6)


def test_flip_back_shift_moves_the_flipped_peak_onto_the_joint():
    # non-UDP stride 4: the mirrored map comes back 0.75 heatmap px too far left; the official 1 px shift
    # leaves +0.25 px. DARK decoding (error < 0.1 px) measures both.
    codec = HeatmapCodec(input_size=(192, 256), heatmap_size=(48, 64), dark=True)
    assert codec.flip_shift == 1
    kps = _interior_keypoints(np.random.default_rng(3), K, codec, margin_px=5)
    flipped = _flipped_encoding(codec, kps)
    with_shift, _ = codec.decode(codec.flip_back(flipped, COCO.flip_index))
    without, _ = codec.decode(codec.flip_back(flipped, COCO.flip_index, shift=False))
    dx_shift = (with_shift[0, :, 0] - kps[:, 0]) / 4
    dx_plain = (without[0, :, 0] - kps[:, 0]) / 4
    np.testing.assert_allclose(dx_shift, 0.25, atol=0.1)
    np.testing.assert_allclose(dx_plain, -0.75, atol=0.1)
    np.testing.assert_allclose(with_shift[0, :, 1], kps[:, 1], atol=0.4)   # each joint on its own channel


def test_flip_test_average():
    codec = HeatmapCodec(input_size=(192, 256), heatmap_size=(48, 64))
    a, b = torch.rand(1, K, 64, 48), torch.rand(1, K, 64, 48)
    avg = codec.flip_test_average(a, b, COCO.flip_index)
    torch.testing.assert_close(avg, 0.5 * (a + codec.flip_back(b, COCO.flip_index)))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="input_size"):
        HeatmapCodec(input_size=(192,), heatmap_size=(48, 64))
    with pytest.raises(ValueError, match="sigma"):
        HeatmapCodec(sigma=0)
    with pytest.raises(ValueError, match="dark_kernel"):
        HeatmapCodec(dark_kernel=4)
    codec = HeatmapCodec(input_size=(192, 256), heatmap_size=(48, 64))
    with pytest.raises(ValueError, match=r"keypoints must be \[K, 2\]"):
        codec.encode(np.zeros(17), np.ones(17))
    with pytest.raises(ValueError, match="visible has 3 entries"):
        codec.encode(np.zeros((17, 2)), np.ones(3))
    with pytest.raises(ValueError, match=r"heatmaps are 32x64 .*heatmap_size=\(48, 64\)"):
        codec.decode(np.zeros((1, 17, 64, 32)))
    with pytest.raises(ValueError, match=r"\[B, K, h, w\]"):
        codec.decode(np.zeros((17, 64, 48)))
    with pytest.raises(ValueError, match="NaN"):
        codec.decode(np.full((1, 17, 64, 48), np.nan))
    with pytest.raises(ValueError, match="permutation"):
        codec.flip_back(torch.zeros(1, 17, 64, 48), [0, 1, 2])


def test_encode_matches_a_per_joint_reference():
    """The vectorised encoder equals the plain per-joint loop (window, weights, values)."""
    rng = np.random.default_rng(7)
    for kw in ({}, {"udp": True}, {"sigma": 3.0}, {"drop_outside_crop": True}):
        codec = HeatmapCodec(input_size=(192, 256), heatmap_size=(48, 64), **kw)
        kps = rng.uniform(-60, 300, (K, 2))
        kps[3] = (1e300, 5.0)                                    # far away: weight 0, no overflow
        vis = rng.random(K) > 0.2
        out = codec.encode(kps, vis)
        (w, h), r = codec.heatmap_size, 3 * codec.sigma
        for j in range(K):
            mu = kps[j] / codec.stride
            ref = np.zeros((h, w))
            if out["target_weight"][j] > 0:
                for y in range(int(np.ceil(mu[1] - r)), int(np.floor(mu[1] + r)) + 1):
                    for x in range(int(np.ceil(mu[0] - r)), int(np.floor(mu[0] + r)) + 1):
                        if 0 <= x < w and 0 <= y < h:
                            ref[y, x] = np.exp(-((x - mu[0]) ** 2 + (y - mu[1]) ** 2) / (2 * codec.sigma ** 2))
            np.testing.assert_allclose(out["heatmaps"][j], ref, rtol=1e-6, atol=1e-7)
        assert out["target_weight"][3] == 0
