"""Bottom-up grouping (`posedistill.codecs.grouping`): parity with a plain-loop reference of the same
algorithm, and ground truth -> PafCodec -> people at COCO OKS AP 1.0.

`reference_group_people` below is that reference: the algorithm of the grouping module's docstring
written the obvious way, laid out like CMU's python demo (peaks from shifted maps, then one Python
iteration per peak, per candidate pair and per sample point, and people assembled by scanning the
list of people for every connection). benchmarks/grouping.py imports it and `random_scene` from
here.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from posedistill.codecs import GroupingParams, PafCodec, group_people
from posedistill.codecs.grouping import assemble_people, find_peaks, match_limbs
from posedistill.codecs.paf import _upsample
from posedistill.evaluation.coco_eval import evaluate_coco
from posedistill.keypoints import COCO

LIMBS = PafCodec().layout.limbs


# ---------------------------------------------------------------------------------- the reference

def _ref_vertex(line, p: int) -> float:
    """Vertex of the log-parabola through 3 pixels of `line` around index p (grouping step 1)."""
    n = len(line)
    if n < 3:
        return float(p)
    c = min(max(p, 1), n - 2)
    ll, lc, lr = (math.log(max(float(line[i]), 1e-10)) for i in (c - 1, c, c + 1))
    den = ll - 2.0 * lc + lr
    if not den < 0:
        return float(p)
    return min(max(c + 0.5 * (ll - lr) / den, p - 0.5), p + 0.5)


def _ref_peaks(heatmaps, params):
    peaks, next_id = [], 0
    for m in heatmaps:
        h, w = m.shape
        left, up = np.full_like(m, -np.inf), np.full_like(m, -np.inf)
        right, down = np.full_like(m, -np.inf), np.full_like(m, -np.inf)
        left[:, 1:], up[1:, :], right[:, :-1], down[:-1, :] = m[:, :-1], m[:-1, :], m[:, 1:], m[1:, :]
        binary = (m > params.peak_threshold) & (m >= left) & (m >= up) & (m > right) & (m > down)
        found = []
        for y, x in zip(*np.nonzero(binary)):
            if params.refine:
                px, py = _ref_vertex(m[y, :], int(x)), _ref_vertex(m[:, x], int(y))
            else:
                px, py = float(x), float(y)
            found.append((px, py, float(m[y, x]), next_id))
            next_id += 1
        peaks.append(found)
    return peaks


def _ref_bilinear(field, x: float, y: float) -> float:
    h, w = field.shape
    x0 = min(math.floor(x), w - 2) if w > 1 else 0
    y0 = min(math.floor(y), h - 2) if h > 1 else 0
    fx, fy = x - x0, y - y0
    x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
    v00, v01, v10, v11 = (float(field[yy, xx]) for yy, xx in ((y0, x0), (y0, x1), (y1, x0), (y1, x1)))
    return (v00 * (1.0 - fx) + v01 * fx) * (1.0 - fy) + (v10 * (1.0 - fx) + v11 * fx) * fy


def _ref_connections(paf_x, paf_y, cand_a, cand_b, params):
    """Greedy one-to-one connections [(id A, id B, score)] of one limb type."""
    h, w = paf_x.shape
    n = params.num_samples
    candidates = []
    for i, (ax, ay, _, _) in enumerate(cand_a):
        for j, (bx, by, _, _) in enumerate(cand_b):
            dx, dy = bx - ax, by - ay
            norm = math.sqrt(dx * dx + dy * dy)
            if norm == 0:
                continue
            ux, uy = dx / norm, dy / norm
            scores = []
            for k in range(n):
                t = k / (n - 1)
                x = min(max(ax + t * dx, 0.0), w - 1.0)
                y = min(max(ay + t * dy, 0.0), h - 1.0)
                scores.append(_ref_bilinear(paf_x, x, y) * ux + _ref_bilinear(paf_y, x, y) * uy)
            score = sum(scores) / n
            if params.distance_prior:
                score += min(0.5 * h / norm - 1.0, 0.0)
            passing = len([s for s in scores if s > params.paf_threshold])
            if passing >= math.ceil(params.min_fraction * n - 1e-9) and score > 0:
                candidates.append((i, j, score))
    candidates.sort(key=lambda c: -c[2])
    used_a, used_b, out = set(), set(), []
    for i, j, s in candidates:
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        out.append((cand_a[i][3], cand_b[j][3], s))
        if len(out) >= min(len(cand_a), len(cand_b)):
            break
    return out


def _ref_assemble(connections, limbs, peak_score, k, params):
    people = []                                            # [parts (K peak ids), score]
    for (ja, jb), conns in zip(limbs, connections):
        for pa, pb, s in conns:
            with_a = [p for p in people if p[0][ja] == pa]
            with_b = [p for p in people if p[0][jb] == pb]
            if not with_a and not with_b:
                parts = [-1] * k
                parts[ja], parts[jb] = pa, pb
                people.append([parts, peak_score[pa] + peak_score[pb] + s])
            elif with_a and with_b:
                pa_, pb_ = with_a[0], with_b[0]
                if pa_ is not pb_ and all(x < 0 or y < 0 for x, y in zip(pa_[0], pb_[0])):
                    pa_[0] = [x if x >= 0 else y for x, y in zip(pa_[0], pb_[0])]
                    pa_[1] += pb_[1] + s
                    people.remove(pb_)
            else:
                person, joint, peak = (with_a[0], jb, pb) if with_a else (with_b[0], ja, pa)
                if person[0][joint] < 0:
                    person[0][joint] = peak
                    person[1] += peak_score[peak] + s
    kept = []
    for parts, score in people:
        count = sum(1 for x in parts if x >= 0)
        if count >= params.min_parts and score >= params.min_mean_score * count:
            kept.append((parts, score))
    return sorted(kept, key=lambda p: -p[1])


def reference_group_people(heatmaps, pafs, limbs, params=GroupingParams()):
    """Same contract as `posedistill.codecs.grouping.group_people`, written with plain loops."""
    k = heatmaps.shape[0]
    peaks = _ref_peaks(heatmaps, params)
    by_id = {p[3]: p for found in peaks for p in found}
    connections = []
    for l, (ja, jb) in enumerate(limbs):
        connections.append(_ref_connections(pafs[2 * l], pafs[2 * l + 1], peaks[ja], peaks[jb], params))
    people = _ref_assemble(connections, limbs, {i: p[2] for i, p in by_id.items()}, k, params)
    keypoints = np.zeros((len(people), k, 3), dtype=np.float32)
    for n, (parts, _) in enumerate(people):
        for j, pid in enumerate(parts):
            if pid >= 0:
                keypoints[n, j] = by_id[pid][:3]
    return keypoints, np.array([s for _, s in people], dtype=np.float32)


# ---------------------------------------------------------------------------------- scenes

def random_person(rng, height: float) -> np.ndarray:
    """COCO joints (x, y) [17, 2] of a random upright pose `height` px tall, hips near (0, 0)."""
    h = height
    hip, sho = np.array([0.0, 0.0]), np.array([0.0, -0.34 * h])
    k = np.zeros((17, 2))
    k[5], k[6], k[11], k[12] = sho + (0.11 * h, 0), sho - (0.11 * h, 0), hip + (0.07 * h, 0), hip - (0.07 * h, 0)

    def bone(base, frac, angle):                           # angle from straight down
        return base + frac * h * np.array([math.sin(angle), math.cos(angle)])

    for (s, e, w), side in (((5, 7, 9), 1), ((6, 8, 10), -1)):
        a = side * rng.uniform(0.1, 1.6)
        k[e] = bone(k[s], 0.15, a)
        k[w] = bone(k[e], 0.13, a + side * rng.uniform(-0.3, 1.2))
    for (s, e, w), side in (((11, 13, 15), 1), ((12, 14, 16), -1)):
        a = side * rng.uniform(-0.1, 0.5)
        k[e] = bone(k[s], 0.23, a)
        k[w] = bone(k[e], 0.22, a - side * rng.uniform(0.0, 0.4))
    k[0] = sho + (rng.uniform(-0.02, 0.02) * h, -0.1 * h)
    k[1:5] = k[0] + np.array([[0.025, -0.02], [-0.025, -0.02], [0.055, -0.01], [-0.055, -0.01]]) * h
    turn = rng.uniform(-0.35, 0.35)
    k = k @ np.array([[math.cos(turn), math.sin(turn)], [-math.sin(turn), math.cos(turn)]])
    if rng.random() < 0.5:                                 # seen from the back
        k[:, 0] = -k[:, 0]
    return k


def random_scene(rng, n: int, size: tuple[int, int], drop: float = 0.1) -> np.ndarray:
    """n random people [n, 17, 3] (x, y, v) in a size = (W, H) image, one per cell of a grid (so
    they do not overlap), 70-85% of the cell tall; leaf joints (eyes, ears, wrists, ankles)
    unlabelled with probability `drop`, which keeps every labelled joint linked to the others."""
    w, h = size
    cols = math.ceil(math.sqrt(n * w / h))
    rows = math.ceil(n / cols)
    cw, ch = w / cols, h / rows
    out = np.zeros((n, 17, 3))
    for i, cell in enumerate(rng.permutation(rows * cols)[:n]):
        r, c = divmod(int(cell), cols)
        k = random_person(rng, min(ch, 1.6 * cw) * rng.uniform(0.7, 0.85))
        lo = np.array([c * cw, r * ch]) - k.min(0) + 2
        hi = np.array([(c + 1) * cw, (r + 1) * ch]) - k.max(0) - 2
        out[i, :, :2] = k + rng.uniform(lo, np.maximum(lo, hi))
        out[i, :, 2] = 2
        leaves = np.array([1, 2, 3, 4, 9, 10, 15, 16])
        out[i, leaves[rng.random(8) < drop], 2] = 0
    return out


def noisy_maps(rng, codec, people, noise=0.05):
    """The codec's ground truth for `people` plus uniform noise, as float32 (keypoint maps, pafs)."""
    enc = codec.encode_people(people)
    cm = enc["confidence_maps"][:-1] + rng.uniform(-noise, noise, enc["confidence_maps"][:-1].shape)
    pafs = enc["pafs"] + rng.uniform(-noise, noise, enc["pafs"].shape)
    return cm.astype(np.float32), pafs.astype(np.float32)


# ---------------------------------------------------------------------------------- parity

def _assert_same_people(ours, ref):
    (kp, sc), (rkp, rsc) = ours, ref
    assert kp.shape == rkp.shape
    free = list(range(len(rkp)))
    for p, s in zip(kp, sc):                               # order may differ only among equal scores
        err = [np.abs(rkp[q] - p).max() + abs(rsc[q] - s) for q in free]
        best = int(np.argmin(err))
        assert err[best] < 1e-4, f"person {p} has no twin in the reference"
        free.pop(best)
    np.testing.assert_allclose(np.sort(sc), np.sort(rsc), rtol=1e-6)


def _smooth_random_maps(rng, c, h, w, blur=2):
    x = rng.random((c, h + 2 * blur, w + 2 * blur))
    out = sum(x[:, dy:dy + h, dx:dx + w] for dy in range(2 * blur + 1) for dx in range(2 * blur + 1))
    return out / (2 * blur + 1) ** 2


PARAMS = [GroupingParams(),
          GroupingParams(refine=False, distance_prior=False),
          GroupingParams(paf_threshold=-1.0, min_fraction=0.0, min_parts=1, min_mean_score=0.0)]


@pytest.mark.parametrize("params", PARAMS, ids=["default", "plain", "accept-all"])
def test_parity_on_random_maps(params):
    rng = np.random.default_rng(0)
    for h, w in ((12, 16), (16, 16)):                      # ~20 peaks a channel: 400 pairs a limb
        heat = (_smooth_random_maps(rng, 18, h, w) * 2 - 0.7).astype(np.float32)
        pafs = (_smooth_random_maps(rng, 38, h, w, blur=1) * 4 - 2).astype(np.float32)
        ours = group_people(heat, pafs, LIMBS, params)
        assert ours[0].shape[0] > 0 or params is PARAMS[0]
        _assert_same_people(ours, reference_group_people(heat, pafs, LIMBS, params))


@pytest.mark.parametrize("n,size", [(1, (184, 184)), (6, (368, 368)), (15, (480, 368))])
def test_parity_on_rendered_scenes(n, size):
    rng = np.random.default_rng(n)
    codec = PafCodec(input_size=size)
    for upsample in (False, True) if n == 1 else (False,):
        cm, pafs = noisy_maps(rng, codec, random_scene(rng, n, size))
        if upsample:                                       # the codec's decode path with upsample=True
            cm, pafs = (_upsample(m, codec.stride) for m in (cm, pafs))
        ours = group_people(cm, pafs, LIMBS)
        assert ours[0].shape[0] >= 1
        _assert_same_people(ours, reference_group_people(cm, pafs, LIMBS))


# ---------------------------------------------------------------------------------- pieces

def test_peaks_plateaus_and_refinement():
    m = np.zeros((1, 5, 6), np.float32)
    m[0, 2, 2] = m[0, 2, 3] = 0.5                           # a two-pixel plateau -> one peak (the right one)
    m[0, 0, 5] = 0.09                                       # below the threshold
    peaks = find_peaks(m, 0.1, refine=False)
    assert peaks[0].tolist() == [[3.0, 2.0, 0.5]]
    g = np.exp(-((np.arange(9) - 3.3)[None] ** 2 + (np.arange(7) - 5.8)[:, None] ** 2) / 2.0)[None]
    (x, y, s), = find_peaks(g, 0.1)[0]                      # y = 5.8: peak on row 6 = the last one
    assert (x, y) == pytest.approx((3.3, 5.8), abs=1e-9) and s == pytest.approx(g[0, 6, 3])


def test_greedy_matching_is_one_to_one_by_score():
    score = np.array([[0.9, 0.8, 0.1], [0.85, 0.2, 0.3]])
    cand = np.ones_like(score, bool)
    i, j, s = match_limbs(score, cand)
    assert list(zip(i.tolist(), j.tolist())) == [(0, 0), (1, 2)] and s.tolist() == [0.9, 0.3]
    cand[0, 0] = False
    i, j, _ = match_limbs(score, cand)
    assert list(zip(i.tolist(), j.tolist())) == [(1, 0), (0, 1)]


def test_assembly_merges_disjoint_people_and_filters():
    # joints 0-1-2-3 in a chain, limbs in an order that makes two people and then merges them
    limbs = [(0, 1), (2, 3), (1, 2)]
    conns = [(np.array([0]), np.array([1]), np.array([0.5])), (np.array([2]), np.array([3]), np.array([0.5])),
             (np.array([1]), np.array([2]), np.array([0.25]))]
    table, score = assemble_people(conns, limbs, np.ones(4), 4, GroupingParams())
    assert table.tolist() == [[0, 1, 2, 3]] and score.tolist() == [4 + 0.5 + 0.5 + 0.25]
    strict = GroupingParams(min_parts=5)
    assert assemble_people(conns, limbs, np.ones(4), 4, strict)[0].shape == (0, 4)


# ---------------------------------------------------------------------------------- OKS AP = 1

def _bbox(kps):
    lab = kps[:, 2] > 0
    lo, hi = kps[lab, :2].min(0), kps[lab, :2].max(0)
    return [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]


def _oks_ap(tmp_path, images, truth, predictions) -> float:
    """COCO AP of predictions {image_id: [P, 17, 3]} against truth {image_id: [P, 17, 3]} through
    the project's evaluation (`evaluate_coco`, pycocotools)."""
    anns, preds = [], []
    for image_id, people in truth.items():
        for p in people:
            box = _bbox(p)
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                         "keypoints": p.reshape(-1).tolist(), "num_keypoints": int((p[:, 2] > 0).sum()),
                         "bbox": box, "area": box[2] * box[3] * 0.53})
        for p in predictions[image_id]:
            box = _bbox(p)
            preds.append({"image_id": image_id, "keypoints": p, "area": box[2] * box[3]})
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": 1, "name": "person", "keypoints": list(COCO.joints),
                          "skeleton": [[a + 1, b + 1] for a, b in COCO.skeleton]}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return evaluate_coco(preds, path, meta=COCO)["AP"]


def _linked(kps, limbs) -> bool:
    """Whether the labelled joints of one person (neck included) form one component of the limb graph."""
    lab = set(np.nonzero(kps[:, 2] > 0)[0].tolist())
    if {5, 6} <= lab:
        lab.add(17)
    seen, todo = set(), [min(lab)]
    while todo:
        j = todo.pop()
        seen.add(j)
        todo += [b for a, b in limbs if a == j and b in lab and b not in seen]
        todo += [a for a, b in limbs if b == j and a in lab and a not in seen]
    return seen == lab


def test_ground_truth_of_the_coco_samples_decodes_at_ap_1(data_dir, tmp_path):
    """People of tests/data/coco with >= 10 labelled joints all linked by limbs (11 of 14 annotations:
    the others have 0 keypoints, or a wrist whose elbow is unlabelled, which no PAF can link)."""
    data = json.loads((data_dir / "coco" / "test_coco.json").read_text())
    truth, predictions = {}, {}
    for im in data["images"]:
        people = [np.array(a["keypoints"], float).reshape(17, 3) for a in data["annotations"]
                  if a["image_id"] == im["id"] and a["num_keypoints"] >= 10]
        people = [p for p in people if _linked(p, LIMBS)]
        if not people:
            continue
        codec = PafCodec(input_size=(-(-im["width"] // 8) * 8, -(-im["height"] // 8) * 8))
        enc = codec.encode_people(np.stack(people))
        truth[im["id"]] = people
        predictions[im["id"]] = codec.decode(enc["confidence_maps"], enc["pafs"])[0]
        assert len(predictions[im["id"]]) == len(people)
    assert sum(len(p) for p in truth.values()) == 11
    assert _oks_ap(tmp_path, data["images"], truth, predictions) == pytest.approx(1.0)


@pytest.mark.parametrize("n,size", [(1, (368, 368)), (5, (736, 552)), (20, (1600, 1200))])
def test_ground_truth_of_synthetic_scenes_decodes_at_ap_1(tmp_path, n, size):
    """Scenes whose people are about 150 - 300 px tall: smaller ones have eye - nose limbs (~3% of
    the height) too short to cover a pixel at stride 8 (see the PafCodec docstring); at 1472 x 1104
    one eye in 200 people (20 a scene) goes missing."""
    rng = np.random.default_rng(100 + n)
    codec = PafCodec(input_size=size)
    images, truth, predictions = [], {}, {}
    for image_id in range(1, 3):
        people = random_scene(rng, n, size)
        enc = codec.encode_people(people)
        images.append({"id": image_id, "width": size[0], "height": size[1]})
        truth[image_id] = list(people)
        predictions[image_id] = codec.decode(enc["confidence_maps"], enc["pafs"])[0]
        assert len(predictions[image_id]) == n
    assert _oks_ap(tmp_path, images, truth, predictions) == pytest.approx(1.0)
