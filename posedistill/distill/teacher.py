"""The frozen teacher: any model of the zoo plus a weights file.

`engine/build.py` (`load_teacher`) builds the registered model, loads the checkpoint (our own
`best.pth` / `last.pth`, or an official HRNet / SimpleBaseline / SimCC / MMPose release:
`models.weights.load_weights` handles the layouts and names every key that does not fit), and
wraps it in `FrozenTeacher`:
eval mode forever (BN statistics and dropout fixed, `train()` is a no-op), no parameter requires
grad, forward under `torch.no_grad()`, and on CUDA under bf16 / fp16 autocast (outputs come back
as float32). On a CPU it runs in float32.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from posedistill.tensors import amp_dtype, to_float


class FrozenTeacher(nn.Module):
    """Wraps a trained model; see the module docstring. `amp`: none | bf16 | fp16 (CUDA only)."""

    def __init__(self, model: nn.Module, amp: str = "bf16"):
        super().__init__()
        amp_dtype(amp, torch.device("cpu"), "distill.teacher.amp")     # rejects an unknown setting by name
        self.model = model
        self.amp = amp
        self.model.requires_grad_(False)
        self.eval()

    @property
    def head_type(self) -> str:
        return self.model.head_type

    @property
    def output_stride(self) -> int:
        return self.model.output_stride

    def train(self, mode: bool = True) -> "FrozenTeacher":
        # The task's .train() must not switch the teacher's BN to batch statistics.
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, return_features: bool = False):
        dtype = amp_dtype(self.amp, x.device, "distill.teacher.amp")
        if dtype is None:
            # autocast off even if the caller's loop enabled it: the teacher's precision is its own.
            with torch.autocast(device_type=x.device.type, enabled=False):
                return to_float(self.model(x.float(), return_features=return_features)
                                if return_features else self.model(x.float()))
        with torch.autocast(device_type="cuda", dtype=dtype):
            out = self.model(x, return_features=return_features) if return_features else self.model(x)
        return to_float(out)
