"""Rendering of synthetic multi-person scenes with exact COCO-17 keypoints.

A person is a small 3-D stick skeleton (body units: standing height 1) posed with joint angles
inside anatomical limits, turned about the vertical axis (front / side / back views), projected
orthographically, rolled in the image plane (lying people) and scaled to its pixel height. Body
parts (torso box, head ellipsoid, limb capsules, hands, feet) are painted back to front with OpenCV
into the colour image and, with the same geometry, into a uint16 label map that records which part
of which person (or which occluder) owns every pixel. Visibility flags are read from that map, so a
joint flagged visible always lies on its own person's pixels.

Cues that make left/right and front/back readable (not guessable):
- the left side of the body is painted lighter than the right (limbs and torso half);
- most people wear a marker cuff on the left wrist and left ankle (``MARKER_BGR``);
- the face (eyes, nose, mouth) is drawn only on the camera-facing side of the head; seen from the
  back the head shows hair, and eyes/nose are unlabelled (v=0) as COCO annotators would leave them.

Label map values: 0 background, ``1 + person * PARTS_PER_PERSON + part`` for people,
``OCCLUDER_LABEL`` for occluding objects.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

# ---------------------------------------------------------------------------------------------
# Skeleton: COCO-17 joints first (annotation order), then helper points used for drawing / other
# keypoint sets.
NOSE, L_EYE, R_EYE, L_EAR, R_EAR = 0, 1, 2, 3, 4
L_SHO, R_SHO, L_ELB, R_ELB, L_WRI, R_WRI = 5, 6, 7, 8, 9, 10
L_HIP, R_HIP, L_KNE, R_KNE, L_ANK, R_ANK = 11, 12, 13, 14, 15, 16
HEAD_C, HEAD_TOP, CHIN, NECK, PELVIS, L_HAND, R_HAND, L_TOE, R_TOE = range(17, 26)
NUM_POINTS = 26
NUM_COCO = 17

# Body parts (index into the label map, per person).
TORSO, HEAD, NECK_P = 0, 1, 2
L_UARM, L_FARM, L_HANDP, R_UARM, R_FARM, R_HANDP = 3, 4, 5, 6, 7, 8
L_THIGH, L_SHIN, L_FOOT, R_THIGH, R_SHIN, R_FOOT = 9, 10, 11, 12, 13, 14
PARTS_PER_PERSON = 16
OCCLUDER_LABEL = 65000
MAX_PEOPLE = (OCCLUDER_LABEL - 1) // PARTS_PER_PERSON

# Parts a joint may be seen on. Shoulders / hips may also be seen on the torso, but only when
# they are on the camera side of it (checked with depth, see `_joint_visibility`).
JOINT_PARTS: dict[int, tuple[int, ...]] = {
    L_SHO: (L_UARM, NECK_P), R_SHO: (R_UARM, NECK_P),
    L_ELB: (L_UARM, L_FARM), R_ELB: (R_UARM, R_FARM),
    L_WRI: (L_FARM, L_HANDP), R_WRI: (R_FARM, R_HANDP),
    L_HIP: (L_THIGH,), R_HIP: (R_THIGH,),
    L_KNE: (L_THIGH, L_SHIN), R_KNE: (R_THIGH, R_SHIN),
    L_ANK: (L_SHIN, L_FOOT), R_ANK: (R_SHIN, R_FOOT),
    HEAD_TOP: (HEAD,), NECK: (NECK_P, TORSO, HEAD), CHIN: (HEAD, NECK_P),
    PELVIS: (L_THIGH, R_THIGH),
}

# Body proportions in units of standing height (anthropometric ratios, rounded).
PROPORTIONS = {
    "torso": 0.29, "shoulder_half": 0.115, "hip_half": 0.085, "neck": 0.045,
    "head_rx": 0.056, "head_ry": 0.068, "upper_arm": 0.165, "forearm": 0.145, "hand": 0.055,
    "thigh": 0.245, "shin": 0.245, "foot": 0.075,
}
# Capsule radii, same units.
RADII = {"upper_arm": 0.032, "forearm": 0.026, "hand": 0.024, "thigh": 0.048, "shin": 0.036,
         "foot": 0.022, "neck": 0.028}

# Joint-angle limits in degrees (clipped after sampling).
LIMITS = {
    "arm_elev": (0.0, 175.0), "arm_az": (-45.0, 135.0), "elbow": (0.0, 150.0), "twist": (-70.0, 70.0),
    "hip_flex": (-30.0, 120.0), "hip_abd": (-10.0, 45.0), "knee": (0.0, 150.0),
    "lean": (-20.0, 45.0), "head_yaw": (-50.0, 50.0), "head_pitch": (-20.0, 30.0),
}
POSE_KINDS = ("standing", "walking", "sitting", "arms_raised", "lying", "mixed")
MARKER_BGR = (40, 230, 255)   # yellow cuff on the left wrist and ankle
LEFT_LIGHT, RIGHT_DARK = 1.2, 0.85


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-9 else v


def sample_pose(rng: np.random.Generator, kind: str) -> dict[str, np.ndarray | float]:
    """Joint angles (degrees) for one pose of `kind`; arrays are (left, right)."""
    u = rng.uniform
    p: dict[str, np.ndarray | float] = {
        "lean": u(-5, 10), "head_yaw": u(-30, 30), "head_pitch": u(-10, 15), "roll": u(-8, 8),
        "arm_elev": u(5, 30, 2), "arm_az": u(-20, 40, 2), "elbow": u(0, 40, 2), "twist": u(-30, 30, 2),
        "hip_flex": u(-5, 10, 2), "hip_abd": u(0, 12, 2), "knee": u(0, 10, 2),
    }
    if kind == "walking":
        a = u(15, 35)
        front = int(rng.integers(2))               # which leg swings forward
        hip = np.array([-a, -a]); hip[front] = a * u(0.7, 1.0)
        knee = np.array([0.0, 0.0]); knee[front] = u(0, 15); knee[1 - front] = u(10, 50)
        p["hip_flex"], p["knee"], p["hip_abd"] = hip, knee, u(0, 6, 2)
        az = np.array([-90.0, -90.0]); az[1 - front] = 90.0   # arms swing against the legs
        p["arm_elev"], p["arm_az"], p["elbow"] = u(0.5, 0.9, 2) * a, az + u(-15, 15, 2), u(10, 45, 2)
        p["lean"] = u(0, 10)
    elif kind == "sitting":
        p["lean"] = u(-10, 15)
        p["hip_flex"], p["hip_abd"], p["knee"] = u(70, 100, 2), u(5, 25, 2), u(70, 110, 2)
        p["arm_elev"], p["arm_az"], p["elbow"] = u(15, 45, 2), u(60, 100, 2), u(40, 90, 2)
    elif kind == "arms_raised":
        which = rng.choice(3)                       # left, right or both arms up
        for i in range(2):
            if which == 2 or which == i:
                p["arm_elev"][i], p["arm_az"][i], p["elbow"][i] = u(100, 170), u(-10, 90), u(0, 60)
        p["hip_abd"] = u(0, 25, 2)
    elif kind == "mixed":
        for key in ("arm_elev", "arm_az", "elbow", "twist", "hip_abd"):
            p[key] = u(*LIMITS[key], 2)
        p["hip_flex"] = u(-25, 100, 2)
        p["knee"] = np.minimum(u(0, 140, 2), np.maximum(p["hip_flex"], 0) + 60)
        p["lean"] = u(-10, 40)
    elif kind == "lying":
        p = sample_pose(rng, str(rng.choice(["standing", "mixed", "arms_raised"])))
        p["roll"] = float(rng.choice([-1, 1])) * u(75, 105)
        return p
    elif kind != "standing":
        raise ValueError(f"unknown pose kind {kind!r}; expected one of {POSE_KINDS}")
    for key, (lo, hi) in LIMITS.items():
        p[key] = np.clip(p[key], lo, hi)
    return p


def sample_yaw(rng: np.random.Generator) -> float:
    """Body yaw in degrees: 0 faces the camera, +-90 side, 180 back."""
    r = rng.random()
    if r < 0.4:
        return rng.uniform(-35, 35)
    if r < 0.7:
        return float(rng.choice([-1, 1])) * rng.uniform(55, 125)
    if r < 0.9:
        return rng.uniform(145, 215)
    return rng.uniform(-180, 180)


def build_skeleton(pose: dict, props: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """3-D points [NUM_POINTS, 3] in the body frame (x = person's left, y = down, z = forward,
    origin at the pelvis) and the head frame [3, 3] (rows: left, up, forward)."""
    rad = math.radians
    X, D, F = np.eye(3)
    pts = np.zeros((NUM_POINTS, 3))
    lean = rad(float(pose["lean"]))
    t = -math.cos(lean) * D + math.sin(lean) * F          # torso up
    ft = math.cos(lean) * F + math.sin(lean) * D          # torso forward
    pts[L_HIP], pts[R_HIP] = props["hip_half"] * X, -props["hip_half"] * X
    sc = props["torso"] * t
    pts[L_SHO], pts[R_SHO] = sc + props["shoulder_half"] * X, sc - props["shoulder_half"] * X
    pts[NECK] = sc
    yaw, pitch = rad(float(pose["head_yaw"])), rad(float(pose["head_pitch"]))
    fh = math.cos(yaw) * ft + math.sin(yaw) * X
    lh = math.cos(yaw) * X - math.sin(yaw) * ft
    uh = math.cos(pitch) * t + math.sin(pitch) * fh
    fh = math.cos(pitch) * fh - math.sin(pitch) * t
    hc = sc + (props["neck"] + props["head_ry"]) * t
    rx, ry = props["head_rx"], props["head_ry"]
    pts[HEAD_C] = hc
    pts[HEAD_TOP] = hc + ry * uh
    pts[CHIN] = hc - 0.9 * ry * uh + 0.3 * rx * fh
    pts[NOSE] = hc - 0.15 * ry * uh + 1.05 * rx * fh
    for side, eye, ear in ((1, L_EYE, L_EAR), (-1, R_EYE, R_EAR)):
        pts[eye] = hc + 0.12 * ry * uh + 0.85 * rx * fh + side * 0.42 * rx * lh
        pts[ear] = hc + 0.02 * ry * uh - 0.05 * rx * fh + side * 1.0 * rx * lh
    for i, side in enumerate((1, -1)):
        sho, elb, wri, hand = (L_SHO, L_ELB, L_WRI, L_HAND) if side == 1 else (R_SHO, R_ELB, R_WRI, R_HAND)
        e, az = rad(float(pose["arm_elev"][i])), rad(float(pose["arm_az"][i]))
        v = _unit(math.cos(e) * (-t) + math.sin(e) * (math.cos(az) * side * X + math.sin(az) * ft))
        b0 = ft - (ft @ v) * v
        if np.linalg.norm(b0) < 0.2:
            b0 = t - (t @ v) * v
        b0 = _unit(b0)
        g = rad(float(pose["twist"][i]))
        b = math.cos(g) * b0 + math.sin(g) * side * _unit(np.cross(v, b0))
        be = rad(float(pose["elbow"][i]))
        w = _unit(math.cos(be) * v + math.sin(be) * b)
        pts[elb] = pts[sho] + props["upper_arm"] * v
        pts[wri] = pts[elb] + props["forearm"] * w
        pts[hand] = pts[wri] + props["hand"] * w
        hip, kne, ank, toe = (L_HIP, L_KNE, L_ANK, L_TOE) if side == 1 else (R_HIP, R_KNE, R_ANK, R_TOE)
        f, a = rad(float(pose["hip_flex"][i])), rad(float(pose["hip_abd"][i]))
        v = math.cos(f) * D + math.sin(f) * F
        v = _unit(math.cos(a) * v + math.sin(a) * side * X)
        b0 = -F - (-F @ v) * v
        if np.linalg.norm(b0) < 0.2:
            b0 = D - (D @ v) * v
        b0 = _unit(b0)
        k = rad(float(pose["knee"][i]))
        w = _unit(math.cos(k) * v + math.sin(k) * b0)
        pts[kne] = pts[hip] + props["thigh"] * v
        pts[ank] = pts[kne] + props["shin"] * w
        fwd = F - (F @ w) * w
        pts[toe] = pts[ank] + props["foot"] * _unit(fwd if np.linalg.norm(fwd) > 0.2 else F) + 0.15 * props["foot"] * w
    pts[PELVIS] = 0.0
    return pts, np.stack([lh, uh, fh])


def _torso_corners(pts: np.ndarray, props: dict) -> np.ndarray:
    """8 body-frame corners of the tapered torso box: [left half 4, right half 4] x (top, bottom)."""
    sho_mid = 0.5 * (pts[L_SHO] + pts[R_SHO])
    t = _unit(sho_mid - pts[PELVIS])
    X = np.array([1.0, 0.0, 0.0])
    fwd = _unit(np.cross(X, t) * -1.0)   # torso forward, perpendicular to X and t
    if fwd[2] < 0:
        fwd = -fwd
    top_w, bot_w = props["shoulder_half"] + 0.012, props["hip_half"] + 0.04
    top_d, bot_d = 0.055, 0.05
    top = sho_mid - 0.01 * t
    bot = pts[PELVIS] - 0.03 * t
    corners = []
    for sgn in (1, -1):            # left half (x >= 0) then right half
        for c, w, d in ((top, top_w, top_d), (bot, bot_w, bot_d)):
            corners.append(c + sgn * w * X + d * fwd)
            corners.append(c + sgn * w * X - d * fwd)
    mids = [top + top_d * fwd, top - top_d * fwd, bot + bot_d * fwd, bot - bot_d * fwd]
    return np.array(corners + mids)   # 12 points: 4 left, 4 right, 4 on the midline


@dataclass
class Person:
    """One posed figure placed in the image."""
    points: np.ndarray            # [NUM_POINTS, 2] image pixels
    depth: np.ndarray             # [NUM_POINTS] camera depth in pixels (larger = farther)
    torso: np.ndarray             # [12, 2] projected torso box corners
    head_axes: tuple[float, float, float]   # projected head ellipse (a, b, angle deg)
    head_frame: np.ndarray        # [3, 3] camera-frame (left, up, forward) of the head
    height_px: float              # standing height in pixels (scale)
    z: float                      # scene depth used to order people (larger = farther)
    colors: dict = field(default_factory=dict)
    marker: bool = True
    yaw: float = 0.0
    pose_kind: str = "standing"

    @property
    def coco(self) -> np.ndarray:
        return self.points[:NUM_COCO]


def pose_person(pose: dict, yaw_deg: float, height_px: float, anchor: tuple[float, float],
                props: dict | None = None, z: float = 0.0, anchor_pelvis: bool = False) -> Person:
    """Project a posed skeleton: yaw about the vertical, roll in the image plane, scale, translate
    so the projected joints' box centre (or the pelvis, with `anchor_pelvis`) sits at `anchor`."""
    props = PROPORTIONS if props is None else props
    pts3, hframe = build_skeleton(pose, props)
    torso3 = _torso_corners(pts3, props)
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    # Columns: where the body's left / down / forward axes point in camera coordinates
    # (x right, y down, z away from the camera). Yaw 0 faces the camera: the person's left is image right.
    M = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [s, 0.0, -c]])
    cam = pts3 @ M.T
    tcam = torso3 @ M.T
    hcam = hframe @ M.T
    r = math.radians(float(pose.get("roll", 0.0)))
    R = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
    xy = cam[:, :2] @ R.T * height_px
    txy = tcam[:, :2] @ R.T * height_px
    hxy = np.concatenate([hcam[:, :2] @ R.T, hcam[:, 2:]], axis=1)
    lo, hi = xy.min(0), xy.max(0)
    shift = np.asarray(anchor, dtype=np.float64) - (xy[PELVIS] if anchor_pelvis else 0.5 * (lo + hi))
    # Head: ellipsoid's projected outline approximated by an ellipse along the projected up axis.
    up2 = hxy[1, :2]
    ang = math.degrees(math.atan2(up2[1], up2[0])) + 90.0   # ellipse major axis along up
    a = props["head_rx"] * height_px
    b = props["head_ry"] * height_px * max(0.82, float(np.hypot(*up2)))
    return Person(points=xy + shift, depth=cam[:, 2] * height_px, torso=txy + shift,
                  head_axes=(a, b, ang), head_frame=hxy, height_px=height_px, z=z)


# ---------------------------------------------------------------------------------------------
# Textures and colours


def make_texture_bank(rng: np.random.Generator, n: int = 24, size: int = 64) -> list[np.ndarray]:
    """Grey-level float32 tiles in [0, 1] (noise, stripes, checkers, dots, plaid), tileable."""
    tiles = []
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for i in range(n):
        kind = i % 5
        if kind == 0:
            small = rng.random((8, 8)).astype(np.float32)
            small = np.concatenate([small, small[:1]], 0)
            small = np.concatenate([small, small[:, :1]], 1)
            t = cv2.resize(small, (size + size // 8, size + size // 8), interpolation=cv2.INTER_CUBIC)[:size, :size]
            t = t + 0.25 * rng.random((size, size)).astype(np.float32)
        elif kind == 1:
            period = float(rng.choice([4, 8, 16, 32]))
            ang = rng.choice([0.0, 0.5, 1.0]) if period >= 8 else 0.0
            t = 0.5 + 0.5 * np.sin(2 * np.pi * (yy + ang * xx) / period)
        elif kind == 2:
            c = int(rng.choice([4, 8, 16]))
            t = (((yy // c) + (xx // c)) % 2).astype(np.float32)
        elif kind == 3:
            c = int(rng.choice([8, 16]))
            t = (((yy % c - c / 2) ** 2 + (xx % c - c / 2) ** 2) < (c / 4) ** 2).astype(np.float32)
        else:
            p = float(rng.choice([8, 16, 32]))
            t = 0.5 + 0.25 * np.sin(2 * np.pi * yy / p) + 0.25 * np.sin(2 * np.pi * xx / p)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        tiles.append(t.astype(np.float32))
    return tiles


def _tiled(tile: np.ndarray, w: int, h: int) -> np.ndarray:
    th, tw = tile.shape
    return np.tile(tile, (h // th + 1, w // tw + 1))[:h, :w]


def _hsv_color(rng: np.random.Generator, s=(0.2, 0.9), v=(0.25, 0.95)) -> np.ndarray:
    hsv = np.uint8([[[rng.integers(0, 180), int(255 * rng.uniform(*s)), int(255 * rng.uniform(*v))]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float64)


SKIN_TONES = np.array([[60, 80, 120], [80, 110, 160], [110, 150, 200], [140, 180, 225], [170, 200, 235],
                       [50, 65, 95]], dtype=np.float64)


def sample_colors(rng: np.random.Generator) -> dict:
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.9, 1.1)
    hair = _hsv_color(rng, s=(0.2, 0.7), v=(0.05, 0.45)) if rng.random() < 0.85 else _hsv_color(rng, v=(0.6, 0.9))
    return {"skin": np.clip(skin, 0, 255), "hair": hair, "shirt": _hsv_color(rng), "pants": _hsv_color(rng),
            "shoes": _hsv_color(rng, v=(0.05, 0.5)), "sleeves": bool(rng.random() < 0.55),
            "shirt_tex": int(rng.integers(1 << 30)), "tex_amp": rng.uniform(0.0, 0.6)}


# ---------------------------------------------------------------------------------------------
# Drawing

SHIFT = 4
_ONE = 1 << SHIFT


def _ip(p) -> tuple[int, int]:
    return int(round(float(p[0]) * _ONE)), int(round(float(p[1]) * _ONE))


def _bgr(c) -> tuple[int, int, int]:
    c = np.clip(c, 0, 255)
    return int(c[0]), int(c[1]), int(c[2])


class Canvas:
    """Colour image + label map, drawn together with the same geometry."""

    def __init__(self, image: np.ndarray):
        self.image = image
        self.label = np.zeros(image.shape[:2], np.uint16)
        self.h, self.w = image.shape[:2]

    def capsule(self, p0, p1, radius: float, color, label: int, light_dir=(-0.6, -0.8)) -> None:
        th = max(2, int(round(2 * radius)))
        a, b = _ip(p0), _ip(p1)
        cv2.line(self.image, a, b, _bgr(color), th, cv2.LINE_AA, SHIFT)
        cv2.line(self.label, a, b, label, th, cv2.LINE_8, SHIFT)
        if th >= 5:  # cylinder shading: a lighter band toward the light, a darker one away from it
            d = np.asarray(p1, float) - np.asarray(p0, float)
            n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9)
            if n @ np.asarray(light_dir) < 0:
                n = -n
            off = n * radius * 0.45
            cv2.line(self.image, _ip(p0 + off), _ip(p1 + off), _bgr(np.asarray(color) * 1.25 + 15),
                     max(1, th // 4), cv2.LINE_AA, SHIFT)
            cv2.line(self.image, _ip(p0 - off * 1.2), _ip(p1 - off * 1.2), _bgr(np.asarray(color) * 0.7),
                     max(1, th // 5), cv2.LINE_AA, SHIFT)

    def poly(self, pts: np.ndarray, color, label: int) -> None:
        hull = cv2.convexHull(np.round(pts * _ONE).astype(np.int32))
        cv2.fillConvexPoly(self.image, hull, _bgr(color), cv2.LINE_AA, SHIFT)
        cv2.fillConvexPoly(self.label, hull, label, cv2.LINE_8, SHIFT)

    def ellipse(self, c, axes, angle, color, label: int | None) -> None:
        ax = (max(1, int(round(axes[0] * _ONE))), max(1, int(round(axes[1] * _ONE))))
        cv2.ellipse(self.image, _ip(c), ax, angle, 0, 360, _bgr(color), -1, cv2.LINE_AA, SHIFT)
        if label is not None:
            cv2.ellipse(self.label, _ip(c), ax, angle, 0, 360, label, -1, cv2.LINE_8, SHIFT)

    def textured_poly(self, pts: np.ndarray, color, tile: np.ndarray, amp: float, label: int) -> None:
        """Fill a convex polygon with `color` modulated by a tile pattern (clothing)."""
        hull = cv2.convexHull(np.round(pts * _ONE).astype(np.int32))
        x0, y0 = np.floor(pts.min(0)).astype(int) - 1
        x1, y1 = np.ceil(pts.max(0)).astype(int) + 2
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, self.w), min(y1, self.h)
        cv2.fillConvexPoly(self.label, hull, label, cv2.LINE_8, SHIFT)
        if x1 - x0 < 2 or y1 - y0 < 2 or amp < 0.05:
            cv2.fillConvexPoly(self.image, hull, _bgr(color), cv2.LINE_AA, SHIFT)
            return
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillConvexPoly(mask, hull - np.array([[x0 * _ONE, y0 * _ONE]], np.int32), 255, cv2.LINE_8, SHIFT)
        pat = _tiled(tile, x1 - x0, y1 - y0)[..., None]
        fill = np.clip(np.asarray(color, np.float32) * (1.0 - amp * 0.5 + amp * pat), 0, 255).astype(np.uint8)
        roi = self.image[y0:y1, x0:x1]
        np.copyto(roi, fill, where=mask[..., None] > 0)


def draw_person(cv: Canvas, person: Person, index: int, tiles: list[np.ndarray]) -> None:
    """Paint one person back to front (parts ordered by depth)."""
    P, Z, col, s = person.points, person.depth, person.colors, person.height_px
    base = 1 + index * PARTS_PER_PERSON
    skin, shirt, pants = col["skin"], col["shirt"], col["pants"]
    arm_lower = shirt if col["sleeves"] else skin
    items: list[tuple[float, int, object]] = []   # (depth, order, draw callable)

    def side_tone(c, left: bool):
        return np.asarray(c) * (LEFT_LIGHT if left else RIGHT_DARK)

    for left in (True, False):
        sho, elb, wri, hand = (L_SHO, L_ELB, L_WRI, L_HAND) if left else (R_SHO, R_ELB, R_WRI, R_HAND)
        hip, kne, ank, toe = (L_HIP, L_KNE, L_ANK, L_TOE) if left else (R_HIP, R_KNE, R_ANK, R_TOE)
        parts = (L_UARM, L_FARM, L_HANDP, L_THIGH, L_SHIN, L_FOOT) if left else \
                (R_UARM, R_FARM, R_HANDP, R_THIGH, R_SHIN, R_FOOT)
        marker = person.marker and left
        segs = [
            (sho, elb, RADII["upper_arm"], side_tone(shirt, left), parts[0], None),
            (elb, wri, RADII["forearm"], side_tone(arm_lower, left), parts[1], wri if marker else None),
            (wri, hand, RADII["hand"], side_tone(skin, left), parts[2], None),
            (hip, kne, RADII["thigh"], side_tone(pants, left), parts[3], None),
            (kne, ank, RADII["shin"], side_tone(pants, left), parts[4], ank if marker else None),
            (ank, toe, RADII["foot"], side_tone(col["shoes"], left), parts[5], None),
        ]
        for a, b, r, c, part, mk in segs:
            def f(a=a, b=b, r=r, c=c, part=part, mk=mk):
                cv.capsule(P[a], P[b], r * s, c, base + part)
                if mk is not None:   # cuff just above the wrist / ankle, drawn on the limb itself
                    d = P[a] - P[b]
                    q0 = P[b] + 0.12 * d
                    q1 = P[b] + 0.3 * d
                    cv.capsule(q0, q1, r * s * 1.05, MARKER_BGR, base + part)
            items.append((0.5 * (Z[a] + Z[b]), 2, f))

    torso_depth = float(np.mean(Z[[L_SHO, R_SHO, L_HIP, R_HIP]])) + 0.02 * s
    tile = tiles[col["shirt_tex"] % len(tiles)]

    def torso():
        T = person.torso
        for left in (False, True):    # two halves, left lighter
            half = np.concatenate([T[0:4] if left else T[4:8], T[8:12]])
            cv.textured_poly(half, side_tone(shirt, left), tile, col["tex_amp"], base + TORSO)
        # hips band in trouser colour so the pelvis reads as part of the legs' clothing
        band = np.stack([T[2], T[3], T[6], T[7], (T[2] + T[0]) / 2 * 0.25 + T[2] * 0.75,
                         (T[6] + T[4]) / 2 * 0.25 + T[6] * 0.75])
        cv.poly(band, pants * 0.95, base + TORSO)
    items.append((torso_depth, 1, torso))

    def neck():
        cv.capsule(P[NECK], P[CHIN], RADII["neck"] * s, skin * 0.9, base + NECK_P)
    items.append((float(Z[NECK]) + 0.01 * s, 0, neck))
    items.append((float(Z[HEAD_C]) - 0.03 * s, 3, lambda: draw_head(cv, person, base + HEAD)))
    for _, _, f in sorted(items, key=lambda it: (-it[0], it[1])):
        f()


def draw_head(cv: Canvas, person: Person, label: int) -> None:
    P, col, s = person.points, person.colors, person.height_px
    a, b, ang = person.head_axes
    c = P[HEAD_C]
    lh, uh, fh = person.head_frame                # camera-frame axes (x, y, z)
    cv.ellipse(c, (a, b), ang, col["skin"], label)
    # Hair: an ellipse pushed toward the back and top of the head, clipped to the head outline.
    facing = -fh[2]                               # > 0 when the face points at the camera
    # Facing the camera: a cap on top; turned away: the hair covers the whole visible head.
    back = -fh[:2] * a * 0.55 + uh[:2] * b * (0.05 + 0.85 * max(facing, 0.0))
    x0, y0 = int(max(c[0] - max(a, b) - 2, 0)), int(max(c[1] - max(a, b) - 2, 0))
    x1, y1 = int(min(c[0] + max(a, b) + 3, cv.w)), int(min(c[1] + max(a, b) + 3, cv.h))
    if x1 - x0 >= 2 and y1 - y0 >= 2:
        m_head = np.zeros((y1 - y0, x1 - x0), np.uint8)
        m_hair = np.zeros_like(m_head)
        off = np.array([x0, y0], float)
        ax = (max(1, int(round(a * _ONE))), max(1, int(round(b * _ONE))))
        cv2.ellipse(m_head, _ip(c - off), ax, ang, 0, 360, 255, -1, cv2.LINE_8, SHIFT)
        hair_scale = 1.0 if facing < -0.3 else 0.95
        hax = (max(1, int(round(a * hair_scale * _ONE))), max(1, int(round(b * hair_scale * _ONE))))
        cv2.ellipse(m_hair, _ip(c + back - off), hax, ang, 0, 360, 255, -1, cv2.LINE_8, SHIFT)
        sel = (m_head > 0) & (m_hair > 0)
        cv.image[y0:y1, x0:x1][sel] = np.clip(col["hair"], 0, 255).astype(np.uint8)
    # Face features on the camera side of the head only (same test as the visibility flags).
    for ear in (L_EAR, R_EAR):
        if face_facing(person, ear) > FACE_THRESH[ear]:
            cv.ellipse(P[ear], (max(1.0, 0.012 * s),) * 2, 0.0, col["skin"] * 0.8, label)
    if face_facing(person, NOSE) > FACE_THRESH[NOSE]:
        cv.ellipse(P[NOSE], (max(1.0, 0.009 * s),) * 2, 0.0, col["skin"] * 0.65, label)
    r_eye = max(1.0, 0.009 * s)
    for eye in (L_EYE, R_EYE):
        if face_facing(person, eye) > FACE_THRESH[eye]:
            cv2.circle(cv.image, _ip(P[eye]), int(r_eye * _ONE), (30, 30, 30), -1, cv2.LINE_AA, SHIFT)
            if r_eye >= 2.5:
                cv2.circle(cv.image, _ip(P[eye]), int(r_eye * 0.45 * _ONE), (240, 240, 240), -1, cv2.LINE_AA, SHIFT)
    if facing > 0.3:
        mouth = P[HEAD_C] - uh[:2] * b * 0.55 + fh[:2] * a * 0.8
        half = lh[:2] * a * 0.3
        cv2.line(cv.image, _ip(mouth - half), _ip(mouth + half), (60, 50, 150), max(1, int(0.006 * s)),
                 cv2.LINE_AA, SHIFT)


# ---------------------------------------------------------------------------------------------
# Visibility


# A face point is on the camera side of the head when face_facing() exceeds this (the nose still
# shows in profile, the ears stick out).
FACE_THRESH = {NOSE: -0.15, L_EYE: 0.1, R_EYE: 0.1, L_EAR: -0.3, R_EAR: -0.3}


def face_facing(person: Person, j: int) -> float:
    """Cosine between a face point's outward normal and the direction to the camera."""
    lh, uh, fh = person.head_frame
    n = {NOSE: fh, L_EYE: 0.9 * fh + 0.42 * lh, R_EYE: 0.9 * fh - 0.42 * lh,
         L_EAR: lh - 0.05 * fh, R_EAR: -lh - 0.05 * fh}[j]
    return float(-n[2] / (np.linalg.norm(n) + 1e-9))


def joint_visibility(person: Person, index: int, label: np.ndarray, joints: list[int]) -> np.ndarray:
    """COCO flags (2 visible, 1 labelled but hidden, 0 unlabelled) for the points `joints` of
    `person` (its index in the scene), read from the label map. Outside the image -> 0."""
    h, w = label.shape
    base = 1 + index * PARTS_PER_PERSON
    torso_z = float(np.mean(person.depth[[L_SHO, R_SHO, L_HIP, R_HIP]]))
    v = np.zeros(len(joints), np.int64)
    for k, j in enumerate(joints):
        x, y = person.points[j]
        px, py = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
        if not (0 <= px < w and 0 <= py < h):
            continue
        lab = int(label[py, px])
        part = lab - base if base <= lab < base + PARTS_PER_PERSON else -1
        if j <= R_EAR:
            if face_facing(person, j) > FACE_THRESH[j]:
                v[k] = 2 if part == HEAD else 1
            elif j <= R_EYE and person.head_frame[2][2] > 0.5:
                v[k] = 0      # head turned away: eyes / nose cannot be placed, COCO leaves them out
            else:
                v[k] = 1
            continue
        ok = part in JOINT_PARTS.get(j, ())
        if not ok and part == TORSO and j in (L_SHO, R_SHO, L_HIP, R_HIP, NECK, PELVIS):
            ok = person.depth[j] <= torso_z + 0.04 * person.height_px   # on the camera side of the torso
        v[k] = 2 if ok else 1
    return v


# ---------------------------------------------------------------------------------------------
# Backgrounds, clutter, occluders


def draw_background(rng: np.random.Generator, w: int, h: int, tiles: list[np.ndarray], clutter: int,
                    distractors: int) -> np.ndarray:
    gh, gw = int(rng.integers(2, 6)), int(rng.integers(2, 7))
    base = np.stack([_hsv_color(rng, s=(0.0, 0.6), v=(0.15, 0.9)) for _ in range(gh * gw)]).reshape(gh, gw, 3)
    img = cv2.resize(base.astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
    tile = tiles[int(rng.integers(len(tiles)))]
    amp = rng.uniform(0.1, 0.5)
    pat = cv2.resize(tile, (int(tile.shape[1] * rng.uniform(1, 3)),) * 2, interpolation=cv2.INTER_LINEAR)
    pat = _tiled(pat, w, h)
    img = cv2.multiply(img, cv2.merge([(1 - amp / 2 + amp * pat)] * 3), dtype=cv2.CV_8U)
    if rng.random() < 0.5:   # horizon: floor in a different colour
        y = int(rng.uniform(0.3, 0.7) * h)
        floor = np.clip(img[y:] * rng.uniform(0.5, 0.9) + rng.uniform(-30, 30, 3), 0, 255)
        img[y:] = floor.astype(np.uint8)
    for _ in range(clutter):
        color = _bgr(_hsv_color(rng, s=(0.0, 0.8), v=(0.1, 0.95)))
        kind = rng.integers(4)
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        sz = int(rng.uniform(0.02, 0.2) * min(w, h))
        if kind == 0:
            cv2.rectangle(img, (x, y), (x + sz, y + int(sz * rng.uniform(0.3, 2))), color, -1)
        elif kind == 1:
            cv2.circle(img, (x, y), max(2, sz // 2), color, -1, cv2.LINE_AA)
        elif kind == 2:
            cv2.line(img, (x, y), (x + int(rng.integers(-sz, sz)) * 2, y + int(rng.integers(-sz, sz)) * 2), color,
                     int(rng.integers(1, 5)), cv2.LINE_AA)
        else:
            pts = np.array([x, y]) + rng.integers(-sz, sz + 1, (int(rng.integers(3, 6)), 2))
            cv2.fillPoly(img, [pts.astype(np.int32)], color, cv2.LINE_AA)
    for _ in range(distractors):   # limb-like capsules and head-like blobs that are not people
        s = rng.uniform(0.05, 0.25) * h
        p0 = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        ang = rng.uniform(0, 2 * np.pi)
        p1 = p0 + s * np.array([np.cos(ang), np.sin(ang)])
        color = SKIN_TONES[rng.integers(len(SKIN_TONES))] if rng.random() < 0.5 else _hsv_color(rng)
        cv2.line(img, _ip(p0), _ip(p1), _bgr(color), max(2, int(s * 0.18)), cv2.LINE_AA, SHIFT)
        if rng.random() < 0.3:
            cv2.circle(img, _ip(p1), int(s * 0.25 * _ONE), _bgr(color), -1, cv2.LINE_AA, SHIFT)
    return img


def draw_occluder(cv: Canvas, rng: np.random.Generator, around: Person, tiles: list[np.ndarray]) -> None:
    """An object (box, pole, bush) covering part of `around`."""
    P, s = around.coco, around.height_px
    target = P[int(rng.integers(5, NUM_COCO))]
    color = _hsv_color(rng, s=(0.1, 0.8), v=(0.15, 0.85))
    kind = rng.integers(3)
    if kind == 0:     # box / table
        ww, hh = rng.uniform(0.15, 0.45) * s, rng.uniform(0.12, 0.4) * s
        c = target + rng.uniform(-0.5, 0.5, 2) * np.array([ww, hh])
        pts = np.array([[c[0] - ww / 2, c[1] - hh / 2], [c[0] + ww / 2, c[1] - hh / 2],
                        [c[0] + ww / 2, c[1] + hh / 2], [c[0] - ww / 2, c[1] + hh / 2]])
        cv.textured_poly(pts, color, tiles[int(rng.integers(len(tiles)))], rng.uniform(0, 0.6), OCCLUDER_LABEL)
    elif kind == 1:   # pole
        x = target[0] + rng.uniform(-0.05, 0.05) * s
        cv.capsule((x, target[1] - rng.uniform(0.2, 1.5) * s), (x, target[1] + rng.uniform(0.2, 1.5) * s),
                   rng.uniform(0.02, 0.07) * s, color, OCCLUDER_LABEL)
    else:             # bush / blob
        cv.ellipse(target + rng.uniform(-0.1, 0.1, 2) * s, (rng.uniform(0.1, 0.3) * s, rng.uniform(0.08, 0.25) * s),
                   float(rng.uniform(0, 180)), color, OCCLUDER_LABEL)


# ---------------------------------------------------------------------------------------------
# Scenes


@dataclass(frozen=True)
class SceneConfig:
    """Knobs of one scene. Heights are fractions of the image height (standing height)."""
    people: tuple[int, int] = (1, 6)
    height_frac: tuple[float, float] = (40 / 480, 400 / 480)
    clutter: int = 20
    distractors: int = 2
    occluder_prob: float = 0.25      # per person: an object drawn in front of it
    overlap_prob: float = 0.35       # per person: placed next to an earlier one
    truncation_prob: float = 0.15    # per person: pushed partly out of the image
    # True: every person not chosen for truncation is moved (no extra random draw) so that all its
    # points lie in the image when it fits, so that truncation_prob alone decides who leaves the
    # image. False (the presets): people placed next to another one or larger than the image may
    # also cross the border (about 5% of them in "medium" scenes with truncation_prob = 0).
    keep_inside: bool = False
    marker_prob: float = 0.85        # per person: left wrist / ankle cuff
    pose_weights: tuple[float, ...] = (0.25, 0.22, 0.12, 0.15, 0.08, 0.18)   # order of POSE_KINDS

    def __post_init__(self) -> None:
        lo, hi = self.people
        if not (1 <= lo <= hi <= MAX_PEOPLE):
            raise ValueError(f"SceneConfig.people must satisfy 1 <= min <= max <= {MAX_PEOPLE}, got {self.people}")
        if not (0 < self.height_frac[0] <= self.height_frac[1]):
            raise ValueError(f"SceneConfig.height_frac must be 0 < min <= max, got {self.height_frac}")
        if len(self.pose_weights) != len(POSE_KINDS):
            raise ValueError(f"SceneConfig.pose_weights needs {len(POSE_KINDS)} weights ({POSE_KINDS})")


DIFFICULTY: dict[str, SceneConfig] = {
    "easy": SceneConfig(people=(1, 3), height_frac=(120 / 480, 400 / 480), clutter=6, distractors=0,
                        occluder_prob=0.1, overlap_prob=0.15, truncation_prob=0.05, marker_prob=1.0),
    "medium": SceneConfig(),
    "hard": SceneConfig(people=(2, 6), height_frac=(40 / 480, 400 / 480), clutter=40, distractors=6,
                        occluder_prob=0.6, overlap_prob=0.6, truncation_prob=0.25, marker_prob=0.7),
}


@dataclass
class Scene:
    image: np.ndarray            # [H, W, 3] uint8 BGR
    label: np.ndarray            # [H, W] uint16 label map (see module doc)
    persons: list[Person]
    points: np.ndarray           # [n, NUM_POINTS, 3] (x, y, v); v for COCO joints + HEAD_TOP/NECK/CHIN/PELVIS

    @property
    def keypoints(self) -> np.ndarray:
        """[n, 17, 3] COCO keypoints, unlabelled joints as (0, 0, 0)."""
        return self.points[:, :NUM_COCO].copy()

    def owner(self) -> np.ndarray:
        """[H, W] int: person index owning each pixel, -1 for background / occluders."""
        lab = self.label.astype(np.int32)
        own = (lab - 1) // PARTS_PER_PERSON
        own[(lab == 0) | (lab >= OCCLUDER_LABEL)] = -1
        return own

    def masks(self) -> np.ndarray:
        """[n, H, W] bool visible-pixel masks."""
        own = self.owner()
        return own[None] == np.arange(len(self.persons))[:, None, None]


LABELLED_POINTS = list(range(NUM_COCO)) + [HEAD_TOP, NECK, CHIN, PELVIS]


def place_person(rng: np.random.Generator, cfg: SceneConfig, size: tuple[int, int], placed: list[Person],
                 pose: dict | None = None, yaw: float | None = None) -> Person:
    w, h = size
    kind = POSE_KINDS[int(rng.choice(len(POSE_KINDS), p=np.asarray(cfg.pose_weights) / sum(cfg.pose_weights)))]
    pose = sample_pose(rng, kind) if pose is None else pose
    yaw = sample_yaw(rng) if yaw is None else yaw
    lo, hi = cfg.height_frac
    height = float(np.exp(rng.uniform(np.log(lo * h), np.log(hi * h))))
    props = {k: v * rng.uniform(0.94, 1.06) for k, v in PROPORTIONS.items()}
    person = pose_person(pose, yaw, height, (0.0, 0.0), props)
    lo_xy, hi_xy = person.points.min(0), person.points.max(0)
    bw, bh = hi_xy - lo_xy

    def free(extent, limit):
        if extent < limit:
            return rng.uniform(extent / 2, limit - extent / 2)
        return limit / 2 + rng.uniform(-0.2, 0.2) * extent

    if placed and rng.random() < cfg.overlap_prob:
        other = placed[int(rng.integers(len(placed)))]
        oc = 0.5 * (other.points.min(0) + other.points.max(0))
        anchor = oc + rng.uniform(-0.6, 0.6, 2) * np.array([max(bw, 0.3 * other.height_px), 0.3 * bh])
    else:
        anchor = np.array([free(bw, w), free(bh, h)])
    if rng.random() < cfg.truncation_prob:
        axis = int(rng.integers(2))
        frac = rng.uniform(0.15, 0.6)
        ext = (bw, bh)[axis]
        anchor[axis] = -ext / 2 + frac * ext if rng.random() < 0.5 else (w, h)[axis] + ext / 2 - frac * ext
    elif cfg.keep_inside:   # points in [0, size - 1] (centred when the person is larger than the image)
        low, high = -lo_xy, np.array([w - 1.0, h - 1.0]) - hi_xy
        anchor = np.where(low <= high, np.clip(anchor, low, high), (low + high) / 2)
    for arr in (person.points, person.torso):
        arr += anchor
    person.z = -float(person.points[:, 1].max()) + rng.normal(0, 3)
    person.pose_kind, person.yaw = kind, float(yaw)
    return person


def render_scene(rng: np.random.Generator, size: tuple[int, int], cfg: SceneConfig, tiles: list[np.ndarray],
                 persons: list[Person] | None = None, background: np.ndarray | None = None,
                 occluders: bool = True) -> Scene:
    """Draw one scene. `persons` (already placed, with colours) and `background` may be given, as the
    video does; otherwise both are sampled from `rng`."""
    w, h = size
    if persons is None:
        n = int(rng.integers(cfg.people[0], cfg.people[1] + 1))
        persons = []
        for _ in range(n):
            p = place_person(rng, cfg, size, persons)
            p.colors = sample_colors(rng)
            p.marker = bool(rng.random() < cfg.marker_prob)
            persons.append(p)
    if len(persons) > MAX_PEOPLE:
        raise ValueError(f"at most {MAX_PEOPLE} people per scene, got {len(persons)}")
    img = draw_background(rng, w, h, tiles, cfg.clutter, cfg.distractors) if background is None else background.copy()
    cv = Canvas(img)
    for i in sorted(range(len(persons)), key=lambda k: -persons[k].z):
        draw_person(cv, persons[i], i, tiles)
        if occluders and rng.random() < cfg.occluder_prob:
            draw_occluder(cv, rng, persons[i], tiles)
    pts = np.zeros((len(persons), NUM_POINTS, 3))
    for i, p in enumerate(persons):
        vis = joint_visibility(p, i, cv.label, LABELLED_POINTS)
        pts[i, LABELLED_POINTS, :2] = p.points[LABELLED_POINTS]
        pts[i, LABELLED_POINTS, 2] = vis
        pts[i, pts[i, :, 2] == 0] = 0.0
    return Scene(image=cv.image, label=cv.label, persons=persons, points=pts)
