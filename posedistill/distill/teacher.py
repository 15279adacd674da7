"""The frozen teacher: any model of the zoo plus a weights file.

`load_teacher` builds the registered model, loads the checkpoint (our own `best.pth` / `last.pth`,
or an official HRNet / SimpleBaseline / SimCC / MMPose release: `models.weights.load_checkpoint`
handles the layouts and names every key that does not fit), and wraps it in `FrozenTeacher`:
eval mode forever (BN statistics and dropout fixed, `train()` is a no-op), no parameter requires
grad, forward under `torch.no_grad()`, and on CUDA under bf16 / fp16 autocast (outputs come back
as float32). On a CPU it runs in float32.
"""
from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn as nn


def _to_float(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.float()
    if isinstance(out, (tuple, list)):
        return type(out)(_to_float(o) for o in out)
    if isinstance(out, dict):
        return {k: _to_float(v) for k, v in out.items()}
    return out


class FrozenTeacher(nn.Module):
    """Wraps a trained model; see the module docstring. `amp`: none | bf16 | fp16 (CUDA only)."""

    def __init__(self, model: nn.Module, amp: str = "bf16"):
        super().__init__()
        if amp not in ("none", "bf16", "fp16"):
            raise ValueError(f"teacher amp: expected none | bf16 | fp16, got {amp!r}")
        self.model = model
        self.amp = amp
        self.model.requires_grad_(False)
        self.eval()

    @property
    def head_type(self) -> str:
        return getattr(self.model, "head_type", "heatmap")

    @property
    def output_stride(self) -> int:
        return getattr(self.model, "output_stride", 4)

    def train(self, mode: bool = True) -> "FrozenTeacher":
        # The task's .train() must not switch the teacher's BN to batch statistics.
        return super().train(False)

    def _dtype(self, device: torch.device) -> torch.dtype | None:
        if device.type != "cuda" or self.amp == "none":
            return None
        return torch.bfloat16 if self.amp == "bf16" else torch.float16

    @torch.no_grad()
    def forward(self, x: torch.Tensor, return_features: bool = False):
        dtype = self._dtype(x.device)
        if dtype is None:
            # autocast off even if the caller's loop enabled it: the teacher's precision is its own.
            with torch.autocast(device_type=x.device.type, enabled=False):
                return _to_float(self.model(x.float(), return_features=return_features)
                                 if return_features else self.model(x.float()))
        with torch.autocast(device_type="cuda", dtype=dtype):
            out = self.model(x, return_features=return_features) if return_features else self.model(x)
        return _to_float(out)


def build_teacher_model(name: str, num_joints: int, model_kwargs: dict | None = None,
                        input_size: tuple[int, int] | None = None, split_ratio: float | None = None) -> nn.Module:
    """The registered model `name`; SimCC factories get `input_size` / `split_ratio` unless the
    kwargs set them (the same rule as the engine's build_model for students)."""
    from posedistill.models import MODELS, create_model

    kwargs = dict(model_kwargs or {})
    kwargs.setdefault("num_joints", num_joints)
    params = inspect.signature(MODELS[name]).parameters if name in MODELS else {}
    if input_size is not None and "input_size" in params:
        kwargs.setdefault("input_size", tuple(input_size))
    if split_ratio is not None and "split_ratio" in params:
        kwargs.setdefault("split_ratio", split_ratio)
    try:
        return create_model(name, **kwargs)
    except TypeError as e:
        raise TypeError(f"distill.teacher.model {name!r} rejected distill.teacher.model_kwargs {model_kwargs}: {e}") from None


def load_teacher(teacher_cfg, num_joints: int, device: torch.device | str = "cpu", *, amp: str = "bf16",
                 input_size: tuple[int, int] | None = None, split_ratio: float | None = None,
                 require_checkpoint: bool = True) -> FrozenTeacher:
    """`teacher_cfg` (distill.config.TeacherConfig: model, model_kwargs, checkpoint) -> FrozenTeacher
    on `device`. A teacher without weights is an error unless `require_checkpoint=False`."""
    from posedistill.models.weights import load_checkpoint

    if not teacher_cfg.model:
        raise ValueError("distill.teacher.model is empty: name a registered model for the teacher")
    model = build_teacher_model(teacher_cfg.model, num_joints, teacher_cfg.model_kwargs, input_size, split_ratio)
    if teacher_cfg.checkpoint:
        load_checkpoint(model, teacher_cfg.checkpoint, strict=True)
    elif require_checkpoint:
        raise ValueError(f"distill.teacher.checkpoint is empty: a trained {teacher_cfg.model} weights file is "
                         f"needed (our best.pth or an official release)")
    return FrozenTeacher(model, amp=amp).to(device)
