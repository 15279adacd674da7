"""The `distill:` section of a recipe. Owned by the distillation package; the engine's Config embeds it.

An empty `teacher.model` means plain supervised training."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TeacherConfig:
    model: str = ""                                     # registered model name of the teacher; "" = no teacher
    model_kwargs: dict = field(default_factory=dict)    # extra keyword arguments for the teacher's factory
    checkpoint: str = ""                                # local weights file of the teacher (official formats accepted)


@dataclass
class DistillConfig:
    teacher: TeacherConfig = field(default_factory=TeacherConfig)   # the frozen teacher
    terms: dict = field(default_factory=dict)           # distillation term name -> weight, e.g. {"logit": 0.5}
