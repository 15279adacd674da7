"""The model table: one flat name -> factory dict.

Each family file decorates its plain factories with `@register_model`; `create_model(name, **kw)`
calls the factory with explicit keyword arguments. Registering a name twice is an error, so two
files can never silently shadow each other."""
from __future__ import annotations

import inspect
from typing import Callable

import torch.nn as nn

from posedistill.errors import UnknownNameError

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Add `fn` to MODELS under its function name."""
    name = fn.__name__
    if name in MODELS:
        raise ValueError(f"model {name!r} is registered twice ({MODELS[name].__module__} and {fn.__module__})")
    MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    return sorted(MODELS)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; an unknown name lists the registered ones."""
    if name not in MODELS:
        raise UnknownNameError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    return MODELS[name](**kwargs)


def create_model_at(name: str, kwargs: dict, input_size: tuple[int, int] | None = None,
                    split_ratio: float | None = None, skeleton: list | None = None) -> nn.Module:
    """`create_model(name, **kwargs)`, also handing `input_size` (width, height), `split_ratio` and the
    keypoint set's `skeleton` to the factories that take them (SimCC heads; the IGP-GCN refiner's graph)
    unless `kwargs` sets them; other factories never see them."""
    kwargs = dict(kwargs)
    params = inspect.signature(MODELS[name]).parameters if name in MODELS else {}
    for key, value in (("input_size", input_size), ("split_ratio", split_ratio), ("skeleton", skeleton)):
        if value is not None and key in params:
            kwargs.setdefault(key, tuple(value) if key == "input_size" else value)
    return create_model(name, **kwargs)
