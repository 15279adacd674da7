"""PafCodec (seed 004, CMU-Pose targets): layouts, confidence maps, PAFs, mask, flip-back, decode."""
import numpy as np
import pytest
import torch

from posedistill.codecs import PafCodec, PafLayout, coco_paf_layout, paf_layout_from_meta
from posedistill.keypoints import COCO, CROWDPOSE, KeypointMeta

S = 8                                    # stride
LSHO, RSHO, LELB, RELB = 5, 6, 7, 8      # COCO indices


def _grid(codec):
    """Input-pixel centres (x [w], y [h]) of the output pixels: (u + 0.5) * stride - 0.5."""
    w, h = codec.heatmap_size
    return (np.arange(w) + 0.5) * S - 0.5, (np.arange(h) + 0.5) * S - 0.5


def _person(points: dict[int, tuple[float, float]], k: int = 17) -> np.ndarray:
    kp = np.zeros((k, 3))
    for j, (x, y) in points.items():
        kp[j] = (x, y, 2)
    return kp


def _random_people(rng, n, size=(368, 368), k=17, drop=0.15):
    kps = np.zeros((n, k, 3))
    kps[..., 0] = rng.uniform(10, size[0] - 10, (n, k))
    kps[..., 1] = rng.uniform(10, size[1] - 10, (n, k))
    kps[..., 2] = np.where(rng.random((n, k)) < drop, 0, 2)
    return kps


def _limb(codec, a, b):
    return codec.layout.limbs.index((a, b))


# ------------------------------------------------------------------------------------------ layouts

def test_coco_layout_is_cmu_pose():
    lay = coco_paf_layout()
    assert lay.num_joints == 18 and lay.joints[17] == "neck" and lay.joints[:17] == COCO.joints
    assert lay.neck == 17 and lay.neck_from == (5, 6) and lay.source_to_extended == tuple(range(17))
    names = [(lay.joints[a], lay.joints[b]) for a, b in lay.limbs]
    # CMU's limbSeq written out by name (reference-notes: 1-indexed, 2 = neck, 3 = right shoulder, ...)
    assert names == [
        ("neck", "right_shoulder"), ("neck", "left_shoulder"), ("right_shoulder", "right_elbow"),
        ("right_elbow", "right_wrist"), ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
        ("neck", "right_hip"), ("right_hip", "right_knee"), ("right_knee", "right_ankle"),
        ("neck", "left_hip"), ("left_hip", "left_knee"), ("left_knee", "left_ankle"), ("neck", "nose"),
        ("nose", "right_eye"), ("right_eye", "right_ear"), ("nose", "left_eye"), ("left_eye", "left_ear"),
        ("right_shoulder", "right_ear"), ("left_shoulder", "left_ear")]
    codec = PafCodec()
    assert codec.num_confidence_maps == 19 and codec.num_pafs == 38 and codec.heatmap_size == (46, 46)
    assert codec.target_keys == ("confidence_maps", "pafs", "mask")
    m, sign = lay.limb_flip()
    assert names[m[0]] == ("neck", "left_shoulder") and m[12] == 12 and (sign == 1).all()


def test_layout_from_meta():
    crowd = paf_layout_from_meta(CROWDPOSE)
    assert crowd.joints == CROWDPOSE.joints and crowd.limbs == CROWDPOSE.skeleton and crowd.neck is None
    coco = paf_layout_from_meta(COCO, neck_from=(5, 6))
    assert coco.num_joints == 18 and coco.limbs[:2] == ((17, 5), (17, 6)) and coco.limbs[2:] == COCO.skeleton
    m, sign = coco.limb_flip()
    hips = coco.limbs.index((11, 12))            # left_hip -> right_hip mirrors onto itself, reversed
    assert m[hips] == hips and sign[hips] == -1
    with pytest.raises(ValueError, match="neck_from"):
        paf_layout_from_meta(COCO, neck_from=(5, 5))
    lopsided = KeypointMeta(name="toy", joints=("left_a", "right_a", "b"), flip_pairs=((0, 1),),
                            skeleton=((0, 2),), sigmas=(), joint_weights=(1.0,) * 3, upper_body=())
    codec = PafCodec(paf_layout_from_meta(lopsided), input_size=(32, 32))
    with pytest.raises(ValueError, match="no mirror limb"):
        codec.flip_back(np.zeros((4, 4, 4)), np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="cover"):
        PafLayout(joints=("a", "b"), limbs=((0, 1),), source_to_extended=(0, 0))
    with pytest.raises(ValueError, match="limbs"):
        PafLayout(joints=("a", "b"), limbs=((0, 0),), source_to_extended=(0, 1))


# ------------------------------------------------------------------------------------------ encode

def test_shapes_and_argument_errors():
    codec = PafCodec(input_size=(64, 48))
    out = codec.encode_people(np.zeros((0, 17, 3)))
    assert out["confidence_maps"].shape == (19, 6, 8) and out["pafs"].shape == (38, 6, 8)
    assert out["mask"].shape == (1, 6, 8) and all(v.dtype == np.float32 for v in out.values())
    assert (out["confidence_maps"][18] == 1).all() and not out["pafs"].any() and (out["mask"] == 1).all()
    with pytest.raises(ValueError, match="keypoints must be"):
        codec.encode_people(np.zeros((2, 17, 2)))
    with pytest.raises(ValueError, match="ignore_mask"):
        codec.encode_people(np.zeros((1, 17, 3)), np.zeros((64, 48), bool))
    with pytest.raises(ValueError, match="input_size"):
        PafCodec(input_size=(60, 48))
    with pytest.raises(ValueError, match="confidence_maps"):
        codec.decode(np.zeros((17, 6, 8)), np.zeros((38, 6, 8)))
    with pytest.raises(ValueError, match="pafs"):
        codec.decode(np.zeros((19, 6, 8)), np.zeros((38, 6, 7)))
    with pytest.raises(ValueError, match="pafs"):
        codec.flip_back(np.zeros((19, 6, 8)), np.zeros((36, 6, 8)))


def test_gaussian_centre_convention_and_background():
    codec = PafCodec(input_size=(96, 64))
    u, v = 5, 3                                            # output pixel whose centre is the joint
    x, y = (u + 0.5) * S - 0.5, (v + 0.5) * S - 0.5
    cm = codec.encode_people(_person({0: (x, y)})[None])["confidence_maps"]
    assert cm[0, v, u] == pytest.approx(1.0)
    assert cm[0, v, u + 1] == pytest.approx(np.exp(-S ** 2 / (2 * 7.0 ** 2)), rel=1e-6)   # sigma 7 input px
    assert cm[1:18].max() == 0                             # nothing else labelled, no neck
    np.testing.assert_allclose(cm[18], 1 - cm[:18].max(axis=0), atol=1e-7)


def test_confidence_maps_are_the_max_over_people():
    rng = np.random.default_rng(0)
    codec = PafCodec(input_size=(128, 96))
    people = _random_people(rng, 4, (128, 96))
    together = codec.encode_people(people)["confidence_maps"]
    alone = np.stack([codec.encode_people(p[None])["confidence_maps"] for p in people])
    np.testing.assert_allclose(together[:18], alone[:, :18].max(axis=0), atol=1e-7)
    np.testing.assert_allclose(together[18], 1 - together[:18].max(axis=0), atol=1e-7)
    # and the map of one person is the Gaussian of the formula, checked at every pixel
    gx, gy = _grid(codec)
    j = int(np.nonzero(people[0, :, 2])[0][0])
    d2 = (gx[None] - people[0, j, 0]) ** 2 + (gy[:, None] - people[0, j, 1]) ** 2
    np.testing.assert_allclose(alone[0, j], np.exp(-d2 / (2 * 7.0 ** 2)), atol=1e-6)


def test_neck_only_when_both_shoulders_are_labelled():
    codec = PafCodec(input_size=(128, 128))
    both = codec.encode_people(_person({LSHO: (40, 60), RSHO: (80, 60)})[None])
    cm = both["confidence_maps"][17]
    yy, xx = np.unravel_index(cm.argmax(), cm.shape)
    assert cm.max() > 0.5 and (xx + 0.5) * S - 0.5 == pytest.approx(60, abs=S / 2)
    assert both["pafs"][2 * _limb(codec, 17, 5)].any()                    # neck -> left shoulder
    one = codec.encode_people(_person({LSHO: (40, 60), LELB: (40, 100)})[None])
    assert one["confidence_maps"][17].max() == 0
    assert not one["pafs"][:4].any()                                      # neither neck limb


def test_single_limb_is_a_unit_vector_inside_its_region_only():
    codec = PafCodec(input_size=(128, 96))
    a, b = np.array([20.0, 30.0]), np.array([100.0, 70.0])              # left shoulder -> left elbow
    pafs = codec.encode_people(_person({LSHO: a, LELB: b})[None])["pafs"]
    l = _limb(codec, LSHO, LELB)
    # brute force, in output pixels: projection in [0, |b - a|] and distance to the line <= 1
    ga, gb = (a + 0.5) / S - 0.5, (b + 0.5) / S - 0.5
    v = (gb - ga) / np.linalg.norm(gb - ga)
    w, h = codec.heatmap_size
    inside = np.zeros((h, w), bool)
    for yy in range(h):
        for xx in range(w):
            p = np.array([xx, yy]) - ga
            inside[yy, xx] = 0 <= p @ v <= np.linalg.norm(gb - ga) and abs(p[0] * v[1] - p[1] * v[0]) <= 1.0
    assert inside.sum() >= 20
    np.testing.assert_allclose(pafs[2 * l][inside], v[0], atol=1e-6)
    np.testing.assert_allclose(pafs[2 * l + 1][inside], v[1], atol=1e-6)
    assert not pafs[2 * l][~inside].any() and not pafs[2 * l + 1][~inside].any()
    others = np.delete(pafs, [2 * l, 2 * l + 1], axis=0)
    assert not others.any()


def test_overlapping_limbs_average():
    codec = PafCodec(input_size=(256, 64))
    l = _limb(codec, LSHO, LELB)
    y = (3 + 0.5) * S - 0.5                                               # on output row 3
    # two collinear limbs of opposite directions: x 2..20 (output px) rightwards, 14..28 leftwards
    gx = lambda u: (u + 0.5) * S - 0.5                                    # noqa: E731
    people = np.stack([_person({LSHO: (gx(2), y), LELB: (gx(20), y)}), _person({LSHO: (gx(28), y), LELB: (gx(14), y)})])
    px = codec.encode_people(people)["pafs"][2 * l, 3]
    np.testing.assert_allclose(px[2:14], 1.0)                             # first only
    np.testing.assert_allclose(px[14:21], 0.0, atol=1e-7)                 # both: (1 + -1) / 2
    np.testing.assert_allclose(px[21:29], -1.0)                           # second only
    assert px[29:].max() == 0 and px[:2].max() == 0
    # crossing limbs at right angles: the mean of the two unit vectors (not renormalised)
    people = np.stack([_person({LSHO: (gx(2), gx(4)), LELB: (gx(12), gx(4))}),
                       _person({LSHO: (gx(7), gx(0)), LELB: (gx(7), gx(7))})])
    pafs = codec.encode_people(people)["pafs"]
    assert (pafs[2 * l, 4, 7], pafs[2 * l + 1, 4, 7]) == pytest.approx((0.5, 0.5))


def test_mask_downsamples_the_ignore_mask():
    codec = PafCodec(input_size=(64, 32))
    ignore = np.zeros((32, 64), bool)
    ignore[0:8, 0:8] = True                                               # one whole output pixel
    ignore[8:16, 8:12] = True                                             # half of one
    ignore[23, 47] = True                                                 # a single input pixel
    mask = codec.encode_people(np.zeros((0, 17, 3)), ignore)["mask"][0]
    expected = np.ones((4, 8), np.float32)
    expected[0, 0] = expected[1, 1] = expected[2, 5] = 0                  # any ignored pixel ignores
    np.testing.assert_array_equal(mask, expected)


# ------------------------------------------------------------------------------------------ flip

def _flip_people(people, width):
    out = people[:, COCO.flip_index].copy()
    out[..., 0] = width - 1 - out[..., 0]
    return out


@pytest.mark.parametrize("layout", [coco_paf_layout(), paf_layout_from_meta(COCO, neck_from=(5, 6))],
                         ids=["cmu", "coco-skeleton"])
def test_flip_back_of_the_flipped_encoding_is_the_encoding(layout):
    rng = np.random.default_rng(1)
    codec = PafCodec(layout, input_size=(160, 96))
    people = _random_people(rng, 3, (160, 96))
    ignore = rng.random((96, 160)) < 0.3
    ref = codec.encode_people(people, ignore)
    flipped = codec.encode_people(_flip_people(people, 160), ignore[:, ::-1])
    cm, pafs = codec.flip_back(flipped["confidence_maps"], flipped["pafs"])
    np.testing.assert_allclose(cm, ref["confidence_maps"], atol=1e-5)
    np.testing.assert_allclose(pafs, ref["pafs"], atol=1e-5)
    np.testing.assert_array_equal(flipped["mask"][..., ::-1], ref["mask"])
    assert np.abs(ref["pafs"]).max() > 0.9


def test_flip_back_twice_is_the_identity_for_arrays_and_tensors():
    rng = np.random.default_rng(2)
    codec = PafCodec(paf_layout_from_meta(COCO, neck_from=(5, 6)), input_size=(40, 24))
    cm, pafs = rng.random((2, 19, 3, 5)).astype(np.float32), rng.normal(size=(2, 42, 3, 5)).astype(np.float32)
    twice = codec.flip_back(*codec.flip_back(cm, pafs))
    np.testing.assert_array_equal(twice[0], cm)
    np.testing.assert_array_equal(twice[1], pafs)
    once = codec.flip_back(cm[0], pafs[0])                                # [C, h, w] too
    assert not np.array_equal(once[1], pafs[0])
    tcm, tpafs = codec.flip_back(torch.from_numpy(cm), torch.from_numpy(pafs))
    assert isinstance(tcm, torch.Tensor)
    np.testing.assert_array_equal(tcm.numpy()[0], once[0])
    np.testing.assert_array_equal(tpafs.numpy()[0], once[1])
    back = codec.flip_back(tcm, tpafs)
    assert torch.equal(back[0], torch.from_numpy(cm)) and torch.equal(back[1], torch.from_numpy(pafs))


# ------------------------------------------------------------------------------------------ decode

def _standing(x0, y0, scale=1.0):
    """A frontal person (COCO joints) with its hip centre at (x0, y0); about 280 * scale px tall."""
    offsets = {0: (0, -190), 1: (8, -198), 2: (-8, -198), 3: (18, -192), 4: (-18, -192), 5: (35, -150),
               6: (-35, -150), 7: (50, -100), 8: (-50, -100), 9: (55, -55), 10: (-55, -55), 11: (22, 0),
               12: (-22, 0), 13: (25, 45), 14: (-25, 45), 15: (25, 90), 16: (-25, 90)}
    return _person({j: (x0 + scale * dx, y0 + scale * dy) for j, (dx, dy) in offsets.items()})


@pytest.mark.parametrize("upsample,tol", [(False, 0.05), (True, 1.0)])
def test_decode_gives_back_the_people(upsample, tol):
    codec = PafCodec(input_size=(368, 368), upsample=upsample)
    people = np.stack([_standing(100.3, 230.6), _standing(270.9, 240.2, 1.1)])
    people[1, 10, 2] = 0                                                   # unlabelled right wrist
    enc = codec.encode_people(people)
    kps, scores = codec.decode(torch.from_numpy(enc["confidence_maps"])[None], enc["pafs"])
    assert kps.shape == (2, 17, 3) and kps.dtype == np.float32 and scores.shape == (2,)
    assert (np.diff(scores) <= 0).all()
    kps = kps[np.argsort(kps[:, 0, 0])]
    lab = people[..., 2] > 0
    np.testing.assert_allclose(kps[..., :2][lab], people[..., :2][lab], atol=tol)
    assert (kps[..., 2][lab] > 0.5).all() and (kps[1, 10] == 0).all()


def test_decode_with_a_layout_from_meta():
    codec = PafCodec(paf_layout_from_meta(CROWDPOSE), input_size=(256, 256))
    j = np.arange(14)
    people = np.stack([np.stack([x0 + 20 * np.cos(j), 60 + 12 * j, np.full(14, 2.0)], axis=1) for x0 in (80, 180)])
    enc = codec.encode_people(people)
    assert enc["confidence_maps"].shape == (15, 32, 32) and enc["pafs"].shape == (28, 32, 32)
    kps, _ = codec.decode(enc["confidence_maps"], enc["pafs"])
    kps = kps[np.argsort(kps[:, 0, 0])]
    np.testing.assert_allclose(kps[..., :2], people[..., :2], atol=0.05)
