"""Plain supervised training: the network's output against the codec's targets."""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

from posedistill.tasks.base import OptimGroup, Task


def supervised_loss(loss: nn.Module, target_keys: Sequence[str], output: Any,
                    batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """`loss(*outputs, *targets, target_weight)`: the output tensors (one, or SimCC's x and y logits),
    then the batch's targets under the codec's `target_keys`, then `target_weight`. E.g. heatmaps:
    loss(heatmaps, batch["heatmaps"], w); SimCC: loss(x, y, batch["simcc_x"], batch["simcc_y"], w)."""
    outputs = tuple(output) if isinstance(output, (tuple, list)) else (output,)
    missing = [k for k in target_keys if k not in batch]
    if missing:
        raise KeyError(f"the batch lacks the codec's target(s) {missing} (has {sorted(batch)})")
    return loss(*outputs, *(batch[k] for k in target_keys), batch["target_weight"])


class SupervisedTask(Task):
    """loss = loss_weight * supervised_loss(model(image), codec targets)."""

    def __init__(self, model: nn.Module, loss: nn.Module, target_keys: Sequence[str], loss_weight: float = 1.0):
        super().__init__()
        self.model = model
        self.loss = loss
        self.target_keys = tuple(target_keys)
        self.loss_weight = float(loss_weight)

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.run("model", self.model)(batch["image"])
        value = supervised_loss(self.loss, self.target_keys, out, batch)
        return {"loss": self.loss_weight * value, "supervised": value.detach()}

    def optim_groups(self) -> list[OptimGroup]:
        return [OptimGroup("model", list(self.model.parameters()))]
