"""Recipes: every configs/*.yaml loads, overrides are typed, typos are rejected with suggestions."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from posedistill.codecs import SimCCCodec
from posedistill.engine.build import build_codec
from posedistill.engine.config import CodecConfig, Config, ConfigError, describe_fields, load_config, save_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_recipes_exist():
    names = {p.name for p in CONFIGS}
    for needed in ("simplebaseline_r50_coco_256x192.yaml", "simplebaseline_r18_coco_256x192.yaml",
                   "hrnet_w32_coco_256x192.yaml", "hrnet_w48_coco_256x192.yaml", "elpn_v1_coco_256x192.yaml",
                   "fr_sbn_r50_coco_256x192.yaml", "simcc_hrnet_w32_coco_256x192.yaml"):
        assert needed in names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_recipe_loads(path, tmp_path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert len(cfg.data.input_size) == 2
    assert all(0 < m <= cfg.optim.epochs for m in cfg.optim.milestones)
    # the resolved config written into a run directory reads back identically
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_paper_schedules():
    sb = load_config(CONFIGS[0].parent / "simplebaseline_r50_coco_256x192.yaml")
    assert (sb.optim.optimizer, sb.optim.lr, sb.optim.epochs, sb.optim.milestones) == ("adam", 1e-3, 210, [170, 200])
    assert sb.data.input_size == [192, 256]
    fr = load_config(CONFIGS[0].parent / "fr_sbn_r50_coco_256x192.yaml")
    assert (fr.optim.epochs, fr.optim.milestones) == (140, [90, 120])
    mpii = load_config(CONFIGS[0].parent / "simplebaseline_r50_mpii_256x256.yaml")
    assert mpii.data.input_size == [256, 256] and mpii.data.format == "mpii"


def test_typo_in_file_names_file_key_and_suggestion(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 0.001\n  milestons: [1, 2]\n")
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    msg = str(e.value)
    assert str(bad) in msg and "optim.milestons" in msg and "optim.milestones" in msg


def test_unknown_section_and_misplaced_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trian:\n  batch_size: 4\n")
    with pytest.raises(ConfigError, match=r"'trian'.*train"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"train\.lr.*optim\.lr"):
        load_config(None, ["train.lr=0.1"])


def test_typo_in_base_file_names_the_base(tmp_path):
    (tmp_path / "base.yaml").write_text("train:\n  batch_sise: 4\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\noptim:\n  lr: 0.01\n")
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "child.yaml")
    assert "base.yaml" in str(e.value) and "train.batch_size" in str(e.value)


def test_base_inheritance_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("optim:\n  lr: 0.01\n  epochs: 20\n  milestones: [10, 15]\n"
                                        "model:\n  kwargs: {a: 1}\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\noptim:\n  epochs: 30\nmodel:\n  kwargs: {b: 2}\n")
    cfg = load_config(tmp_path / "child.yaml", ["optim.lr=5e-4", "data.input_size=[96, 128]",
                                                "distill.terms.logit=0.5", "distill.teacher.model=simplebaseline_r50",
                                                "model.kwargs.c=[1,2]"])
    assert cfg.optim.epochs == 30 and cfg.optim.milestones == [10, 15]
    assert cfg.optim.lr == 5e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.data.input_size == [96, 128]
    assert cfg.model.kwargs == {"a": 1, "b": 2, "c": [1, 2]}
    assert cfg.distill.terms == {"logit": 0.5} and cfg.distill.teacher.model == "simplebaseline_r50"
    # a whole mapping on the command line replaces the recipe's (so `={}` clears it)
    assert load_config(tmp_path / "child.yaml", ["model.kwargs={}"]).model.kwargs == {}
    assert load_config(tmp_path / "child.yaml", ["model.kwargs={z: 3}"]).model.kwargs == {"z": 3}


@pytest.mark.parametrize("override,pattern", [
    ("optim.lr=fast", r"optim\.lr: expected a number"),
    ("optim.epochs=1.5", r"optim\.epochs: expected an integer"),
    ("data.flip=1", r"data\.flip: expected true/false"),
    ("data.input_size=192", r"data\.input_size: expected a list"),
    ("data.input_size=[a, b]", r"data\.input_size\[0\]: expected an integer"),
    ("optim=3", r"section optim must be a mapping"),
    ("optim.lr", r"expected dotted\.key=value"),
    ("optim.lr.x=1", r"optim\.lr is a float, not a section"),
])
def test_bad_values_are_rejected(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [override])


def test_every_field_has_a_meaning_comment():
    # The one-line `# meaning` after each field is the recipe documentation: keep it there.
    import inspect

    from posedistill.distill import config as distill_mod
    from posedistill.engine import config as mod

    src = inspect.getsource(mod) + inspect.getsource(distill_mod)
    for key, _, _ in describe_fields():
        name = key.rsplit(".", 1)[-1]
        lines = [ln for ln in src.splitlines() if ln.strip().startswith(f"{name}:")]
        assert lines and all("#" in ln for ln in lines), key


def test_seed002_recipe_codec_and_terms():
    """Seed 002 stage 1: eq. 1 mean, label smoothing on (official SimCC default 0.1), teacher's split 2 /
    sigma 4 (official w48_256x192_adam_lr1e-3_split2_sigma4.yaml); the built codec carries them."""
    cfg = load_config(CONFIGS[0].parent / "distill_simcc_seed002_coco_256x192.yaml")
    assert cfg.distill.aligned_reduction == "mean"
    assert (cfg.codec.simcc_split_ratio, cfg.codec.simcc_sigma, cfg.codec.simcc_label_smoothing) == (2.0, 4.0, 0.1)
    assert CodecConfig().simcc_label_smoothing == 0.0
    codec = build_codec(cfg.codec, tuple(cfg.data.input_size), 4, "simcc")
    assert isinstance(codec, SimCCCodec) and codec.label_smoothing == 0.1 and codec.sigma == (4.0, 4.0)
    plain = SimCCCodec(input_size=tuple(cfg.data.input_size), split_ratio=2.0, sigma=4.0)
    kps, vis = np.array([[50.0, 100.0]]), np.array([1.0])
    smooth, raw = codec.encode(kps, vis), plain.encode(kps, vis)
    for key, n in (("simcc_x", codec.num_bins[0]), ("simcc_y", codec.num_bins[1])):
        np.testing.assert_allclose(smooth[key], 0.9 * raw[key] + 0.1 / n, rtol=1e-5, atol=1e-7)
        assert smooth[key].min() > 0 and raw[key].min() < 1e-12
