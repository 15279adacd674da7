"""Config -> objects: every registered model states its head and stride, the supervised loss follows
the codec, the teacher loads frozen."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from posedistill.codecs import HeatmapCodec, SimCCCodec
from posedistill.distill.config import TeacherConfig
from posedistill.engine import build
from posedistill.engine.config import LossConfig, load_config
from posedistill.errors import InputError, MissingFileError
from posedistill.losses import JointsMSELoss, SimCCKLLoss
from posedistill.models import MODELS, create_model_at, create_model

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

K = 3


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_states_head_type_and_stride(name):
    # a 3-joint set has no built-in skeleton: the refiner's graph is handed over as build_model does
    model = create_model_at(name, {"num_joints": K}, skeleton=[[0, 1], [1, 2]])
    assert model.head_type in ("heatmap", "simcc", "paf", "coords") and model.output_stride >= 1


def test_loss_follows_codec():
    assert isinstance(build.build_loss(LossConfig(), HeatmapCodec()), JointsMSELoss)
    assert isinstance(build.build_loss(LossConfig(), SimCCCodec()), SimCCKLLoss)
    with pytest.raises(ValueError, match="no supervised loss for codec"):
        build.build_loss(LossConfig(), object())


def test_load_teacher_frozen(tmp_path):
    ref = create_model("simplebaseline_r18", num_joints=K)
    path = tmp_path / "teacher.pth"
    torch.save({"model": ref.state_dict(), "epoch": 3}, path)
    teacher = build.load_teacher(TeacherConfig(model="simplebaseline_r18", checkpoint=str(path)), K, "cpu")
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.model.training
    for k, v in ref.state_dict().items():
        assert torch.equal(teacher.model.state_dict()[k], v)
    x = torch.randn(1, 3, 64, 64)
    ref.eval()
    assert torch.allclose(teacher(x), ref(x), atol=1e-5)
    with pytest.raises(ValueError, match="checkpoint"):
        build.load_teacher(TeacherConfig(model="simplebaseline_r18"), K, "cpu")
    with pytest.raises(InputError, match="model_kwargs"):
        build.load_teacher(TeacherConfig(model="simplebaseline_r18", model_kwargs={"nope": 1}, checkpoint=str(path)),
                           K, "cpu")


def test_create_model_at_hands_input_size_only_to_factories_that_take_it():
    from posedistill.models import create_model_at

    simcc = create_model_at("simcc_r18", {"num_joints": K}, (64, 96), 3.0)
    assert simcc.input_size == (64, 96) and simcc.split_ratio == 3.0
    assert create_model_at("elpn_v1", {"num_joints": K}, (64, 96), 3.0).head_type == "heatmap"   # not passed on
    # the recipe's model.kwargs win over the data section's size
    assert create_model_at("simcc_r18", {"num_joints": K, "input_size": (32, 32)}, (64, 96)).input_size == (32, 32)


def test_rebuild_for_a_checkpoint_does_not_read_the_imagenet_file(tmp_path):
    """A model trained from `model.kwargs.imagenet_weights` is rebuilt for its checkpoint (eval, predict,
    resume) without that file: the checkpoint's weights replace what it would load. A fresh build still
    reads it and names it when it is missing."""
    from_recipe = load_config(str(CONFIGS / "simplebaseline_r18_coco_256x192.yaml"),
                              [f"model.kwargs={{imagenet_weights: {tmp_path / 'gone.pth'}}}"])
    meta = build.keypoint_meta(from_recipe.data)
    model = build.model_from_config(from_recipe, meta, with_init_weights=False)
    assert model.head_type == "heatmap"
    with pytest.raises(MissingFileError, match="gone.pth"):
        build.model_from_config(from_recipe, meta)
