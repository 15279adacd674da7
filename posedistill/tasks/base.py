"""The `Task` base class: the only interface between the training loop and what it trains.

The loop (`engine/loop.py`) calls, and calls nothing else:

    task.prepare_distributed(wrap)   once, in multi-process runs: wrap each trainable module in DDP
    task.optim_groups()              once: the parameter groups, one optimiser each
    task.set_epoch(epoch)            at the start of every epoch (0-based)
    task.scale_report(batch)         once, on the first batch of a fresh run: each distillation term's size
                                     against the supervised loss (logged; see docs/loss_scales.md)
    task(batch)                      every step -> {"loss": what is backpropagated, "<part>": detached value, ...}
    task.after_step()                after every optimiser step
    task.extra_state() / task.load_extra_state(state)   checkpoints: state besides the network and optimisers

Every hook but `forward` and `optim_groups` has a no-op default, so a task overrides only what it uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn


@dataclass
class OptimGroup:
    """Parameters stepped by one optimiser. `optimizer` empty = the recipe's optimiser (optim section);
    otherwise the group's own: "adam" with its `lr` and `betas` (e.g. the adversarial discriminator)."""
    name: str
    params: list[nn.Parameter]
    optimizer: str = ""
    lr: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class ScaleRow:
    """One weighted loss term against the supervised loss on one batch (`Task.scale_report`)."""
    name: str
    weight: float
    value_ratio: float      # weighted term value / supervised loss
    grad_ratio: float       # ||grad of the weighted term|| / ||grad of the supervised loss||, student parameters

    def dominates(self, factor: float = 10.0) -> bool:
        return self.value_ratio > factor or self.grad_ratio > factor


class Task(nn.Module):
    """See the module docstring. Subclasses implement `forward` and `optim_groups`."""

    def __init__(self) -> None:
        super().__init__()
        # Trainable modules as the forward pass calls them: their DDP wrappers after
        # prepare_distributed, else absent (the bare module is called). A plain dict, so the wrappers
        # are not registered twice as submodules.
        self._wrapped: dict[str, nn.Module] = {}

    def run(self, name: str, module: nn.Module) -> nn.Module:
        """The module to call for the trainable part `name` (its DDP wrapper when there is one)."""
        return self._wrapped.get(name, module)

    def trainable_modules(self) -> dict[str, nn.Module]:
        """name -> module with trainable parameters, each wrapped once by `prepare_distributed`."""
        raise NotImplementedError

    def prepare_distributed(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Multi-process runs: `wrap` (engine/dist.py) each trainable module once, so every rank averages
        its gradients."""
        self._wrapped = {name: wrap(m) for name, m in self.trainable_modules().items()}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def optim_groups(self) -> list[OptimGroup]:
        raise NotImplementedError

    def scale_report(self, batch: dict[str, torch.Tensor]) -> list[ScaleRow]:
        """Sizes of the weighted terms against the supervised loss on `batch`, with no side effect on
        training; a task without such terms has none."""
        return []

    def set_epoch(self, epoch: int) -> None:
        """Start of epoch `epoch` (0-based)."""

    def after_step(self) -> None:
        """After every optimiser step."""

    def extra_state(self) -> dict:
        """What a checkpoint keeps besides the network and the optimisers (e.g. adapter weights)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Inverse of `extra_state`."""
        if state:
            raise KeyError(f"{type(self).__name__} keeps no extra state, but the checkpoint has {sorted(state)}")
