"""The IGP-GCN refiner (seed 002 stage 2): its graph, its feature sampling, its start, its flip test."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from posedistill.codecs import CoordinateCodec
from posedistill.keypoints import COCO, CROWDPOSE
from posedistill.models import create_model_at
from posedistill.models.gcn_refiner import IGPGCN, sample_at_joints, skeleton_adjacency


@pytest.mark.parametrize("meta", [COCO, CROWDPOSE], ids=lambda m: m.name)
def test_graph_is_the_skeleton(meta):
    refiner = IGPGCN(meta.num_joints, meta.skeleton, (8, 8, 8), (48, 64), hidden=16)
    adj = refiner.adjacency.numpy()
    edges = {frozenset(e) for e in meta.skeleton}
    for i in range(meta.num_joints):
        for j in range(meta.num_joints):
            assert adj[i, j] == (1.0 if i == j or frozenset((i, j)) in edges else 0.0), (i, j)
    # every graph convolution propagates along exactly these edges: at init D^-1 (A + I), row-stochastic
    conv = refiner.blocks[0].gc1.conv
    expected = adj / adj.sum(1, keepdims=True)
    np.testing.assert_allclose(conv.propagation().detach().numpy(), expected, rtol=1e-6)
    with torch.no_grad():
        conv.edge_logits.normal_()
    a = conv.propagation().detach().numpy()
    assert (a[adj == 0] == 0).all() and np.allclose(a.sum(1), 1.0)


def test_skeleton_edge_outside_the_joints_is_refused():
    with pytest.raises(ValueError, match=r"edge \(0, 5\) is outside the 3 joints"):
        skeleton_adjacency(3, [(0, 1), (0, 5)])


def _bilinear(fmap: np.ndarray, x: float, y: float) -> np.ndarray:
    """Bilinear read of fmap [C, h, w] at map coordinate (x, y), by hand."""
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    fx, fy = x - x0, y - y0
    return (fmap[:, y0, x0] * (1 - fx) * (1 - fy) + fmap[:, y0, x0 + 1] * fx * (1 - fy)
            + fmap[:, y0 + 1, x0] * (1 - fx) * fy + fmap[:, y0 + 1, x0 + 1] * fx * fy)


def test_sampling_at_a_joint_is_a_bilinear_read_at_point_over_stride():
    g = torch.Generator().manual_seed(0)
    fmap = torch.randn(2, 5, 8, 6, generator=g)          # stride 8 under a 48x64 (w x h) crop
    points = torch.tensor([[[10.0, 20.0], [3.5, 41.25]], [[30.0, 7.0], [0.0, 0.0]]])
    got = sample_at_joints(fmap, points, (48, 64)).numpy()
    for b in range(2):
        for k in range(2):
            x, y = points[b, k].tolist()
            np.testing.assert_allclose(got[b, k], _bilinear(fmap[b].numpy(), x / 8, y / 8), rtol=1e-5, atol=1e-6)


def _tiny(num_joints: int = 14):
    return create_model_at("simcc_igp_gcn", {"num_joints": num_joints, "student": "simcc_hrnet_w16_small", "hidden": 16},
                           (48, 64), 2.0).eval()


def test_untrained_refiner_returns_the_stage1_pose_and_its_confidence():
    model = _tiny()
    x = torch.randn(2, 3, 64, 48)
    xy, conf, maps = model.initial_pose(x)
    assert [m.shape[-1] for m in maps] == [3, 6, 12]            # strides 16, 8, 4: low to high resolution
    out = model(x)
    assert out.shape == (2, 14, 3)
    assert torch.allclose(out[..., :2], xy, atol=1e-5) and torch.equal(out[..., 2], conf)   # via [-1, 1] and back


def test_flip_test_maps_the_mirrored_crop_back():
    """A joint the mirrored crop puts at x' belongs to the mirrored joint at W - 1 - x' (hand-worked)."""
    codec = CoordinateCodec((8, 4))
    flip_index = [1, 0, 2]                                  # joints 0 and 1 are a left / right pair
    flipped = torch.tensor([[[2.0, 1.0, 0.5], [6.0, 3.0, 0.7], [3.0, 2.0, 0.9]]], dtype=torch.float64)
    back = codec.flip_back(flipped, flip_index)
    assert back.tolist() == [[[1.0, 3.0, 0.7], [5.0, 1.0, 0.5], [4.0, 2.0, 0.9]]]
    own = torch.tensor([[[1.5, 3.0, 0.5], [5.0, 1.0, 0.5], [4.0, 2.5, 0.5]]], dtype=torch.float64)
    avg = codec.flip_test_average(own, flipped, flip_index)
    assert avg.tolist() == [[[1.25, 3.0, 0.6], [5.0, 1.0, 0.5], [4.0, 2.25, 0.7]]]
    np.testing.assert_allclose(codec.flip_back(flipped.numpy(), flip_index), back.numpy())


def test_refined_model_runs_the_flip_test_of_evaluation():
    """What `engine.evaluate.predict` does with flip_test on, on the student + refiner module."""
    model = _tiny()
    codec = CoordinateCodec((48, 64))
    x = torch.randn(3, 3, 64, 48)
    with torch.no_grad():
        out = codec.flip_test_average(model(x), model(x.flip(3)), CROWDPOSE.flip_index)
    coords, scores = codec.decode(out)
    assert coords.shape == (3, 14, 2) and scores.shape == (3, 14) and np.isfinite(coords).all()
