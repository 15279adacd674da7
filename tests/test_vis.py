"""Pose drawing and picture grids."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from posedistill.keypoints import COCO, MPII
from posedistill.vis import CENTER_BGR, LEFT_BGR, RIGHT_BGR, draw_poses, joint_sides, save_grid


def test_joint_sides_from_names():
    sides = joint_sides(COCO)
    assert sides[COCO.index("nose")] == 0 and sides[COCO.index("left_wrist")] == 1
    assert sides[COCO.index("right_ankle")] == -1
    sides = joint_sides(MPII)
    assert sides[MPII.index("thorax")] == 0 and sides[MPII.index("left_knee")] == 1


def test_draw_poses_colours_by_side_and_threshold():
    img = np.zeros((100, 120, 3), np.uint8)
    kps = np.zeros((1, 17, 3))
    kps[0, COCO.index("left_wrist")] = (20, 20, 0.9)
    kps[0, COCO.index("right_wrist")] = (90, 20, 0.9)
    kps[0, COCO.index("nose")] = (55, 70, 0.9)
    kps[0, COCO.index("left_ankle")] = (20, 80, 0.1)      # below threshold: not drawn
    out = draw_poses(img, kps, COCO, radius=4)
    assert out is not img and not img.any()               # input untouched
    assert tuple(out[20, 20]) == LEFT_BGR and tuple(out[20, 90]) == RIGHT_BGR and tuple(out[70, 55]) == CENTER_BGR
    assert not out[75:86, 15:26].any()
    # a limb between two drawn joints of one side takes that side's colour
    kps[0, COCO.index("left_elbow")] = (20, 50, 0.9)
    out = draw_poses(img, kps, COCO, radius=2, thickness=3)
    assert tuple(out[35, 20]) == LEFT_BGR


def test_draw_poses_shapes_and_errors():
    img = np.zeros((40, 40, 3), np.uint8)
    assert draw_poses(img, np.zeros((0, 17, 3)), COCO).shape == img.shape   # no people
    assert draw_poses(img, np.zeros((17, 3)), COCO).shape == img.shape      # one person, no batch axis
    with pytest.raises(ValueError, match="16, 3"):
        draw_poses(img, np.zeros((1, 17, 3)), MPII)
    with pytest.raises(ValueError, match="BGR"):
        draw_poses(np.zeros((40, 40), np.uint8), np.zeros((1, 17, 3)), COCO)
    boxed = draw_poses(img, np.zeros((1, 17, 3)), COCO, boxes=np.array([[5, 5, 20, 20]]), thickness=2)
    assert boxed[5, 15].any()


def test_save_grid(tmp_path):
    a = np.full((30, 40, 3), 50, np.uint8)
    b = np.full((60, 80, 3), 200, np.uint8)      # resized to the first image's width
    grid = save_grid([a, b, a], tmp_path / "g.png", cols=2, pad=2, row_labels=["x", "y"])
    assert grid.shape == (2 * 30 + 3 * 2, 2 * 40 + 3 * 2, 3)
    back = cv2.imread(str(tmp_path / "g.png"))
    assert back.shape == grid.shape and back[2 + 15, 2 + 40 + 2 + 20, 0] == 200
    with pytest.raises(ValueError, match="row labels"):
        save_grid([a], tmp_path / "h.png", row_labels=["x", "y"])
    with pytest.raises(ValueError, match="no images"):
        save_grid([], tmp_path / "h.png")
