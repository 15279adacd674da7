"""Small helpers on model outputs, which are a tensor, a tuple of tensors (SimCC) or a dict (features)."""
from __future__ import annotations

from typing import Any

import torch


def to_float(out: Any) -> Any:
    """Every tensor inside `out` (nested tuples / lists / dicts) as float32; other values unchanged."""
    if isinstance(out, torch.Tensor):
        return out.float()
    if isinstance(out, (tuple, list)):
        return type(out)(to_float(o) for o in out)
    if isinstance(out, dict):
        return {k: to_float(v) for k, v in out.items()}
    return out


def amp_dtype(amp: str, device: torch.device, key: str = "train.amp") -> torch.dtype | None:
    """The autocast dtype of a precision setting: bf16 / fp16 on CUDA only; None means float32.
    `key` names the setting in the error for a value other than none | bf16 | fp16."""
    if amp not in ("none", "bf16", "fp16"):
        raise ValueError(f"{key}: expected none | bf16 | fp16, got {amp!r}")
    if amp == "none" or device.type != "cuda":
        return None
    return torch.bfloat16 if amp == "bf16" else torch.float16
