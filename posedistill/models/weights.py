"""Loading weights from files, with errors that name every key that does not fit.

`load_weights(model, path)` accepts a raw state dict or a dict wrapping one under "state_dict"
or "model" (official HRNet/SimpleBaseline files, MMPose files, our own checkpoints), strips a
wrapper prefix such as "module." (DataParallel / DDP) or "backbone." only when stripping it is what
makes the keys match, and otherwise fails with the file name and the missing / unexpected /
mis-shaped keys.

`WeightRecord` describes a weight file as data (teacher and pretrained weights are user files,
never downloaded): which model it is for, at which input size and joint count, what it scored.
"""
from __future__ import annotations

import json
import os
import pickle
import re
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

import torch
import torch.nn as nn

from posedistill.errors import CheckpointError, MissingFileError
from posedistill.models.registry import create_model_at

# Prefixes that wrappers put in front of every key; tried only when the keys do not match as they are.
WRAPPER_PREFIXES = ("module.", "model.", "backbone.", "student.", "teacher.")


class CheckpointMismatchError(CheckpointError, ValueError):
    """A checkpoint does not fit a model; the message counts the offending keys, `details` lists them."""


def extract_state_dict(obj: Any, path: str) -> dict[str, torch.Tensor]:
    """The name -> tensor dict of a loaded file: a bare state dict, or the one under 'state_dict'
    (official / MMPose files) or 'model' (posedistill checkpoints); CheckpointMismatchError otherwise."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        keys = ", ".join(map(str, list(obj)[:10]))
        raise CheckpointMismatchError(
            f"{path}: no state dict found; expected a name -> tensor dict or one under 'state_dict' or "
            f"'model' (top-level keys: {keys})")
    raise CheckpointMismatchError(f"{path}: expected a dict, got {type(obj).__name__}")


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def _ignorable(key: str) -> bool:
    # Old (pre-0.4.1) checkpoints lack BatchNorm's step counter; BN fills it in on load.
    return key.endswith("num_batches_tracked")


def _with_child_prefix(state: dict[str, torch.Tensor], model_keys: set[str], child: str) -> dict[str, torch.Tensor]:
    """Put `child.` in front of the keys that only match under it (an official SimCC checkpoint
    has the HRNet keys top-level where SimCCHead keeps them under `base.`)."""
    p = child + "."
    return {(p + k if k not in model_keys and p + k in model_keys else k): v for k, v in state.items()}


def match_state_dict(state: dict[str, torch.Tensor], model_keys: set[str]) -> dict[str, torch.Tensor]:
    """Return `state` with at most two wrapper prefixes removed (and, if that is what matches,
    one of the model's own top-level child names added), choosing the version whose keys overlap
    the model's the most; the keys as they are win ties, so nothing is renamed that already fits
    (e.g. a model with a real `backbone.` submodule keeps it)."""
    def score(s: dict[str, torch.Tensor]) -> int:
        return len(model_keys & set(s))

    best, best_score = state, score(state)
    if best_score == len(model_keys):
        return best
    stripped = [state]
    frontier = [state]
    for _ in range(2):  # e.g. "module.backbone." from a DDP-wrapped MMPose model
        frontier = [_strip(cand, prefix) for cand in frontier for prefix in WRAPPER_PREFIXES
                    if any(k.startswith(prefix) for k in cand)]
        stripped += frontier
    children = sorted({k.split(".", 1)[0] for k in model_keys if "." in k})
    candidates = stripped + [_with_child_prefix(c, model_keys, child) for c in stripped for child in children]
    for cand in candidates[1:]:
        sc = score(cand)
        if sc > best_score:
            best, best_score = cand, sc
    return best


def describe_mismatch(state: Mapping[str, torch.Tensor], model: nn.Module, strict: bool = True
                      ) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, shape mismatches) of `state` against `model`; with strict=False only
    shape mismatches count."""
    own = model.state_dict()
    shapes = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in own.keys() & state.keys() if tuple(state[k].shape) != tuple(own[k].shape))
    if not strict:
        return [], [], shapes
    missing = sorted(k for k in own.keys() - state.keys() if not _ignorable(k))
    unexpected = sorted(state.keys() - own.keys())
    return missing, unexpected, shapes


def _format_keys(title: str, keys: list[str], limit: int = 40) -> str:
    shown = ", ".join(keys[:limit])
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return f"{title} ({len(keys)}): {shown}{more}"


def _refused(path: str, error: Exception) -> CheckpointError | None:
    """The error for a file `weights_only` loading refused because unpickling it would import or call
    Python objects (code can run that way); None for other failures."""
    text = str(error)
    if not (isinstance(error, pickle.UnpicklingError) and "Weights only load failed" in text):
        return None
    found = re.search(r"Unsupported (?:global|operand)[^\n]*?(GLOBAL\s+[\w.]+|\d+)", text)
    what = f" ({found.group(1)})" if found else ""
    return CheckpointError(f"checkpoint {path} was refused: unpickling it would import or call Python objects"
                           f"{what}, and posedistill loads only tensors and plain values (torch.load "
                           f"weights_only=True), so code in a file cannot run",
                           hint="if you trust the file, load it yourself with weights_only=False and re-save "
                                "its state dict: torch.save(state_dict, 'clean.pth')")


def safe_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load(path, weights_only=True)` with errors that name the file: missing, refused (pickled
    code), or truncated / corrupt."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError / UnpicklingError / EOFError / zip errors
        refused = _refused(path, e)
        if refused is not None:
            raise refused from None
        raise CheckpointError(f"checkpoint {path} could not be read (truncated or corrupt?): "
                              f"{type(e).__name__}: {' '.join(str(e).split())[:300]}") from None


def load_weights(model: nn.Module, path: str | os.PathLike, strict: bool = True,
                 map_location: str | torch.device = "cpu") -> dict[str, list[str]]:
    """Load weights from `path` into `model` (`safe_load`: torch.load with weights_only=True).

    Raises CheckpointMismatchError naming the file with the numbers of missing / unexpected keys and
    shape mismatches and the first of each (every key in its `details`, which `--debug` prints); with
    strict=False only shape mismatches are errors. Returns {"missing": [...], "unexpected": [...]} as
    left by a non-strict load."""
    path = os.fspath(path)
    return load_state(model, safe_load(path, map_location), path, strict)


def load_state(model: nn.Module, obj: Any, path: str, strict: bool = True) -> dict[str, list[str]]:
    """`load_weights` for a file already read with `safe_load` (`path` names it in errors), so a caller
    that also needs the file's other entries (a model card) reads it once."""
    state = match_state_dict(extract_state_dict(obj, path), set(model.state_dict()))
    missing, unexpected, shapes = describe_mismatch(state, model, strict)
    if missing or unexpected or shapes:
        counts = [f"{len(v)} {what} (first: {v[0]})" for what, v in
                  (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)) if v]
        details = [_format_keys(what, v, limit=10_000) for what, v in
                   (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)) if v]
        error = CheckpointMismatchError(f"{path}: checkpoint does not fit {type(model).__name__}: " + "; ".join(counts),
                                        hint="is it the checkpoint of this recipe's model? `--debug` lists every key")
        error.details = "\n".join(details)
        raise error
    result = model.load_state_dict(state, strict=False)
    return {"missing": sorted(k for k in result.missing_keys if not _ignorable(k)),
            "unexpected": sorted(result.unexpected_keys)}


@dataclass
class WeightRecord:
    """One weight file described as data, e.g. in `weights.yaml`:

    ```yaml
    file: weights/pose_resnet_50_256x192.pth
    model: simplebaseline_r50
    input_size: [192, 256]      # (width, height)
    num_joints: 17
    metrics: {coco_val_ap: 0.704}
    source: official SimpleBaseline release (Xiao et al. 2018)
    ```
    A relative `file` is resolved against the record file's folder."""

    file: str
    model: str
    input_size: tuple[int, int]
    num_joints: int = 17
    metrics: dict[str, float] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        size = tuple(int(v) for v in self.input_size)
        if len(size) != 2:
            raise ValueError(f"WeightRecord input_size must be (width, height), got {self.input_size!r}")
        self.input_size = size  # type: ignore[assignment]
        self.num_joints = int(self.num_joints)
        self.metrics = {str(k): float(v) for k, v in dict(self.metrics or {}).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "weight record") -> "WeightRecord":
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}; valid fields: {', '.join(names)}")
        required = [f.name for f in fields(cls) if f.name in ("file", "model", "input_size")]
        absent = [n for n in required if n not in data]
        if absent:
            raise ValueError(f"{where}: missing required field(s) {', '.join(absent)}")
        return cls(**dict(data))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "WeightRecord":
        """Read a record from a .yaml/.yml or .json file."""
        path = os.fspath(path)
        with open(path, encoding="utf-8") as f:
            if path.endswith((".yaml", ".yml")):
                import yaml
                data = yaml.safe_load(f)
            elif path.endswith(".json"):
                data = json.load(f)
            else:
                raise ValueError(f"{path}: weight record must be .yaml, .yml or .json")
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: expected a mapping of fields, got {type(data).__name__}")
        record = cls.from_dict(data, where=path)
        if not os.path.isabs(record.file):
            record.file = os.path.join(os.path.dirname(os.path.abspath(path)), record.file)
        return record

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "model": self.model, "input_size": list(self.input_size),
                "num_joints": self.num_joints, "metrics": dict(self.metrics), "source": self.source}

    def build(self, strict: bool = True) -> nn.Module:
        """Create the registered model and load the file into it."""
        # SimCC heads depend on the input size; other factories are not given it
        model = create_model_at(self.model, {"num_joints": self.num_joints}, tuple(self.input_size))
        load_weights(model, self.file, strict=strict)
        return model
