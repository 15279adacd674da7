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

import errno
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posedistill.errors import CheckpointError, DiskFullError
from posedistill.models.weights import safe_load


# write errors that mean "no room": no space on the device, the file size limit (RLIMIT_FSIZE), a quota
_NO_ROOM = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


class _RecordingWriter:
    """File wrapper for `torch.save`: keeps the OSError a write raised, which torch's zip writer
    otherwise turns into an opaque RuntimeError."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Atomically write `state` to `path` (temp file in the same folder + fsync + os.replace).

    No room to write it (no space left on the device, the file size limit, a quota) raises
    DiskFullError naming `path`; the previous `path`, if any, is left as it was and the temp file is
    removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    out = None
    try:
        with open(tmp, "wb") as f:
            out = _RecordingWriter(f)
            torch.save(state, out)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        err = out.error if out is not None and out.error is not None else e
        if isinstance(err, OSError) and err.errno in _NO_ROOM:
            kept = f"the previous {path} is unchanged" if path.exists() else f"{path} was not written"
            raise DiskFullError(f"disk full while writing checkpoint {path} ({os.strerror(err.errno)}: no space "
                                f"left on the device, or the file size limit reached); {kept}",
                                hint="free some space (or raise the limit) and run again") from None
        raise
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

    A missing, truncated or corrupt file raises an error naming the file; a file carrying pickled code
    is refused and says so."""
    state = safe_load(path, map_location)
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path}: expected a dict, got {type(state).__name__}")
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
