"""Distributed data parallel helpers for runs started by `torchrun`; the only module that imports
`torch.distributed`.

`torchrun --nproc_per_node N -m posedistill.cli train CONFIG` sets RANK / WORLD_SIZE / LOCAL_RANK;
`init_distributed()` reads them and joins the process group (NCCL on GPUs, gloo on CPU). Without
them everything below degrades to a single process: rank 0 of 1, barriers and gathers are no-ops.

Every collective gives up after POSEDISTILL_DDP_TIMEOUT_S seconds (default 1800): a rank whose peer
hangs or vanished without closing its connections fails with a DistBackendError instead of waiting
forever. It must exceed the longest legitimate wait at a barrier (rank 0 building a teacher-output
cache or scoring the validation set while the others wait).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0                 # global rank of this process
    world_size: int = 1           # number of processes
    local_rank: int = 0           # rank on this machine (selects the GPU)
    device: torch.device = torch.device("cpu")  # device this process computes on

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r}: expected an integer") from None


DEFAULT_TIMEOUT_S = 1800.0


def collective_timeout() -> timedelta:
    """POSEDISTILL_DDP_TIMEOUT_S (seconds, > 0; default 1800) as the process group's timeout."""
    value = os.environ.get("POSEDISTILL_DDP_TIMEOUT_S", "")
    try:
        seconds = float(value) if value else DEFAULT_TIMEOUT_S
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"environment variable POSEDISTILL_DDP_TIMEOUT_S={value!r}: expected seconds > 0")
    return timedelta(seconds=seconds)


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group if one is described by the environment.

    device: "auto" (CUDA when available), "cpu" or "cuda". On CUDA each process uses GPU LOCAL_RANK."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"train.device: expected auto | cpu | cuda, got {device!r}")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but torch.cuda.is_available() is False")
    rank, world, local = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0)
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world,
                                timeout=collective_timeout(), **({"device_id": dev} if use_cuda else {}))
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (a one-element list without a process group)."""
    if get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """`obj` from rank `src` on every rank."""
    if get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_max(value: int, device: torch.device) -> int:
    """The largest of the ranks' `value`s, on every rank. A collective: every rank must call it."""
    if get_world_size() == 1:
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def is_collective_failure(e: BaseException) -> bool:
    """A collective failed: a peer process died or closed its connection, or the timeout passed. NCCL and
    the store raise DistError; gloo a plain RuntimeError from its transport ("[.../gloo/transport/tcp/
    pair.cc:537] Read error ...: Connection reset by peer", "... Timed out waiting ...")."""
    if dist.is_available() and isinstance(e, dist.DistError):
        return True
    return isinstance(e, RuntimeError) and "gloo/" in str(e)


def all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Mean of per-rank scalars (e.g. epoch losses) across ranks."""
    if get_world_size() == 1 or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= get_world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def wrap_ddp(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The one place trainable modules get wrapped for multi-process training (`Task.prepare_distributed`
    receives this function): gradients are averaged across ranks during backward."""
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
