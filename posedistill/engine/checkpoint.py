"""Training checkpoints: atomic writes, safe loads, and RNG states that `weights_only` loading accepts.

A checkpoint is a plain dict of tensors and Python primitives, so that
`torch.load(path, weights_only=True)` reads it back without running arbitrary pickled code:

    {"model": state_dict, "optimizer": ..., "scheduler": ..., "scaler": ..., "rng": rng_state(),
     "epoch": int (epochs completed), "iteration": int (optimiser steps so far), "best_metric": float, ...}

`save_checkpoint` writes to a temporary file in the destination folder, flushes and fsyncs it, then
`os.replace`s it over the destination: a process killed at any moment leaves either the previous
complete file or the new complete file, never a partial one.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Atomically write `state` to `path` (temp file in the same folder + fsync + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    # Persist the rename itself (the directory entry) where the platform allows it.
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
    return path


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by `save_checkpoint` (or any weights-only torch file).

    A missing, truncated or corrupt file raises an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError / UnpicklingError / EOFError / zip errors
        raise RuntimeError(f"checkpoint {path} could not be read (truncated or corrupt?): "
                           f"{type(e).__name__}: {e}") from None
    if not isinstance(state, dict):
        raise RuntimeError(f"checkpoint {path}: expected a dict, got {type(state).__name__}")
    return state


# --------------------------------------------------------------------------------------------------
# RNG states as weights_only-friendly values


def rng_state() -> dict:
    """Python, NumPy, torch CPU and CUDA generator states as tensors / ints / tuples."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": int(py_version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": py_gauss},
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of `rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["gauss"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
