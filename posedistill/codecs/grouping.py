"""Bottom-up grouping of part confidence maps and Part Affinity Fields into people (Cao et al.,
CVPR 2017, "Realtime Multi-Person 2D Pose Estimation using Part Affinity Fields"), vectorised.

All coordinates here are pixels of the maps' own grid (x = column, y = row); `PafCodec.decode`
converts them to input pixels. The algorithm, with the constants of the public code
(reference-notes, "Bottom-up PAF"; all in `GroupingParams`):

1. Peaks (`find_peaks`): a pixel of keypoint channel k is a peak when its value is above
   `peak_threshold` (0.1: CMU's python test config, Osokin's lightweight OpenPose) and a local
   maximum of its 4-neighbourhood (CMU, Osokin): >= its left and upper neighbours and > its right
   and lower ones, so a two-pixel plateau gives one peak (CMU's >= on all four gives two, Osokin's >
   on all four none). The peak's score is the map value there (CMU). With `refine` (ours) the
   position moves, per axis, to the vertex of the parabola through the logs of three neighbouring
   pixels (centred on the peak, or on its inner neighbour at the border), clamped to +-0.5 px:
   exact for a lone Gaussian, which is what the ground truth is, so decoding on the stride-8 grid
   is sub-pixel accurate without CMU's upsampling. Peaks of all channels share one numbering
   (channel-major, then row-major), as CMU's peak ids.
2. Candidate limbs (`score_limb_candidates`): for limb (A, B) every pair of an A peak `a` and a B
   peak `b` is scored in one array operation: n = `num_samples` points p_i = a + t_i (b - a),
   t_i = i / (n - 1) (n = 10: CMU's python test, Osokin), s_i = PAF(p_i) . (b - a) / |b - a|
   with the field read by bilinear interpolation (ours: CMU and Osokin round p_i to the nearest
   pixel of maps upsampled 8x / 4x; on the stride-8 grid rounding often lands the end points of a
   short limb on pixels just past its ends, where ground truth has no field: decoding the ground
   truth of the 11 people of tests/data/coco with >= 10 linked joints, rounding lost joints of 6
   of them at 8 of 10 points passing and of all 11 at 9 of 10; interpolation lost none).
   Limb score = mean(s_i), plus with `distance_prior` CMU's min(0, 0.5 * H / |b - a| - 1)
   (H = map height: a limb longer than half the image loses score). A pair is a candidate when
   at least `min_fraction` of its points have s_i > `paf_threshold` (0.05: CMU python and OpenPose
   C++), its score is > 0 and a != b. min_fraction = 0.8, i.e. 8 of 10 points: CMU's python test
   and Osokin ask more than 80% (9 of 10) on maps upsampled 8x / 4x, OpenPose C++ 95% (its Matlab
   version 85%); on the stride-8 grid the end points, on the joints, read a field that only starts
   there (ground truth: the region's edge, where interpolation can fall below 0.05), so both may miss.
3. Matching (`match_limbs`): candidates by descending score (ties: A index, then B index), each
   accepted when neither of its peaks is taken yet, until min(n_A, n_B) are accepted: greedy
   one-to-one, as CMU and Osokin.
4. Assembly (`assemble_people`), limb types in layout order, matches in acceptance order. A peak
   belongs to at most one person. For a match (a, b, s):
   - neither peak in a person: a new person {a, b} with score = score(a) + score(b) + s;
   - one in a person whose slot for the other's joint is empty: the other joins, score += its peak
     score + s (a slot already holding another peak: the match is dropped; CMU overwrites it);
   - both in the same person: nothing (the limb closes a cycle, e.g. CMU's ear-shoulder limbs);
   - in two people with no joint in common: merged, scores added + s (CMU); otherwise dropped.
   Person score = sum of its peak scores + the scores of the limbs that joined it (CMU). A person is
   kept with >= `min_parts` parts and score / parts >= `min_mean_score` (3 and 0.4: OpenPose C++
   `poseParameters.cpp`; Osokin: 3 and 0.2).

Vectorised: peaks, refinement and candidate scoring are array operations over all pixels, peaks,
pairs and sample points; Python loops run over limb types, accepted matches and connections only.
tests/test_codecs_grouping.py keeps a loop-per-pair reference of the same algorithm and checks parity.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["GroupingParams", "find_peaks", "score_limb_candidates", "match_limbs", "assemble_people",
           "group_people"]

Array = np.ndarray
_LOG_FLOOR = 1e-10          # log of non-positive map values during refinement (as DARK in heatmap.py)


@dataclass(frozen=True)
class GroupingParams:
    """Constants of the grouping; defaults and their sources in the module docstring."""
    peak_threshold: float = 0.1
    paf_threshold: float = 0.05
    num_samples: int = 10
    min_fraction: float = 0.8
    distance_prior: bool = True
    min_parts: int = 3
    min_mean_score: float = 0.4
    refine: bool = True

    def __post_init__(self) -> None:
        if int(self.num_samples) < 2:
            raise ValueError(f"GroupingParams: num_samples must be >= 2 points per limb, got {self.num_samples!r}")
        if not 0.0 <= float(self.min_fraction) <= 1.0:
            raise ValueError(f"GroupingParams: min_fraction must be in [0, 1], got {self.min_fraction!r}")
        if int(self.min_parts) < 1:
            raise ValueError(f"GroupingParams: min_parts must be >= 1, got {self.min_parts!r}")


# ------------------------------------------------------------------------------------------ peaks

def _log_parabola_vertex(maps: Array, kk: Array, yy: Array, xx: Array, axis: int) -> Array:
    """Sub-pixel position along `axis` (2 = x, 1 = y) of each peak (kk, yy, xx): the vertex of the
    parabola through the logs of the three pixels centred on the peak, or on its neighbour when the
    peak is on the border (exact for a Gaussian there too); the peak pixel when not concave; within
    +-0.5 of the peak pixel."""
    n = maps.shape[axis]
    pos = xx if axis == 2 else yy
    if n < 3:
        return pos.astype(np.float64)
    c = np.clip(pos, 1, n - 2)
    at = [(kk, yy, c + o) if axis == 2 else (kk, c + o, xx) for o in (-1, 0, 1)]
    ll, lc, lr = (np.log(np.maximum(maps[i].astype(np.float64), _LOG_FLOOR)) for i in at)
    den = ll - 2.0 * lc + lr
    vertex = c + 0.5 * (ll - lr) / np.where(den < 0, den, -1.0)
    return np.where(den < 0, np.clip(vertex, pos - 0.5, pos + 0.5), pos)


def find_peaks(heatmaps: Array, threshold: float = 0.1, refine: bool = True) -> list[Array]:
    """Peaks of each map of heatmaps [K, h, w] -> K arrays [n_k, 3] float64 (x, y, score), row-major
    order; x, y refined to sub-pixel when `refine` (module docstring, step 1)."""
    maps = np.asarray(heatmaps)
    k = maps.shape[0]
    is_peak = maps > threshold
    is_peak[:, :, 1:] &= maps[:, :, 1:] >= maps[:, :, :-1]       # >= left
    is_peak[:, 1:, :] &= maps[:, 1:, :] >= maps[:, :-1, :]       # >= up
    is_peak[:, :, :-1] &= maps[:, :, :-1] > maps[:, :, 1:]       # > right
    is_peak[:, :-1, :] &= maps[:, :-1, :] > maps[:, 1:, :]       # > down
    kk, yy, xx = np.nonzero(is_peak)                      # channel-major, then row-major
    score = maps[kk, yy, xx].astype(np.float64)
    if refine and kk.size:
        x, y = (_log_parabola_vertex(maps, kk, yy, xx, axis) for axis in (2, 1))
    else:
        x, y = xx.astype(np.float64), yy.astype(np.float64)
    peaks = np.stack([x, y, score], axis=1)
    bounds = np.searchsorted(kk, np.arange(k + 1))
    return [peaks[bounds[i]:bounds[i + 1]] for i in range(k)]


# ------------------------------------------------------------------------------------------ limbs

def _bilinear_pair(pafs: Array, limb: Array, x: Array, y: Array) -> tuple[Array, Array]:
    """Both fields of limb types `limb` (channels 2l, 2l + 1 of pafs [2L, h, w]) at points (x, y)
    inside the map, bilinear, float64; limb broadcasts against x and y."""
    _, h, w = pafs.shape
    x0 = np.minimum(np.floor(x), max(w - 2, 0)).astype(np.intp)
    y0 = np.minimum(np.floor(y), max(h - 2, 0)).astype(np.intp)
    fx, fy = x - x0, y - y0
    gx, gy = 1.0 - fx, 1.0 - fy
    flat = pafs.reshape(-1)
    right, down = int(w > 1), w * int(h > 1)               # neighbour offsets in the flat array
    out = []
    for i00 in ((2 * limb * h + y0) * w + x0, ((2 * limb + 1) * h + y0) * w + x0):
        v00, v01 = flat.take(i00), flat.take(i00 + right)
        v10, v11 = flat.take(i00 + down), flat.take(i00 + down + right)
        # float32 values times float64 weights: float64 arithmetic, as the loop reference
        out.append((v00 * gx + v01 * fx) * gy + (v10 * gx + v11 * fx) * fy)
    return out[0], out[1]


def _pair_scores(pafs: Array, limb: Array, a: Array, b: Array, params: GroupingParams) -> tuple[Array, Array]:
    """Line-integral score and candidate flag of pairs (a [N, 2], b [N, 2]) of limb types limb [N]
    over pafs [2L, h, w] (module docstring, step 2) -> (score float64 [N], candidate bool [N])."""
    _, h, w = pafs.shape
    n = int(params.num_samples)
    d = b - a
    length = np.sqrt(d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1])
    nonzero = length > 0
    safe = np.where(nonzero, length, 1.0)
    ux, uy = d[:, 0] / safe, d[:, 1] / safe
    t = np.arange(n, dtype=np.float64) / (n - 1)
    # [N, n] sample points; clipped to the map, where refined peaks may sit half a pixel out
    x = np.clip(a[:, 0, None] + t * d[:, 0, None], 0, w - 1)
    y = np.clip(a[:, 1, None] + t * d[:, 1, None], 0, h - 1)
    vx, vy = _bilinear_pair(pafs, limb[:, None], x, y)
    s = vx * ux[:, None] + vy * uy[:, None]
    score = s.sum(axis=-1) / n
    if params.distance_prior:
        score = score + np.minimum(0.5 * h / safe - 1.0, 0.0)
    passing = (s > params.paf_threshold).sum(axis=-1)
    need = np.ceil(params.min_fraction * n - 1e-9)          # 0.8 * 10 -> 8, not a rounding error above
    return score, nonzero & (passing >= need) & (score > 0)


def score_limb_candidates(paf_x: Array, paf_y: Array, a: Array, b: Array,
                          params: GroupingParams = GroupingParams()) -> tuple[Array, Array]:
    """Line-integral scores of all pairs of A peaks a [nA, 2] and B peaks b [nB, 2] (x, y) over one
    limb's field (paf_x, paf_y [h, w]) -> (score float64 [nA, nB], candidate bool [nA, nB])."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    na, nb = len(a), len(b)
    pairs_a, pairs_b = np.repeat(a, nb, axis=0), np.tile(b, (na, 1))         # A-major
    score, cand = _pair_scores(np.stack([paf_x, paf_y]), np.zeros(na * nb, np.intp), pairs_a, pairs_b, params)
    return score.reshape(na, nb), cand.reshape(na, nb)


def match_limbs(score: Array, candidate: Array) -> tuple[Array, Array, Array]:
    """Greedy one-to-one matching of candidate pairs by descending score (module docstring, step 3)
    -> (A indices, B indices, scores) of the accepted pairs, in acceptance order."""
    ii, jj = np.nonzero(candidate)                        # A-major order: the tie-break
    s = score[ii, jj]
    order = np.argsort(-s, kind="stable")
    used_a = np.zeros(score.shape[0], dtype=bool)
    used_b = np.zeros(score.shape[1], dtype=bool)
    limit = min(score.shape)
    keep: list[int] = []
    for c, i, j in zip(order.tolist(), ii[order].tolist(), jj[order].tolist()):
        if used_a[i] or used_b[j]:
            continue
        used_a[i] = used_b[j] = True
        keep.append(c)
        if len(keep) >= limit:
            break
    keep_arr = np.asarray(keep, dtype=np.intp)
    return ii[keep_arr], jj[keep_arr], s[keep_arr]


# ------------------------------------------------------------------------------------------ people

def assemble_people(connections: Sequence[tuple[Array, Array, Array]], limbs: Sequence[tuple[int, int]],
                    peak_scores: Array, num_joints: int,
                    params: GroupingParams = GroupingParams()) -> tuple[Array, Array]:
    """Connections (global peak ids of A, of B, limb scores) per limb -> (parts int [P, K] peak ids,
    -1 where missing, scores float64 [P]) of the kept people, best score first (step 4)."""
    peak_scores = np.asarray(peak_scores, dtype=np.float64)
    owner = np.full(peak_scores.shape[0], -1, dtype=np.intp)   # peak id -> person index
    parts: list[list[int]] = []
    scores: list[float] = []
    alive: list[bool] = []
    for (ja, jb), (ga, gb, s) in zip(limbs, connections):
        for pa, pb, ls in zip(np.asarray(ga).tolist(), np.asarray(gb).tolist(), np.asarray(s).tolist()):
            ra, rb = int(owner[pa]), int(owner[pb])
            if ra < 0 and rb < 0:
                row = [-1] * num_joints
                row[ja], row[jb] = pa, pb
                owner[pa] = owner[pb] = len(parts)
                parts.append(row)
                scores.append(peak_scores[pa] + peak_scores[pb] + ls)
                alive.append(True)
            elif ra == rb:
                continue
            elif rb < 0 or ra < 0:
                r, joint, peak = (ra, jb, pb) if rb < 0 else (rb, ja, pa)
                if parts[r][joint] < 0:
                    parts[r][joint] = peak
                    owner[peak] = r
                    scores[r] += peak_scores[peak] + ls
            elif all(p < 0 or q < 0 for p, q in zip(parts[ra], parts[rb])):
                for joint, peak in enumerate(parts[rb]):
                    if peak >= 0:
                        parts[ra][joint] = peak
                        owner[peak] = ra
                scores[ra] += scores[rb] + ls
                alive[rb] = False
    table = np.asarray(parts, dtype=np.intp).reshape(-1, num_joints)
    score = np.asarray(scores, dtype=np.float64)
    count = (table >= 0).sum(axis=1)
    keep = np.asarray(alive, dtype=bool) & (count >= params.min_parts) & \
        (score >= params.min_mean_score * np.maximum(count, 1))
    table, score = table[keep], score[keep]
    order = np.argsort(-score, kind="stable")
    return table[order], score[order]


def _score_all(pafs: Array, peaks: list[Array], limbs, params: GroupingParams,
               budget: int = 1 << 16) -> tuple[list[Array], list[Array]]:
    """(score, candidate) [nA * nB] (A-major) of every limb type. The pairs of several limb types go
    through `_pair_scores` together, up to `budget` sample points a call. Measured at 640 x 480:
    one call per limb type takes 5.6 ms instead of 0.6 for one person (numpy's per-call overhead),
    one call for all 21 ms instead of 15 for 30 people (arrays out of cache)."""
    sizes = [len(peaks[ja]) * len(peaks[jb]) for ja, jb in limbs]
    scores: list[Array] = [np.zeros(0)] * len(limbs)
    cands: list[Array] = [np.zeros(0, dtype=bool)] * len(limbs)
    todo = [l for l in range(len(limbs)) if sizes[l]]
    while todo:
        batch = [todo.pop(0)]
        while todo and (sum(sizes[l] for l in batch) + sizes[todo[0]]) * params.num_samples <= budget:
            batch.append(todo.pop(0))
        a = np.concatenate([np.repeat(peaks[limbs[l][0]][:, :2], len(peaks[limbs[l][1]]), axis=0) for l in batch])
        b = np.concatenate([np.tile(peaks[limbs[l][1]][:, :2], (len(peaks[limbs[l][0]]), 1)) for l in batch])
        limb = np.repeat(np.asarray(batch, dtype=np.intp), [sizes[l] for l in batch])
        score, cand = _pair_scores(pafs, limb, a, b, params)
        cut = np.cumsum([sizes[l] for l in batch])[:-1]
        for l, sc, ca in zip(batch, np.split(score, cut), np.split(cand, cut)):
            scores[l], cands[l] = sc, ca
    return scores, cands


def _connect(l: int, pa: Array, pb: Array, off_a: int, off_b: int, score: Array,
             cand: Array) -> tuple[Array, Array, Array]:
    """Greedy matches of one limb type as global peak ids (step 3)."""
    if not len(pa) or not len(pb):
        return np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0)
    i, j, s = match_limbs(score.reshape(len(pa), len(pb)), cand.reshape(len(pa), len(pb)))
    return i + off_a, j + off_b, s


def group_people(heatmaps: Array, pafs: Array, limbs: Sequence[tuple[int, int]],
                 params: GroupingParams = GroupingParams()) -> tuple[Array, Array]:
    """Keypoint maps [K, h, w] (no background channel) and fields [2L, h, w] (x, y per limb, in
    `limbs` order) -> (keypoints float32 [P, K, 3] = (x, y, peak score) in map pixels, 0 for missing
    joints; person scores float32 [P]), best first."""
    heatmaps, pafs = np.asarray(heatmaps), np.ascontiguousarray(pafs)    # pafs: read as one flat array
    if heatmaps.ndim != 3 or pafs.ndim != 3 or pafs.shape != (2 * len(limbs),) + heatmaps.shape[1:]:
        raise ValueError(f"group_people: expected heatmaps [K, h, w] and pafs [2 x {len(limbs)} limbs, h, w], "
                         f"got {heatmaps.shape} and {pafs.shape}")
    k = heatmaps.shape[0]
    if any(not (0 <= j < k) for limb in limbs for j in limb):
        raise ValueError(f"group_people: limbs name joints outside the {k} heatmaps: {list(limbs)}")
    peaks = find_peaks(heatmaps, params.peak_threshold, params.refine)
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in peaks])])
    every = np.concatenate(peaks) if offsets[-1] else np.zeros((0, 3))
    connections = [_connect(l, peaks[ja], peaks[jb], offsets[ja], offsets[jb], s, c)
                   for l, (ja, jb), s, c in zip(range(len(limbs)), limbs, *_score_all(pafs, peaks, limbs, params))]
    table, score = assemble_people(connections, limbs, every[:, 2], k, params)
    keypoints = np.where((table >= 0)[..., None], every[np.maximum(table, 0)] if every.size else 0.0, 0.0)
    return keypoints.reshape(-1, k, 3).astype(np.float32), score.astype(np.float32)
