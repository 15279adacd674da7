import math

import numpy as np
import pytest
import torch

from posedistill.codecs import Codec, SimCCCodec
from posedistill.keypoints import COCO

K = COCO.num_joints


def _keypoints(rng, n=K, size=(192, 256), margin=30):
    return np.stack([rng.uniform(margin, size[0] - 1 - margin, n), rng.uniform(margin, size[1] - 1 - margin, n)], 1)


def test_encode_layout_and_normalisation():
    codec = SimCCCodec(input_size=(192, 256), split_ratio=2.0, sigma=6.0)
    assert isinstance(codec, Codec) and codec.target_keys == ("simcc_x", "simcc_y")
    kps = np.tile([[50.0, 100.0]], (K, 1))
    out = codec.encode(kps, np.ones(K))
    assert out["simcc_x"].shape == (K, 384) and out["simcc_y"].shape == (K, 512)
    assert out["simcc_x"].dtype == np.float32 and out["target_weight"].dtype == np.float32
    peak = 1.0 / (6.0 * math.sqrt(2 * math.pi))
    assert out["simcc_x"][0, 100] == pytest.approx(peak, rel=1e-6)       # bin = x * k
    assert out["simcc_y"][0, 200] == pytest.approx(peak, rel=1e-6)
    assert out["simcc_x"][0, 106] == pytest.approx(peak * math.exp(-0.5), rel=1e-5)
    np.testing.assert_allclose(out["simcc_x"].sum(1), 1.0, atol=1e-4)
    raw = SimCCCodec(input_size=(192, 256), sigma=(4.0, 5.0), normalize=False).encode(kps, np.ones(K))
    assert raw["simcc_x"].max() == pytest.approx(1.0) and raw["simcc_y"][0, 205] == pytest.approx(math.exp(-0.5))


def test_label_smoothing_mixes_with_uniform():
    plain = SimCCCodec(input_size=(64, 64), sigma=4.0).encode(np.array([[20.0, 30.0]]), [1])
    smooth = SimCCCodec(input_size=(64, 64), sigma=4.0, label_smoothing=0.1).encode(np.array([[20.0, 30.0]]), [1])
    np.testing.assert_allclose(smooth["simcc_x"], 0.9 * plain["simcc_x"] + 0.1 / 128, rtol=1e-5)


def test_weights():
    codec = SimCCCodec(input_size=(192, 256), sigma=6.0)
    kps = np.full((K, 2), 80.0)
    vis = np.ones(K)
    vis[0] = 0
    kps[1] = (-40.0, 80.0)          # 80 bins left of bin 0: outside the 3-sigma window
    kps[2] = (80.0, 300.0)          # below the crop by 44 px = 88 bins
    kps[3] = (-5.0, 80.0)           # 10 bins left: window reaches bin 0
    out = codec.encode(kps, vis)
    assert out["target_weight"][:5].tolist() == [0, 0, 0, 1, 1]
    assert out["simcc_x"][:3].max() == 0 and out["simcc_y"][:3].max() == 0
    strict = SimCCCodec(input_size=(192, 256), sigma=6.0, drop_outside_crop=True).encode(kps, vis)
    assert strict["target_weight"][:5].tolist() == [0, 0, 0, 0, 1] and strict["simcc_x"][3].max() == 0


@pytest.mark.parametrize("split", [2.0, 3.0])
def test_round_trip(split):
    codec = SimCCCodec(input_size=(192, 256), split_ratio=split, sigma=6.0)
    rng = np.random.default_rng(0)
    kps = np.stack([_keypoints(rng), _keypoints(rng)])                       # [2, K, 2]
    enc = [codec.encode(k, np.ones(K)) for k in kps]
    logits = tuple(torch.from_numpy(np.log(np.stack([e[key] for e in enc]) + 1e-12)) for key in codec.target_keys)
    dec, scores = codec.decode(logits)
    assert dec.shape == (2, K, 2) and scores.shape == (2, K)
    assert np.abs(dec - kps).max() <= 0.5
    # score = min over axes of the softmax maximum; with log-label logits the softmax is the normalised label
    px = torch.softmax(logits[0], -1).amax(-1).numpy()
    py = torch.softmax(logits[1], -1).amax(-1).numpy()
    np.testing.assert_allclose(scores, np.minimum(px, py), rtol=1e-5)
    np.testing.assert_allclose(codec.decode(tuple(t.numpy() for t in logits))[0], dec)


def test_flip_back():
    codec = SimCCCodec(input_size=(192, 256), split_ratio=2.0, sigma=6.0)
    assert codec.flip_shift == 1
    flip = COCO.flip_index
    x, y = torch.randn(2, K, 384), torch.randn(2, K, 512)
    # flipping twice without the shift is the identity
    fx, fy = codec.flip_back(codec.flip_back((x, y), flip, shift=False), flip, shift=False)
    assert torch.equal(fx, x) and torch.equal(fy, y)
    # labels of the mirrored crop, flipped back, are the labels of the crop
    kps = _keypoints(np.random.default_rng(1))
    kf = kps[flip].copy()
    kf[:, 0] = 192 - 1 - kf[:, 0]
    target = codec.encode(kps, np.ones(K))
    mirrored = codec.encode(kf, np.ones(K))
    bx, by = codec.flip_back((mirrored["simcc_x"][None], mirrored["simcc_y"][None]), flip)
    np.testing.assert_allclose(bx[0], target["simcc_x"], atol=1e-6)
    np.testing.assert_allclose(by[0], target["simcc_y"], atol=1e-6)
    tx, ty = codec.flip_back(tuple(torch.from_numpy(mirrored[key][None]) for key in codec.target_keys), flip)
    np.testing.assert_allclose(tx.numpy(), bx)
    np.testing.assert_allclose(ty.numpy(), by)
    ax, ay = codec.flip_test_average((x, y), (x, y), flip)
    torch.testing.assert_close(ax, 0.5 * (x + codec.flip_back((x, y), flip)[0]))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="split_ratio"):
        SimCCCodec(split_ratio=0)
    with pytest.raises(ValueError, match="sigma"):
        SimCCCodec(sigma=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="label_smoothing"):
        SimCCCodec(label_smoothing=1.0)
    codec = SimCCCodec(input_size=(192, 256))
    with pytest.raises(ValueError, match=r"x_logits must be \[B, K, 384\]"):
        codec.decode((np.zeros((1, K, 100)), np.zeros((1, K, 512))))
    with pytest.raises(ValueError, match="tuple"):
        codec.decode(np.zeros((1, K, 384)))
    with pytest.raises(ValueError, match="differ"):
        codec.decode((np.zeros((1, K, 384)), np.zeros((2, K, 512))))
    with pytest.raises(ValueError, match="visible has 2 entries"):
        codec.encode(np.zeros((K, 2)), np.ones(2))
