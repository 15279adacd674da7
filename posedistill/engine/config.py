"""Typed training recipes: dataclasses with a default and a one-line meaning per field, loaded from YAML.

A recipe file is a YAML mapping whose sections mirror `Config` (data, codec, model, loss, optim, train,
eval, distill, refine). `_base_: other.yaml` (a path relative to the file, or a list of them) inherits another
recipe; the file's own keys win, nested sections merge key by key. Command-line overrides are
`dotted.key=value` strings whose value is parsed with `yaml.safe_load` (`optim.lr=5e-4`,
`data.input_size=[96,128]`, `distill.terms.logit=0.5`).

Every key is checked against the dataclasses: an unknown key is an error naming the file (or the
override), the dotted key and the closest valid keys; a value of the wrong type is an error naming the
file, the key, the expected type and the value. Fields typed `dict` (model keyword arguments,
distillation term weights) are free-form below their own name.

Constructors elsewhere never see a `Config`: `engine/build.py` turns it into explicit arguments.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from posedistill.errors import InputError
from posedistill.distill.config import DistillConfig
from posedistill.distill.terms import resolve_distill_config


@dataclass
class DataConfig:
    dataset: str = "coco"                       # keypoint set: coco | crowdpose | mpii | custom (from train_ann's category)
    keypoint_sigmas: list[float] = field(default_factory=list)  # custom set: OKS sigma per joint (needed to evaluate)
    flip_pairs: list[list[str]] = field(default_factory=list)   # custom set: [left, right] joint names (default: by name)
    keypoint_weights: list[float] = field(default_factory=list)  # custom set: loss weight per joint (default 1)
    upper_body: list[str] = field(default_factory=list)         # custom set: upper-body joints for half-body crops
    format: str = "coco"                        # annotation format: coco (COCO-style JSON, also CrowdPose) | mpii (HRNet JSON)
    train_ann: str = "data/coco/annotations/person_keypoints_train2017.json"  # training annotation file
    train_images: str = "data/coco/train2017"   # folder of the training images
    val_ann: str = "data/coco/annotations/person_keypoints_val2017.json"      # validation annotation file
    val_images: str = "data/coco/val2017"       # folder of the validation images
    val_boxes: str = "gt"                       # validation person boxes: "gt" or a detection results JSON
    val_head_boxes: str = ""                    # MPII only: mpii_gt_val.mat with official head boxes ("" = from the JSON)
    det_score_thr: float = 0.0                  # drop detected boxes scoring below this (HRNet IMAGE_THRE)
    input_size: list[int] = field(default_factory=lambda: [192, 256])  # network input (width, height)
    flip: bool = True                           # random horizontal flip during training
    scale_factor: float = 0.35                  # random scale in [1 - f, 1 + f] during training
    rotation_factor: float = 45.0               # random rotation in degrees, +-this, during training
    rotation_prob: float = 0.6                  # probability of applying a rotation
    half_body_prob: float = 0.3                 # probability of a half-body crop
    half_body_min_joints: int = 8               # visible joints needed before a half-body crop is tried
    use_joint_weights: bool = False             # multiply target_weight by the keypoint set's joint weights
    val_cache_mb: float = 64.0                  # MiB of decoded validation images cached per process (0 = off)
    max_train_instances: int = 0                # keep only the first N training instances (0 = all); for quick runs
    max_val_instances: int = 0                  # keep only the first N validation instances (0 = all)
    bottomup_scale: list[float] = field(default_factory=lambda: [0.5, 1.1])  # bottom-up training: random scale range (seed 004 / CMU-Pose)
    bottomup_min_keypoints: int = 5             # bottom-up: people with fewer labelled joints are masked, not trained on (CMU 5)
    bottomup_min_area: float = 1024.0           # bottom-up: people with a smaller area (image pixels) are masked (CMU 32 x 32)


@dataclass
class CodecConfig:
    type: str = "heatmap"                       # heatmap | simcc | coords (keypoints out: the IGP-GCN refiner) | paf (bottom-up)
    sigma: float = 2.0                          # heatmap Gaussian sigma in heatmap pixels (2 at 64x48)
    dark: bool = False                          # DARK sub-pixel decoding (heatmap only)
    udp: bool = False                           # unbiased data processing (heatmap only)
    simcc_split_ratio: float = 2.0              # SimCC bins per input pixel (k)
    simcc_sigma: float = 6.0                    # SimCC 1-D label sigma in bins
    simcc_label_smoothing: float = 0.0          # SimCC labels: (1 - s) * Gaussian + s / bins (uniform mix), s in [0, 1)
    paf_sigma: float = 7.0                      # PAF codec: confidence-map Gaussian sigma in input pixels (CMU-Pose 7)
    paf_limb_width: float = 1.0                 # PAF codec: limb half-width in output pixels (CMU-Pose 1)
    paf_peak_threshold: float = 0.1             # PAF grouping: confidence-map peaks below this are dropped (CMU 0.1)
    paf_min_mean_score: float = 0.4             # PAF grouping: people with score / parts below this are dropped (OpenPose 0.4, Osokin 0.2)


@dataclass
class ModelConfig:
    name: str = "simplebaseline_r50"            # registered model name (posedistill.models.list_models())
    kwargs: dict = field(default_factory=dict)  # extra keyword arguments for the model's factory
    checkpoint: str = ""                        # weights to start from (ImageNet backbone or a pose checkpoint); "" = random
    strict: bool = False                        # require every key of `checkpoint` to match the model


@dataclass
class LossConfig:
    use_target_weight: bool = True              # weight each joint's loss by target_weight
    loss_weight: float = 1.0                    # multiplier of the supervised loss


@dataclass
class OptimConfig:
    optimizer: str = "adam"                     # adam | adamw | sgd
    lr: float = 1e-3                            # base learning rate
    weight_decay: float = 0.0                   # weight decay
    momentum: float = 0.9                       # SGD momentum (ignored by Adam)
    epochs: int = 210                           # total training epochs
    milestones: list[int] = field(default_factory=lambda: [170, 200])  # epochs at which the LR is multiplied by gamma
    gamma: float = 0.1                          # LR decay factor at each milestone
    warmup_iters: int = 0                       # linear warm-up length in iterations (0 = none)
    warmup_ratio: float = 0.001                 # LR factor at the first warm-up iteration
    grad_clip: float = 0.0                      # clip the gradient norm to this (0 = no clipping)


@dataclass
class TrainConfig:
    out_dir: str = "runs/default"               # run directory: config.yaml, checkpoints, logs
    batch_size: int = 32                        # images per GPU / process per iteration
    workers: int = 4                            # DataLoader worker processes per process
    seed: int = 0                               # random seed (rank is added per process)
    deterministic: bool = True                  # deterministic algorithms (torch.use_deterministic_algorithms, warn only)
    device: str = "auto"                        # auto | cpu | cuda
    amp: str = "none"                           # mixed precision on CUDA: none | bf16 | fp16 (ignored on CPU)
    channels_last: bool = True                  # channels_last memory format on CUDA (ignored on CPU)
    threads: int = 0                            # torch CPU threads for the CLI run (0 = torch's default)
    eval_interval: int = 10                     # evaluate every N epochs (and after the last)
    save_interval: int = 1                      # write last.pth every N epochs (and after the last)
    keep_every: int = 0                         # also keep epoch_N.pth every N epochs (0 = only last.pth / best.pth)
    max_iters_per_epoch: int = 0                # stop each epoch after N iterations (0 = full epoch); for quick runs
    log_interval: int = 50                      # TensorBoard / text log every N iterations
    progress: bool = True                       # tqdm progress bar on rank 0 (only when stderr is a terminal)
    max_skipped_fraction: float = 0.01          # stop when more than this fraction of training images is unreadable


@dataclass
class EvalConfig:
    batch_size: int = 64                        # images per process during evaluation
    flip_test: bool = True                      # average with the horizontally flipped image's output
    scales: list[float] = field(default_factory=lambda: [1.0])  # bottom-up multi-scale test: input scales averaged (CMU-Pose: 0.5, 1, 1.5, 2 of 368)
    oks_nms_thr: float = 0.9                    # OKS-NMS threshold over predictions of one image (COCO)
    keypoint_score_thr: float = 0.2             # rescoring: mean of keypoint scores above this times box score
    soft_nms: bool = False                      # soft-OKS-NMS instead of hard OKS-NMS


@dataclass
class RefineConfig:
    student: str = ""                           # stage-1 checkpoint of the frozen SimCC student (model: simcc_igp_gcn); "" = no stage 2
    target: str = "teacher"                     # what the refiner learns: teacher (seed 002 eq. 6, the distill.teacher's pose) | gt (Table IV scheme 1)
    block_weights: list[float] = field(default_factory=lambda: [0.3, 0.5, 1.0])  # eq. 7: delta, lambda, xi of the three blocks


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)        # datasets and augmentation
    codec: CodecConfig = field(default_factory=CodecConfig)     # target encoding / prediction decoding
    model: ModelConfig = field(default_factory=ModelConfig)     # the network trained (the student when distilling)
    loss: LossConfig = field(default_factory=LossConfig)        # supervised loss
    optim: OptimConfig = field(default_factory=OptimConfig)     # optimiser and LR schedule
    train: TrainConfig = field(default_factory=TrainConfig)     # loop, logging, checkpoints, device
    eval: EvalConfig = field(default_factory=EvalConfig)        # evaluation
    distill: DistillConfig = field(default_factory=DistillConfig)  # teacher and distillation terms ("" teacher = none)
    refine: RefineConfig = field(default_factory=RefineConfig)     # seed 002 stage 2: the IGP-GCN refiner of a frozen student


class ConfigError(InputError):
    """A recipe or override that does not fit the Config dataclasses."""


# --------------------------------------------------------------------------------------------------
# schema helpers


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _leaf_paths(cls: type, prefix: str = "") -> list[str]:
    """All dotted keys of the schema, sections included."""
    out = []
    for name, tp in _hints(cls).items():
        path = f"{prefix}{name}"
        out.append(path)
        if _is_dataclass_type(tp):
            out += _leaf_paths(tp, path + ".")
    return out


def _suggest(key: str, dotted: str, valid_here: list[str]) -> str:
    """Closest valid keys: siblings first, then any dotted key with a similar last part."""
    near = difflib.get_close_matches(key, valid_here, n=3, cutoff=0.5)
    prefix = dotted.rsplit(".", 1)[0] + "." if "." in dotted else ""
    sugg = [prefix + n for n in near]
    all_paths = _leaf_paths(Config)
    by_last = {p: p.rsplit(".", 1)[-1] for p in all_paths}
    for p, last in by_last.items():
        if p not in sugg and difflib.get_close_matches(key, [last], n=1, cutoff=0.8):
            sugg.append(p)
    return ", ".join(sugg[:5]) if sugg else "none close; valid keys here: " + ", ".join(valid_here)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`; return it (ints widened to float, tuples to lists)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for alt in typing.get_args(tp):
            if alt is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(value, alt, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r} ({type(value).__name__})")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r} ({type(value).__name__})")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # YAML 1.1 reads "1e-3" (no dot) as a string; accept numeric strings for floats.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r} ({type(value).__name__})")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r} ({type(value).__name__})")
    if tp is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{where}: expected a mapping, got {value!r} ({type(value).__name__})")
    if tp is list or origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r} ({type(value).__name__})")
        args = typing.get_args(tp)
        if not args:
            return list(value)
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    raise ConfigError(f"{where}: unsupported field type {_type_name(tp)}")


def _check(raw: dict, cls: type, source: str, prefix: str = "") -> dict:
    """Validate a (partial) nested mapping against dataclass `cls`; returns it with values coerced."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: section {prefix.rstrip('.') or '(top level)'} must be a mapping, "
                          f"got {type(raw).__name__}")
    hints = _hints(cls)
    out = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in hints:
            raise ConfigError(f"{source}: unknown key {dotted!r}; did you mean: {_suggest(str(key), dotted, list(hints))}")
        tp = hints[key]
        if _is_dataclass_type(tp):
            out[key] = _check(value if value is not None else {}, tp, source, dotted + ".")
        else:
            out[key] = _coerce(value, tp, f"{source}: {dotted}")
    return out


def _merge(base: dict, over: dict) -> dict:
    """Deep merge of nested mappings; `over` wins. Free-form dict fields merge key by key too."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _build(cls: type, raw: dict) -> Any:
    hints = _hints(cls)
    kwargs = {}
    for key, value in raw.items():
        tp = hints[key]
        kwargs[key] = _build(tp, value) if _is_dataclass_type(tp) else value
    return cls(**kwargs)


# --------------------------------------------------------------------------------------------------
# loading


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """One recipe file with its `_base_` chain resolved, each file validated on its own."""
    path = path.resolve()
    if path in chain:
        raise ConfigError(f"{path}: `_base_` cycle: {' -> '.join(map(str, chain + (path,)))}")
    if not path.is_file():
        where = f" (named as `_base_` in {chain[-1]})" if chain else ""
        raise ConfigError(f"config file {path} not found{where}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    bases = raw.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: `_base_` must be a file name or a list of file names, got {bases!r}")
    merged: dict = {}
    for base in bases:
        merged = _merge(merged, _read_yaml(path.parent / base, chain + (path,)))
    return _merge(merged, _check(raw, Config, str(path)))


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], yaml-parsed value)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected dotted.key=value")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from None
    return key.split("."), value


def _override_to_nested(parts: list[str], value: Any, item: str) -> dict:
    """Nest an override as {a: {b: value}} after checking the path against the schema.

    Below a free-form dict field (model.kwargs, distill.terms) any key is accepted."""
    cls: Any = Config
    for i, part in enumerate(parts[:-1]):
        hints = _hints(cls)
        if part not in hints:
            dotted = ".".join(parts[:i + 1])
            raise ConfigError(f"override {item!r}: unknown key {dotted!r}; did you mean: "
                              f"{_suggest(part, dotted, list(hints))}")
        cls = hints[part]
        if not _is_dataclass_type(cls):
            if cls is dict or typing.get_origin(cls) is dict:
                break  # free-form mapping: nest the rest as given
            raise ConfigError(f"override {item!r}: {'.'.join(parts[:i + 1])} is a {_type_name(cls)}, "
                              f"not a section")
    nested: Any = value
    for part in reversed(parts):
        nested = {part: nested}
    return nested


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a recipe (with its `_base_` chain) and apply `key=value` overrides; None = defaults only."""
    merged = _read_yaml(Path(path)) if path is not None else {}
    for item in overrides:
        parts, value = parse_override(item)
        nested = _check(_override_to_nested(parts, value, item), Config, f"override {item!r}")
        if isinstance(value, dict) and _is_free_form(parts):
            # `model.kwargs={a: 1}` replaces the whole mapping (so `={}` clears it);
            # `model.kwargs.a=1` merges one key into it.
            checked = nested
            for part in parts:
                checked = checked[part]
            merged = _set_path(merged, parts, checked)
        else:
            merged = _merge(merged, nested)
    return _resolved(_build(Config, merged), str(path) if path is not None else "defaults")


def check_refine(cfg: RefineConfig, distill: DistillConfig) -> None:
    """The `refine:` section against itself and the teacher it may need."""
    if cfg.target not in ("teacher", "gt"):
        raise InputError(f"refine.target: expected teacher | gt, got {cfg.target!r}")
    if len(cfg.block_weights) != 3 or any(w < 0 for w in cfg.block_weights):
        raise InputError(f"refine.block_weights: expected three weights >= 0 (eq. 7), got {cfg.block_weights}")
    if cfg.student and cfg.target == "teacher" and not distill.teacher.model:
        raise InputError("refine.target is teacher but distill.teacher.model is empty: name the teacher, or "
                         "refine.target=gt")
    if cfg.student and distill.terms:
        raise InputError(f"refine.student is set (stage 2 trains the refiner alone) but distill.terms "
                         f"{sorted(distill.terms)} are too; stage-1 terms belong to the stage-1 recipe")


def _resolved(cfg: Config, source: str) -> Config:
    try:
        check_refine(cfg.refine, cfg.distill)
        stage2 = bool(cfg.refine.student) or cfg.codec.type == "coords"   # a refiner recipe: teacher, no terms
        distill = resolve_distill_config(cfg.distill, teacher_only=stage2)
        return dataclasses.replace(cfg, distill=distill)
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None


def config_from_dict(raw: dict, source: str) -> Config:
    """A Config from `config_to_dict` output (as a checkpoint stores it), checked like a recipe;
    `source` names where it came from in errors."""
    return _resolved(_build(Config, _check(raw, Config, source)), source)


def _is_free_form(parts: list[str]) -> bool:
    """True when the dotted key names a `dict` field itself (not a key inside it)."""
    cls: Any = Config
    for part in parts:
        if not _is_dataclass_type(cls):
            return False
        cls = _hints(cls).get(part)
    return cls is dict or typing.get_origin(cls) is dict


def _set_path(tree: dict, parts: list[str], value: Any) -> dict:
    out = dict(tree)
    if len(parts) == 1:
        out[parts[0]] = value
    else:
        out[parts[0]] = _set_path(out.get(parts[0], {}) if isinstance(out.get(parts[0]), dict) else {},
                                  parts[1:], value)
    return out


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config (every field, defaults included) as YAML that `load_config` reads back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None))
    tmp.replace(path)


def describe_fields(cls: type = Config) -> list[tuple[str, str, Any]]:
    """(dotted key, type, default) for every leaf field; for docs and `--help`."""
    rows = []
    default = cls()
    for f in dataclasses.fields(cls):
        tp = _hints(cls)[f.name]
        value = getattr(default, f.name)
        if _is_dataclass_type(tp):
            rows += [(f"{f.name}.{k}", t, v) for k, t, v in describe_fields(tp)]
        else:
            rows.append((f.name, _type_name(tp), value))
    return rows
