"""IGP-GCN: the image-guided progressive graph convolutional refiner of seed 002's second stage
("A Coarse-to-Fine Human Pose Estimation Method based on Two-stage Distillation and Progressive
Graph Neural Network", Sec. III-B1, Fig. 1), after OPEC-Net's module of the same name (Qiu et al.,
ECCV 2020, `lingtengqiu/OPEC-Net` `SemGCN_Attention.py`, which the paper points to).

`IGPGCN` refines a pose [B, K, 2] given in crop pixels:

    node input   (x, y, confidence) of every joint, x and y normalised to [-1, 1] over the crop
    h0 = ReLU(BN(GC(input)))                        the first graph convolution
    for i = 1, 2, 3 (feature maps low -> high resolution, F_1 at stride 16, F_2 at 8, F_3 at 4):
        J_i = F_i sampled bilinearly at the joints of P_{i-1}         (eq. 6's J_hat_i)
        h_i = h_{i-1} + ResGCNAttention([h_{i-1}, J_i])                  residual block i
        P_i = P_{i-1} + Linear(h_i)                                      block i's pose (P_0: stage 1)

and returns [P_1, P_2, P_3]; eq. 7 weighs their losses 0.3 / 0.5 / 1.0.

The graph is the keypoint set's skeleton (any `KeypointMeta`: COCO 17, CrowdPose 14, custom):
adjacency A symmetric with self-loops. Choices the paper leaves open, and how they are made here:
- graph convolution: OPEC's semantic graph convolution (separate weights for a node itself and for its
  neighbours; one learnable weight per edge of A, masked to the skeleton and row-softmax normalised).
  At initialisation every edge weight is equal, so the propagation matrix is D^-1 (A + I).
- hidden width 128 (OPEC's SemGCN hidden size); BatchNorm + ReLU after each graph convolution.
- residual block: two graph convolutions, then OPEC's SE-like node attention (per-node gate from the
  channel-averaged node features through K -> K/2 -> K and a sigmoid), added to h_{i-1}.
- each block's pose head is zero-initialised, so an untrained refiner returns the stage-1 pose and
  training can only move away from it where that lowers the loss.
- feature taps: the student's three stride-16 / 8 / 4 maps `c4`, `c3`, `c2` (HRNet and ELPN: the
  stage-3 branches; SimpleBaseline / FR-SBN: ResNet stages 3, 2, 1), as OPEC's 1/16, 1/8, 1/4 maps.
- sampling: map coordinate = crop pixel / stride (the heatmap codec's convention), bilinear
  (`grid_sample`, align_corners=True on that grid), joints outside a map read its border.

`RefinedPoseModel` = a SimCC student + IGP-GCN, one module for training, `eval`, `predict`, `export`:
`forward(x)` returns keypoints [B, K, 3] = (x, y) in crop pixels and the stage-1 confidence (the
refiner moves joints, it does not rescore them); `head_type = "coords"` (`codecs/coords.py`).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from posedistill.keypoints import COCO, CROWDPOSE, MPII
from posedistill.models.registry import create_model_at, register_model

HIDDEN = 128                                  # OPEC SemGCN hidden width
FEATURE_KEYS = ("c4", "c3", "c2")             # strides 16, 8, 4: low to high resolution
BLOCK_WEIGHTS = (0.3, 0.5, 1.0)               # seed 002 eq. 7: delta, lambda, xi
DEFAULT_SKELETONS = {m.num_joints: m.skeleton for m in (COCO, CROWDPOSE, MPII)}


def skeleton_adjacency(num_joints: int, skeleton: Sequence[Sequence[int]]) -> torch.Tensor:
    """0/1 adjacency [K, K] of the skeleton, symmetric, with self-loops."""
    adj = torch.eye(num_joints)
    for a, b in skeleton:
        if not (0 <= a < num_joints and 0 <= b < num_joints):
            raise ValueError(f"skeleton edge ({a}, {b}) is outside the {num_joints} joints")
        adj[a, b] = adj[b, a] = 1.0
    return adj


class SemGraphConv(nn.Module):
    """Semantic graph convolution (Zhao et al. CVPR 2019, as OPEC uses it): out_i = a_ii W_s h_i +
    sum_{j != i} a_ij W_n h_j + b, with a_i. = softmax over the skeleton neighbours of learnable edge
    logits (equal at init: a = D^-1 (A + I))."""

    def __init__(self, in_dim: int, out_dim: int, adjacency: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(2, in_dim, out_dim))
        nn.init.xavier_uniform_(self.weight, gain=1.414)
        self.register_buffer("adjacency", adjacency.clone())
        self.edge_logits = nn.Parameter(torch.ones_like(adjacency))
        self.bias = nn.Parameter(torch.zeros(out_dim))

    def propagation(self) -> torch.Tensor:
        """The row-stochastic [K, K] matrix, zero off the skeleton."""
        logits = self.edge_logits.masked_fill(self.adjacency == 0, float("-inf"))
        return torch.softmax(logits, dim=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        a = self.propagation()
        eye = torch.eye(a.shape[0], device=h.device, dtype=a.dtype)
        own, nbr = h @ self.weight[0], h @ self.weight[1]
        return (a * eye) @ own + (a * (1 - eye)) @ nbr + self.bias


class GraphConvBNReLU(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, adjacency: torch.Tensor, relu: bool = True):
        super().__init__()
        self.conv = SemGraphConv(in_dim, out_dim, adjacency)
        self.bn = nn.BatchNorm1d(out_dim)
        self.relu = relu

    def forward(self, h: torch.Tensor) -> torch.Tensor:          # [B, K, C] -> [B, K, out]
        out = self.bn(self.conv(h).transpose(1, 2)).transpose(1, 2)
        return F.relu(out) if self.relu else out


class NodeAttention(nn.Module):
    """OPEC's SE-like attention over nodes: gate_k = sigmoid(MLP(mean_c h)_k)."""

    def __init__(self, num_joints: int):
        super().__init__()
        mid = max(num_joints // 2, 1)
        self.fc = nn.Sequential(nn.Linear(num_joints, mid), nn.ReLU(inplace=True), nn.Linear(mid, num_joints))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * torch.sigmoid(self.fc(h.mean(dim=2))).unsqueeze(2)


class ResGCNAttentionBlock(nn.Module):
    """h + attention(GC(GC([h, J]))) and the block's pose update (zero-initialised)."""

    def __init__(self, hidden: int, feature_dim: int, adjacency: torch.Tensor):
        super().__init__()
        self.gc1 = GraphConvBNReLU(hidden + feature_dim, hidden, adjacency)
        self.gc2 = GraphConvBNReLU(hidden, hidden, adjacency, relu=False)
        self.attention = NodeAttention(adjacency.shape[0])
        self.pose = nn.Linear(hidden, 2)
        nn.init.zeros_(self.pose.weight)
        nn.init.zeros_(self.pose.bias)

    def forward(self, h: torch.Tensor, joint_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(h + self.attention(self.gc2(self.gc1(torch.cat([h, joint_features], dim=2)))))
        return h, self.pose(h)


def sample_at_joints(fmap: torch.Tensor, points: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
    """Bilinear read of `fmap` [B, C, h, w] at crop-pixel points [B, K, 2] -> [B, K, C]. Map
    coordinate = point / stride with stride = input size / map size per axis; outside: border value."""
    w_in, h_in = input_size
    h, w = fmap.shape[-2:]
    scale = torch.tensor([w / w_in, h / h_in], device=points.device, dtype=points.dtype)
    extent = torch.tensor([max(w - 1, 1), max(h - 1, 1)], device=points.device, dtype=points.dtype)
    grid = (points * scale) / extent * 2 - 1                        # align_corners=True grid
    out = F.grid_sample(fmap, grid.unsqueeze(2).to(fmap.dtype), mode="bilinear", padding_mode="border",
                        align_corners=True)                         # [B, C, K, 1]
    return out.squeeze(3).transpose(1, 2)


class IGPGCN(nn.Module):
    """See the module docstring. `feature_channels`: channels of the three maps, low to high resolution."""

    def __init__(self, num_joints: int, skeleton: Sequence[Sequence[int]], feature_channels: Sequence[int],
                 input_size: tuple[int, int], hidden: int = HIDDEN):
        super().__init__()
        if len(feature_channels) != 3:
            raise ValueError(f"IGPGCN takes three feature maps (low to high resolution), got {len(feature_channels)}")
        adjacency = skeleton_adjacency(num_joints, skeleton)
        self.num_joints = num_joints
        self.input_size = tuple(int(v) for v in input_size)
        self.register_buffer("adjacency", adjacency)
        self.embed = GraphConvBNReLU(3, hidden, adjacency)
        self.blocks = nn.ModuleList(ResGCNAttentionBlock(hidden, int(c), adjacency) for c in feature_channels)

    def _half_size(self, ref: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.input_size, device=ref.device, dtype=torch.float32) / 2

    def forward(self, points: torch.Tensor, confidence: torch.Tensor,
                maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """points [B, K, 2] crop pixels, confidence [B, K], three maps -> three refined poses [B, K, 2]
        in crop pixels."""
        half = self._half_size(points)
        norm = points.float() / half - 1                            # [-1, 1] over the crop
        h = self.embed(torch.cat([norm, confidence.float().unsqueeze(2)], dim=2))
        poses = []
        for block, fmap in zip(self.blocks, maps):
            joint_features = sample_at_joints(fmap.float(), (norm + 1) * half, self.input_size)
            h, delta = block(h, joint_features)
            norm = norm + delta
            poses.append((norm + 1) * half)
        return poses


def simcc_decode_torch(x_logits: torch.Tensor, y_logits: torch.Tensor,
                       split_ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SimCC's test-time decode in the graph (`SimCCCodec.decode`): argmax bin / k, and
    min(max softmax x, max softmax y) as the confidence."""
    px, py = torch.softmax(x_logits.float(), -1), torch.softmax(y_logits.float(), -1)
    xy = torch.stack([px.argmax(-1), py.argmax(-1)], dim=-1).float() / split_ratio
    return xy, torch.minimum(px.amax(-1), py.amax(-1))


class RefinedPoseModel(nn.Module):
    """A SimCC student (stage 1) + IGP-GCN (stage 2). forward(x) -> [B, K, 3] (x, y, confidence)."""

    head_type = "coords"

    def __init__(self, student: nn.Module, refiner: IGPGCN, feature_keys: Sequence[str] = FEATURE_KEYS):
        super().__init__()
        if getattr(student, "head_type", None) != "simcc":
            raise ValueError(f"RefinedPoseModel refines a SimCC student; got head_type "
                             f"{getattr(student, 'head_type', None)!r}")
        self.student = student
        self.refiner = refiner
        self.feature_keys = tuple(feature_keys)
        self.output_stride = student.output_stride
        self.input_size = student.input_size
        self.split_ratio = student.split_ratio

    def initial_pose(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Stage 1: (pose [B, K, 2] crop pixels, confidence [B, K], the three feature maps)."""
        (x_logits, y_logits), feats = self.student(x, return_features=True)
        missing = [k for k in self.feature_keys if k not in feats]
        if missing:
            raise KeyError(f"the student returns features {sorted(feats)}; the refiner needs {missing}")
        xy, conf = simcc_decode_torch(x_logits, y_logits, self.split_ratio)
        return xy, conf, [feats[k] for k in self.feature_keys]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xy, conf, maps = self.initial_pose(x)
        refined = self.refiner(xy, conf, maps)[-1]
        return torch.cat([refined, conf.unsqueeze(2)], dim=2)


@torch.no_grad()
def _feature_channels(student: nn.Module, input_size: tuple[int, int], keys: Sequence[str]) -> list[int]:
    was_training = student.training
    student.eval()
    w, h = input_size
    _, feats = student(torch.zeros(1, 3, h, w), return_features=True)
    student.train(was_training)
    missing = [k for k in keys if k not in feats]
    if missing:
        raise ValueError(f"the student returns features {sorted(feats)}; the refiner needs {missing}")
    return [int(feats[k].shape[1]) for k in keys]


@register_model
def simcc_igp_gcn(num_joints: int = 17, input_size: tuple[int, int] = (192, 256), split_ratio: float = 2.0,
                  skeleton: Sequence[Sequence[int]] | None = None, student: str = "simcc_hrnet_w32",
                  student_kwargs: dict | None = None, hidden: int = HIDDEN,
                  feature_keys: Sequence[str] = FEATURE_KEYS) -> RefinedPoseModel:
    """Seed 002's full model: the SimCC student `student` (registered name) + IGP-GCN over `skeleton`
    (default: the built-in keypoint set with `num_joints` joints: COCO 17, CrowdPose 14, MPII 16)."""
    if skeleton is None:
        if num_joints not in DEFAULT_SKELETONS:
            raise ValueError(f"simcc_igp_gcn: no built-in skeleton for {num_joints} joints; pass skeleton=[[a, b], ...]")
        skeleton = DEFAULT_SKELETONS[num_joints]
    base = create_model_at(student, {"num_joints": num_joints, **(student_kwargs or {})}, tuple(input_size),
                           split_ratio)
    channels = _feature_channels(base, base.input_size, feature_keys)
    refiner = IGPGCN(num_joints, skeleton, channels, base.input_size, hidden)
    return RefinedPoseModel(base, refiner, feature_keys)
