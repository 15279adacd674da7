"""Tasks: SupervisedTask on both head types with real networks; DistillationTask's objective is the
papers' sum, gradients reach only the student (and the discriminator through its own loss), the
teacher never changes, optimiser groups and extra state."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from posedistill.codecs import HeatmapCodec, SimCCCodec
from posedistill.distill.adversarial import AdversarialStructure
from posedistill.distill.config import DistillConfig, auto_gt_weight
from posedistill.distill.teacher import FrozenTeacher
from posedistill.distill.terms import TermContext, build_terms
from posedistill.keypoints import KeypointMeta
from posedistill.losses import JointsMSELoss, SimCCKLLoss
from posedistill.losses.distill import (AlignedFeatureLoss, LogitDistillLoss, PairwiseSimilarityLoss, PoseDistillLoss,
                                        SimCCLogitDistillLoss, simcc_argmax_pose, simcc_soft_argmax)
from posedistill.models import create_model
from posedistill.models.simcc import simcc
from posedistill.engine.runlog import scale_report_lines
from posedistill.tasks import DistillationTask, SupervisedTask

K = 3


class TinyPose(nn.Module):
    """Stand-in pose net: stride-2 conv backbone (with BN) + 1x1 head; heatmaps [B, K, H/2, W/2]."""
    head_type = "heatmap"
    output_stride = 2

    def __init__(self, width: int):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU())
        self.head = nn.Conv2d(width, K, 1)

    def forward(self, x, return_features=False):
        f = self.backbone(x)
        out = self.head(f)
        return (out, {"backbone": f, "head_in": f}) if return_features else out


class MSE(nn.Module):
    def forward(self, pred, target, weight):
        return 0.5 * ((pred - target) ** 2 * weight[..., None, None]).mean()


def _batch(b=2, h=8, w=8):
    return {"image": torch.randn(b, 3, h, w), "heatmaps": torch.rand(b, K, h // 2, w // 2),
            "target_weight": torch.ones(b, K)}


def _task(terms=("logit", "pairwise", "adversarial", "aligned"), weights=None, decay=(), epochs=1):
    torch.manual_seed(0)
    student, teacher = TinyPose(4), FrozenTeacher(TinyPose(6), amp="none")
    modules = {"logit": LogitDistillLoss(0.5), "pairwise": PairwiseSimilarityLoss(),
               "adversarial": AdversarialStructure(K, channels=4), "aligned": AlignedFeatureLoss(4, 6)}
    modules = {t: modules[t] for t in terms}
    weights = weights or {"logit": 0.5, "pairwise": 0.2, "adversarial": 0.3, "aligned": 0.1}
    weights = {t: weights[t] for t in terms}
    cfg = DistillConfig(terms=weights)
    task = DistillationTask(student, teacher, MSE(), ("heatmaps",), terms=modules, weights=weights,
                            gt_weight=auto_gt_weight(cfg), decay=decay, epochs=epochs)
    return task, student, teacher


def _supervised_batch(codec, b, k, w, h):
    """Random people in a w x h crop, encoded by the real codec."""
    rng = np.random.default_rng(0)
    targets = [codec.encode(rng.uniform(4, [w - 4, h - 4], size=(k, 2)), np.ones(k)) for _ in range(b)]
    batch = {key: torch.as_tensor(np.stack([t[key] for t in targets])) for key in targets[0]}
    batch["image"] = torch.randn(b, 3, h, w)
    return batch


@pytest.mark.parametrize("head, codec, loss", [
    ("heatmap", HeatmapCodec(input_size=(32, 32), heatmap_size=(8, 8), sigma=1.0), JointsMSELoss()),
    ("simcc", SimCCCodec(input_size=(32, 32), split_ratio=2.0, sigma=2.0), SimCCKLLoss()),
])
def test_supervised_task_trains_both_head_types(head, codec, loss):
    """The codec's target keys select the targets; a few steps on one fixed batch change the weights
    and lower the loss well below where the untrained network starts (ELPN-V1, and ELPN-V1 under a
    SimCC head)."""
    torch.manual_seed(0)
    model = create_model("elpn_v1", num_joints=K)
    if head == "simcc":
        model = simcc(model, input_size=(32, 32), split_ratio=2.0)
    task = SupervisedTask(model, loss, codec.target_keys, loss_weight=2.0)
    batch = _supervised_batch(codec, 4, K, 32, 32)
    task.train()                                   # BN on batch statistics: one fixed batch, same function each call
    with torch.no_grad():
        first = task(batch)
        outputs = model(batch["image"])
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        direct = loss(*outputs, *(batch[k] for k in codec.target_keys), batch["target_weight"])
    assert float(first["supervised"]) == pytest.approx(float(direct), rel=1e-6)
    assert float(first["loss"]) == pytest.approx(2.0 * float(direct), rel=1e-6)
    [group] = task.optim_groups()
    before = [p.detach().clone() for p in group.params]
    opt = torch.optim.Adam(group.params, lr=3e-3)
    for _ in range(40):
        opt.zero_grad()
        task(batch)["loss"].backward()
        opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, group.params))
    with torch.no_grad():
        last = float(task(batch)["supervised"])
    assert last < 0.3 * float(first["supervised"]), (float(first["supervised"]), last)


def test_objective_is_ikd_eq7_plus_discriminator_loss():
    task, student, teacher = _task(terms=("logit", "pairwise", "adversarial"))
    batch = _batch()
    out = task(batch)
    s_out, s_f = student(batch["image"], return_features=True)
    t_out, t_f = teacher(batch["image"], return_features=True)
    l_mse = MSE()(s_out, batch["heatmaps"], batch["target_weight"])
    l_ld = LogitDistillLoss(0.5)(s_out, t_out, l_mse)                       # eq. 4
    l_fd = PairwiseSimilarityLoss()(s_f["backbone"], t_f["backbone"])       # eq. 1
    d = task.terms["adversarial"].discriminator
    l_s = ((d(s_out) - 1) ** 2).mean()                                        # eq. 8
    l_ad = (d(s_out) ** 2).mean() + ((d(t_out) - 1) ** 2).mean()              # eq. 5
    expect = 0.5 * l_ld + 0.2 * l_fd + 0.3 * l_s                              # eq. 7
    assert math.isclose(float(out["adversarial"]), float(l_s.detach()), rel_tol=1e-5)
    assert math.isclose(float(out["adversarial_own"]), float(l_ad.detach()), rel_tol=1e-5)
    assert math.isclose(float(out["loss"].detach()), float((expect + l_ad).detach()), rel_tol=1e-4)
    assert set(out) >= {"loss", "supervised", "logit", "pairwise", "adversarial", "adversarial_own"}


def test_gradients_are_separated_and_teacher_unchanged():
    """One backward of the task's loss gives the student exactly the gradient of eq. 7 (nothing from
    the discriminator's loss) and the discriminator exactly the gradient of eq. 5 (nothing from the
    student's objective); the teacher gets none and keeps its weights and BN statistics. Reference
    gradients come from copies of the student and discriminator, with eq. 7 and eq. 5 written out."""
    task, student, teacher = _task(terms=("logit", "adversarial"))
    disc = task.terms["adversarial"].discriminator
    student_ref, disc_ref = copy.deepcopy(student), copy.deepcopy(disc)
    t_state = copy.deepcopy(teacher.state_dict())
    batch = _batch()
    task.train()
    assert not teacher.training and not teacher.model.training
    task(batch)["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    t_out = teacher(batch["image"])
    s_out = student_ref(batch["image"])
    l_mse = MSE()(s_out, batch["heatmaps"], batch["target_weight"])
    disc_frozen = copy.deepcopy(disc_ref).requires_grad_(False)
    eq7 = 0.5 * LogitDistillLoss(0.5)(s_out, t_out, l_mse) + 0.3 * ((disc_frozen(s_out) - 1) ** 2).mean()
    eq7.backward()
    for (name, p), ref in zip(student.named_parameters(), student_ref.parameters()):
        assert torch.allclose(p.grad, ref.grad, atol=1e-6), name
    eq5 = (disc_ref(s_out.detach()) ** 2).mean() + ((disc_ref(t_out) - 1) ** 2).mean()
    eq5.backward()
    for (name, p), ref in zip(disc.named_parameters(), disc_ref.parameters()):
        assert torch.allclose(p.grad, ref.grad, atol=1e-6), name
    for k, v in teacher.state_dict().items():                           # weights and BN statistics
        assert torch.equal(v, t_state[k]), k


def test_optim_groups_student_with_adapter_and_discriminator_apart():
    task, student, teacher = _task()
    groups = task.optim_groups()
    assert [g.name for g in groups] == ["student", "adversarial"]
    ids = {id(p) for p in groups[0].params}
    assert {id(p) for p in student.parameters()} <= ids
    assert id(task.terms["aligned"].align.weight) in ids                # the 1x1 adapter learns with the student
    disc = {id(p) for p in task.terms["adversarial"].discriminator.parameters()}
    assert not ids & disc and {id(p) for p in groups[1].params} == disc
    assert not ({id(p) for p in teacher.parameters()} & (ids | disc))
    assert (groups[1].optimizer, groups[1].lr, groups[1].betas) == ("adam", 1e-4, (0.5, 0.999))
    assert set(task.trainable_modules()) == {"student", "adversarial", "aligned"}


def test_decay_applies_to_terms_not_to_ground_truth():
    task, student, _ = _task(terms=("logit",), decay=("logit",), epochs=4)
    batch = _batch()
    task.eval()
    task.set_epoch(0)
    a = {k: v.detach() for k, v in task(batch).items()}
    task.set_epoch(3)
    b = {k: v.detach() for k, v in task(batch).items()}
    # gamma(4) = 1 - 3/4; gt weight 0.5 * 0.5 fixed
    assert math.isclose(float(b["loss"]), 0.25 * float(b["supervised"]) + 0.5 * 0.25 * float(b["logit"]), rel_tol=1e-5)
    assert math.isclose(float(a["loss"]), 0.25 * float(a["supervised"]) + 0.5 * float(a["logit"]), rel_tol=1e-5)
    assert float(b["gamma"]) == 0.25


def test_task_rejects_cache_with_feature_terms():
    with pytest.raises(ValueError, match="cache"):
        DistillationTask(TinyPose(4), None, MSE(), ("heatmaps",), terms={"pairwise": PairwiseSimilarityLoss()},
                         weights={"pairwise": 1.0}, cache=object())


def test_extra_state_roundtrip():
    task, _, _ = _task()
    opt = torch.optim.SGD([p for g in task.optim_groups() for p in g.params], lr=0.1)
    task(_batch())["loss"].backward()
    opt.step()
    state = task.extra_state()
    assert set(state["terms"]) == {"aligned", "adversarial"}        # adapter and discriminator (BN statistics too)
    other, _, _ = _task()
    other.load_extra_state(state)
    for name in ("aligned", "adversarial"):
        for (k, a), b in zip(task.terms[name].state_dict().items(), other.terms[name].state_dict().values()):
            assert torch.equal(a, b), k
    with pytest.raises(KeyError, match="mapd"):
        other.load_extra_state({"terms": {"mapd": {}}})


class TinySimCC(nn.Module):
    """Stand-in SimCC model: 8x8 input, split ratio 2 -> x / y logits of 16 bins."""
    head_type = "simcc"
    split_ratio = 2.0

    def __init__(self, width):
        super().__init__()
        self.backbone = nn.Conv2d(3, width, 3, 2, 1)
        self.fx = nn.Linear(width * 16, K * 16)
        self.fy = nn.Linear(width * 16, K * 16)

    def forward(self, x, return_features=False):
        f = self.backbone(x)
        out = (self.fx(f.flatten(1)).view(-1, K, 16), self.fy(f.flatten(1)).view(-1, K, 16))
        return (out, {"backbone": f}) if return_features else out


class SimCCKL(nn.Module):
    def forward(self, x, y, tx, ty, w):
        return (x.log_softmax(-1) * -tx).sum(-1).mean() + (y.log_softmax(-1) * -ty).sum(-1).mean()


def test_simcc_student_seed002_terms():
    meta = KeypointMeta(name="toy", joints=("a", "b", "c"), flip_pairs=((1, 2),), skeleton=((0, 1), (0, 2)),
                        sigmas=(.1,) * 3, joint_weights=(1.,) * 3, upper_body=(0,))
    torch.manual_seed(0)
    student, teacher = TinySimCC(4), FrozenTeacher(TinySimCC(6), amp="none")
    cfg = DistillConfig(terms={"aligned": 0.5, "pose": 0.1, "logit": 0.5}, decay=["aligned", "pose"])
    terms = build_terms(cfg, TermContext(student, teacher, meta, (8, 8), torch.device("cpu")))
    assert isinstance(terms["logit"], SimCCLogitDistillLoss) and isinstance(terms["pose"], PoseDistillLoss)
    assert terms["aligned"].align.in_channels == 4 and terms["aligned"].align.out_channels == 6
    task = DistillationTask(student, teacher, SimCCKL(), ("simcc_x", "simcc_y"), terms=terms, weights=dict(cfg.terms),
                            gt_weight=auto_gt_weight(cfg), decay=cfg.decay, epochs=2, split_ratio=2.0)
    task.set_epoch(1)
    batch = {"image": torch.randn(2, 3, 8, 8), "simcc_x": torch.rand(2, K, 16), "simcc_y": torch.rand(2, K, 16),
             "target_weight": torch.ones(2, K)}
    out = task(batch)
    s_out, s_f = student(batch["image"], return_features=True)
    t_out, t_f = teacher(batch["image"], return_features=True)
    gt = SimCCKL()(*s_out, batch["simcc_x"], batch["simcc_y"], batch["target_weight"])
    pose = terms["pose"](simcc_soft_argmax(*s_out, 2.0), simcc_argmax_pose(*t_out, 2.0))   # teacher: its decode
    expect = 0.25 * gt + 0.5 * terms["logit"].distill(s_out, t_out) + 0.5 * (
        0.5 * terms["aligned"](s_f["backbone"], t_f["backbone"]) + 0.1 * pose)       # seed 002 eq. 5, gamma = 1/2
    assert math.isclose(float(out["loss"].detach()), float(expect.detach()), rel_tol=1e-5)
    out["loss"].backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    with pytest.raises(ValueError, match="heatmap"):
        build_terms(DistillConfig(terms={"mapd": 1.0}), TermContext(student, teacher, meta, (8, 8), torch.device("cpu")))
    with pytest.raises(ValueError, match="head"):
        build_terms(DistillConfig(terms={"logit": 1.0}),
                    TermContext(student, FrozenTeacher(TinyPose(4)), meta, (8, 8), torch.device("cpu")))


def test_top_down_label_correction_learns_missing_joints_from_the_teacher():
    """seed 004 eq. 2 on top-down targets: max(GT, teacher) heatmaps, every joint counted."""
    torch.manual_seed(0)
    student, teacher = TinyPose(4), FrozenTeacher(TinyPose(6), amp="none")
    task = DistillationTask(student, teacher, MSE(), ("heatmaps",), terms={}, weights={}, label_correction=True)
    batch = _batch()
    batch["heatmaps"][:, 1] = 0.0
    batch["target_weight"][:, 1] = 0.0                          # joint 1 unlabelled in every sample
    out = task(batch)
    with torch.no_grad():
        t = teacher(batch["image"])
        target = torch.maximum(batch["heatmaps"], t)
        expected = MSE()(student(batch["image"]), target, torch.ones(2, K))
    assert float(out["supervised"]) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(ValueError, match="max of heatmaps"):
        DistillationTask(TinySimCC(4), teacher, SimCCKL(), ("simcc_x", "simcc_y"), terms={}, weights={},
                         label_correction=True)


def _relative_task():
    task, student, teacher = _task(terms=("logit", "pairwise", "adversarial"))
    task.relative_terms = ("adversarial",)
    return task, student, teacher


def test_relative_adversarial_enters_at_gamma_times_the_supervised_loss():
    """adversarial_scale=relative: gamma L_s is replaced by gamma L_s (L_mse / L_s) with the ratio held
    constant, so the term's value is gamma L_mse and its gradient gamma (L_mse / L_s) dL_s: the
    direction of eq. 8, the size of a gamma share of the supervised loss (docs/loss_scales.md)."""
    task, student, teacher = _relative_task()
    batch = _batch()
    out = task(batch)
    s_out, s_f = student(batch["image"], return_features=True)
    t_out, t_f = teacher(batch["image"], return_features=True)
    l_mse = MSE()(s_out, batch["heatmaps"], batch["target_weight"])
    l_ld = LogitDistillLoss(0.5)(s_out, t_out, l_mse)
    l_fd = PairwiseSimilarityLoss()(s_f["backbone"], t_f["backbone"])
    d = task.terms["adversarial"].discriminator
    l_s = ((d(s_out) - 1) ** 2).mean()
    l_ad = (d(s_out) ** 2).mean() + ((d(t_out) - 1) ** 2).mean()
    assert math.isclose(float(out["adversarial"]), float(l_s.detach()), rel_tol=1e-5)      # the log keeps eq. 8's value
    expect = 0.5 * l_ld + 0.2 * l_fd + 0.3 * l_mse + l_ad
    assert math.isclose(float(out["loss"].detach()), float(expect.detach()), rel_tol=1e-4)
    # student gradient of the adversarial part alone: 0.3 (L_mse / L_s) dL_s
    params = list(student.parameters())
    ratio = float(l_mse.detach() / l_s.detach())
    want = torch.autograd.grad(0.3 * ratio * l_s, params, retain_graph=True)
    got = torch.autograd.grad(task._objective(batch).weighted["adversarial"], params)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=1e-4, atol=1e-9)


def test_scale_report_matches_hand_ratios_and_leaves_no_trace():
    """Value ratios are weight x term / (gt_weight x L_gt) worked out from the modules; the report
    changes no BN statistic, no .grad and no RNG stream. An adversarial weight of 30 makes that term
    dominate, and the warning names it."""
    task, student, teacher = _task(terms=("logit", "adversarial"), weights={"logit": 0.5, "adversarial": 30.0})
    batch = _batch()
    buffers = {k: v.clone() for k, v in task.named_buffers()}
    torch.manual_seed(3)
    rows = {r.name: r for r in task.scale_report(batch)}
    after_report = torch.rand(1)
    torch.manual_seed(3)
    assert torch.equal(after_report, torch.rand(1))
    assert all(torch.equal(v, buffers[k]) for k, v in task.named_buffers())
    assert all(p.grad is None for p in task.parameters())
    with torch.no_grad():
        s_out = student(batch["image"])
        t_out = teacher(batch["image"])
        l_mse = MSE()(s_out, batch["heatmaps"], batch["target_weight"])
        soft = 0.5 * ((s_out - t_out) ** 2).mean()
        l_s = ((task.terms["adversarial"].discriminator(s_out) - 1) ** 2).mean()
    gt_part = 0.25 * l_mse                       # gt_weight = logit weight 0.5 x alpha 0.5
    assert rows["logit"].value_ratio == pytest.approx(float(0.5 * 0.5 * soft / gt_part), rel=1e-4)
    assert rows["adversarial"].value_ratio == pytest.approx(float(30.0 * l_s / gt_part), rel=1e-4)
    assert rows["adversarial"].value_ratio > 10 and rows["adversarial"].grad_ratio > 0
    lines = scale_report_lines(list(rows.values()))
    warned = {name for name in rows if any("warning" in l and f"'{name}'" in l for l in lines)}
    assert warned == {name for name, r in rows.items() if r.value_ratio > 10 or r.grad_ratio > 10}
    assert "adversarial" in warned and len(lines) == 1 + len(rows) + len(warned)
    task.relative_terms = ("adversarial",)
    relative = {r.name: r for r in task.scale_report(batch)}["adversarial"]
    assert relative.value_ratio == pytest.approx(30.0 / 0.25, rel=1e-4)     # 30 L_mse / (0.25 L_mse)


def test_supervised_task_reports_no_scales():
    codec = HeatmapCodec(input_size=(32, 32), heatmap_size=(8, 8), sigma=1.0)
    task = SupervisedTask(create_model("elpn_v1", num_joints=K), JointsMSELoss(), codec.target_keys)
    assert task.scale_report(_supervised_batch(codec, 2, K, 32, 32)) == [] and scale_report_lines([]) == []
