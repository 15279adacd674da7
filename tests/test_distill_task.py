"""DistillationTask: the objective is the papers' sum, gradients reach only the student (and the
discriminator in its own step), the teacher never changes; recipe checks; load_teacher."""
import copy
import math

import pytest
import torch
import torch.nn as nn

from posedistill.distill.adversarial import AdversarialStructure, discriminator_loss
from posedistill.distill.config import DistillConfig, TeacherConfig
from posedistill.distill.task import DistillationTask, auto_gt_weight, validate_distill_config
from posedistill.distill.teacher import FrozenTeacher, load_teacher
from posedistill.losses.distill import AlignedFeatureLoss, LogitDistillLoss, PairwiseSimilarityLoss

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
    task = DistillationTask(student, teacher, MSE(), terms=modules, weights=weights, gt_weight=auto_gt_weight(cfg),
                            decay=decay, epochs=epochs)
    return task, student, teacher


def test_objective_is_ikd_eq7():
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
    expect = 0.5 * l_ld + 0.2 * l_fd + 0.3 * l_s                              # eq. 7
    assert math.isclose(float(out["loss"].detach()), float(expect.detach()), rel_tol=1e-4)
    assert set(out) >= {"loss", "supervised", "logit", "pairwise", "adversarial", "adversarial_d"}


def test_gradients_only_into_student_and_teacher_unchanged():
    task, student, teacher = _task()
    t_state = copy.deepcopy(teacher.state_dict())
    disc = task.terms["adversarial"].discriminator
    d_state = copy.deepcopy(disc.state_dict())
    params = list(task.optim_parameters())
    ids = {id(p) for p in params}
    assert not ids & {id(p) for p in teacher.parameters()}
    assert not ids & {id(p) for p in disc.parameters()}
    assert id(task.terms["aligned"].align.weight) in ids              # the 1x1 adapter learns with the student
    opt = torch.optim.SGD(params, lr=0.1)
    for _ in range(2):
        task.train()
        assert not teacher.training and not teacher.model.training
        out = task(_batch())
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        assert all(p.grad is not None for p in student.parameters())
        assert all(p.grad is None for p in teacher.parameters())
        assert all(p.grad is None for p in disc.parameters())         # student step: D frozen
        opt.step()
        task.aux_step()                                                 # D's own step
        assert all(p.grad is not None for p in disc.parameters())
        assert all(p.grad is None for p in teacher.parameters())
        for p in disc.parameters():
            p.grad = None
    for k, v in teacher.state_dict().items():                           # weights and BN statistics
        assert torch.equal(v, t_state[k]), k
    assert any(not torch.equal(v, d_state[k]) for k, v in disc.state_dict().items() if v.dtype.is_floating_point)


def test_discriminator_step_minimises_eq5():
    torch.manual_seed(1)
    adv = AdversarialStructure(K, channels=4, lr=1e-2)
    hs, ht = torch.rand(4, K, 6, 6) * 0.2, torch.rand(4, K, 6, 6)
    losses = []
    for _ in range(15):
        adv.generator_loss(hs, ht)
        losses.append(float(adv.discriminator_step()))
    assert losses[-1] < losses[0]
    adv.discriminator.eval()
    with torch.no_grad():
        direct = discriminator_loss(adv.discriminator(hs), adv.discriminator(ht))
        assert math.isclose(float(direct), float(((adv.discriminator(hs)) ** 2).mean()
                                                 + ((adv.discriminator(ht) - 1) ** 2).mean()), rel_tol=1e-6)


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


def test_auto_gt_weight():
    assert auto_gt_weight(DistillConfig(terms={"pairwise": 0.2})) == 1.0
    assert auto_gt_weight(DistillConfig(terms={"logit": 0.5, "pairwise": 0.2})) == 0.25
    assert math.isclose(auto_gt_weight(DistillConfig(terms={"mapd": 1.0})), 1 - 0.15 - 0.075)
    assert auto_gt_weight(DistillConfig(terms={"logit": 0.5}, gt_weight=2.0)) == 2.0


def test_cache_with_feature_terms_is_rejected():
    with pytest.raises(ValueError, match="cache.*pairwise"):
        validate_distill_config(DistillConfig(terms={"logit": 0.5, "pairwise": 0.2}, cache=True))
    with pytest.raises(ValueError, match="unknown term"):
        validate_distill_config(DistillConfig(terms={"logits": 0.5}))
    with pytest.raises(ValueError, match="decay"):
        validate_distill_config(DistillConfig(terms={"logit": 0.5}, decay=["aligned"]))
    validate_distill_config(DistillConfig(terms={"logit": 0.5, "adversarial": 0.3}, cache=True))
    with pytest.raises(ValueError, match="cache"):
        DistillationTask(TinyPose(4), None, MSE(), terms={"pairwise": PairwiseSimilarityLoss()},
                         weights={"pairwise": 1.0}, cache=object())


def test_extra_state_roundtrip():
    task, _, _ = _task()
    task(_batch())["loss"].backward()
    task.aux_step()
    state = task.extra_state_dict()
    other, _, _ = _task()
    other.load_extra_state_dict(state)
    for a, b in zip(task.terms["aligned"].parameters(), other.terms["aligned"].parameters()):
        assert torch.equal(a, b)
    for (k, a), b in zip(task.terms["adversarial"].discriminator.state_dict().items(),
                         other.terms["adversarial"].discriminator.state_dict().values()):
        assert torch.equal(a, b), k


def test_load_teacher_frozen(tmp_path):
    from posedistill.models import create_model

    ref = create_model("simplebaseline_r18", num_joints=K)
    path = tmp_path / "teacher.pth"
    torch.save({"model": ref.state_dict(), "epoch": 3}, path)
    teacher = load_teacher(TeacherConfig(model="simplebaseline_r18", checkpoint=str(path)), K, "cpu")
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.model.training
    for k, v in ref.state_dict().items():
        assert torch.equal(teacher.model.state_dict()[k], v)
    x = torch.randn(1, 3, 64, 64)
    ref.eval()
    assert torch.allclose(teacher(x), ref(x), atol=1e-5)
    with pytest.raises(ValueError, match="checkpoint"):
        load_teacher(TeacherConfig(model="simplebaseline_r18"), K, "cpu")


def test_distill_command_requires_teacher(tmp_path, capsys):
    from posedistill.distill.task import main

    cfg = tmp_path / "r.yaml"
    cfg.write_text("model: {name: simplebaseline_r18}\n")
    assert main([str(cfg)]) == 2
    assert "distill.teacher.model is empty" in capsys.readouterr().err
    cfg.write_text("distill: {teacher: {model: simplebaseline_r50, checkpoint: x.pth}, terms: {pairwise: 0.2}, cache: true}\n")
    assert main([str(cfg)]) == 2
    assert "cannot serve the feature term" in capsys.readouterr().err


def test_ablation_variants_and_table(tmp_path):
    from posedistill.distill.ablate import variant_config, variants_for, write_tables
    from posedistill.engine.config import load_config

    terms = {"logit": 0.5, "pairwise": 0.2, "adversarial": 0.3}
    v = variants_for(terms, ["logit", "pairwise", "adversarial"])
    assert [n for n, _ in v] == ["student", "logit", "pairwise", "adversarial", "logit+pairwise+adversarial"]
    assert v[-1][1] == terms and v[1][1] == {"logit": 0.5}
    with pytest.raises(ValueError, match="mapd"):
        variants_for(terms, ["mapd"])
    cfg = load_config(None, ["distill.teacher.model=simplebaseline_r50", "distill.teacher.checkpoint=t.pth",
                             "distill.terms={logit: 0.5, pairwise: 0.2}", "distill.decay=[all]"])
    base = variant_config(cfg, {}, 3, tmp_path / "s")
    assert base.distill.teacher.model == "" and base.distill.terms == {} and base.train.seed == 3
    one = variant_config(cfg, {"pairwise": 0.2}, 1, tmp_path / "p")
    assert one.distill.terms == {"pairwise": 0.2} and one.distill.decay == ["pairwise"]
    assert one.distill.teacher.checkpoint == "t.pth" and one.train.out_dir == str(tmp_path / "p")
    rows = [{"variant": "student", "terms": "", "seed": s, "AP": ap, "AP50": 0.9, "AR": 0.5, "best_AP": ap, "time_s": 1}
            for s, ap in ((0, 0.50), (1, 0.52))]
    rows += [{"variant": "logit", "terms": "logit=0.5", "seed": s, "AP": ap, "AP50": 0.9, "AR": 0.5, "best_AP": ap,
              "time_s": 1} for s, ap in ((0, 0.53), (1, 0.55))]
    md = write_tables(rows, {"model": "r50", "AP": 0.6, "AP50": 0.95, "AR": 0.7}, tmp_path, "posedistill ablate x")
    assert "| student | none | 0,1 | 51.00 +- 1.41 |" in md
    assert "| logit | logit=0.5 | 0,1 | 54.00 +- 1.41 |" in md and "| +3.00 |" in md
    assert "teacher (r50)" in md and (tmp_path / "ablation.csv").read_text().count("\n") == 5


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
    from posedistill.distill.task import build_terms
    from posedistill.keypoints import KeypointMeta
    from posedistill.losses.distill import PoseDistillLoss, SimCCLogitDistillLoss, simcc_soft_argmax

    meta = KeypointMeta(name="toy", joints=("a", "b", "c"), flip_pairs=((1, 2),), skeleton=((0, 1), (0, 2)),
                        sigmas=(.1,) * 3, joint_weights=(1.,) * 3, upper_body=(0,))
    torch.manual_seed(0)
    student, teacher = TinySimCC(4), FrozenTeacher(TinySimCC(6), amp="none")
    cfg = DistillConfig(terms={"aligned": 0.5, "pose": 0.1, "logit": 0.5}, decay=["aligned", "pose"])
    terms = build_terms(cfg, student, teacher, meta, (8, 8), "cpu")
    assert isinstance(terms["logit"], SimCCLogitDistillLoss) and isinstance(terms["pose"], PoseDistillLoss)
    assert terms["aligned"].align.in_channels == 4 and terms["aligned"].align.out_channels == 6
    task = DistillationTask(student, teacher, SimCCKL(), terms=terms, weights=dict(cfg.terms),
                            gt_weight=auto_gt_weight(cfg), decay=cfg.decay, epochs=2, split_ratio=2.0)
    task.set_epoch(1)
    batch = {"image": torch.randn(2, 3, 8, 8), "simcc_x": torch.rand(2, K, 16), "simcc_y": torch.rand(2, K, 16),
             "target_weight": torch.ones(2, K)}
    out = task(batch)
    s_out, s_f = student(batch["image"], return_features=True)
    t_out, t_f = teacher(batch["image"], return_features=True)
    gt = SimCCKL()(*s_out, batch["simcc_x"], batch["simcc_y"], batch["target_weight"])
    pose = terms["pose"](simcc_soft_argmax(*s_out, 2.0), simcc_soft_argmax(*t_out, 2.0))
    expect = 0.25 * gt + 0.5 * terms["logit"].distill(s_out, t_out) + 0.5 * (
        0.5 * terms["aligned"](s_f["backbone"], t_f["backbone"]) + 0.1 * pose)       # seed 002 eq. 5, gamma = 1/2
    assert math.isclose(float(out["loss"].detach()), float(expect.detach()), rel_tol=1e-5)
    out["loss"].backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    with pytest.raises(ValueError, match="heatmap"):
        build_terms(DistillConfig(terms={"mapd": 1.0}), student, teacher, meta, (8, 8), "cpu")
    with pytest.raises(ValueError, match="head"):
        build_terms(DistillConfig(terms={"logit": 1.0}), student, FrozenTeacher(TinyPose(4)), meta, (8, 8), "cpu")


def test_distill_cli_rejects_recipe_without_teacher(capsys):
    from posedistill.distill.task import main

    assert main(["configs/demo_base.yaml"]) == 2
    err = capsys.readouterr().err
    assert "distill.teacher.model is empty" in err and "configs/demo_base.yaml" in err


def test_distill_cli_rejects_unknown_key(capsys):
    from posedistill.distill.task import main

    assert main(["configs/demo_base.yaml", "optim.lrr=0.1"]) == 2
    assert "optim.lr" in capsys.readouterr().err
