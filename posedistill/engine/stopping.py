"""Stopping a training run well: SIGINT / SIGTERM become a request the loop honours at the next
iteration boundary (where a resumable checkpoint can be written), and the failures that end a run
without a bug in it (a DataLoader worker killed, another process of a distributed run gone) are
recognised so that `engine/loop.py` can name them and the checkpoint to resume from.

    with StopSignals() as stop:   # installs the handlers in the main thread, restores them on exit
        ...
        if stop.requested: ...    # a signal arrived; stop.name / stop.exit_code say which

A repeat of the signal within `repeat_s` seconds is the same request delivered twice (Ctrl-C reaches
both torchrun and its workers, and torchrun forwards it); a later repeat stops at once, without saving.
DataLoader worker processes forked meanwhile ignore both signals (torch's own SIGTERM handler in its
workers may still end them): the main process ends them, and once a stop is requested their deaths are
no longer raised asynchronously (see `_handle`).
"""
from __future__ import annotations

import os
import signal
import threading
import time

from posedistill.errors import Interrupted

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Context manager turning SIGINT / SIGTERM into a flag (see the module docstring)."""

    def __init__(self, repeat_s: float = 1.0):
        self.signum: int | None = None
        self.repeat_s = float(repeat_s)
        self._first = 0.0
        self._pid = os.getpid()
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def exit_code(self) -> int:
        """128 + the signal number: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + int(self.signum or 0)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # signal.signal works there only
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if os.getpid() != self._pid:
            # A forked DataLoader worker inherited the handler (Ctrl-C reaches the whole process group,
            # Slurm's scancel every process of the job): it carries on and the main process, stopping at
            # its next iteration boundary, shuts it down. Dying here would read as a failed worker.
            return
        if self.signum is None:
            self.signum, self._first = signum, time.monotonic()
            if hasattr(signal, "SIGCHLD") and signal.SIGCHLD not in self._previous:
                # DataLoader workers that die of the same signal (torch's worker SIGTERM handler, a process
                # group signal) are expected now: torch's SIGCHLD handler would raise their death at any
                # point of this process, the checkpoint save included. `next(loader)` still notices.
                self._previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            return
        if time.monotonic() - self._first < self.repeat_s:
            return
        self.__exit__()
        raise Interrupted(f"{signal.Signals(signum).name} received again: stopped at once, without saving; "
                          f"last.pth (if any) is the last checkpoint written", exit_code=128 + signum)


# What receiving a batch raises when its worker dies in the middle of handing it over: the batch's
# shared-memory file descriptor travels over a connection the dead worker closed (seen when SIGTERM
# reaches the whole process group, as Slurm's scancel sends it).
HANDOVER_ERRORS = (EOFError, ConnectionError)


def is_worker_failure(e: BaseException) -> bool:
    """The RuntimeError a DataLoader raises when one of its worker processes died (killed by a signal,
    e.g. the kernel's out-of-memory killer, or exited): "DataLoader worker (pid(s) N) ...", or the
    EOFError / ConnectionError of a batch whose worker died while handing it over."""
    return (isinstance(e, RuntimeError) and "DataLoader worker (pid" in str(e)) or isinstance(e, HANDOVER_ERRORS)


class StopTraining(Exception):
    """Raised by `train_one_epoch` at an iteration boundary: the model, optimisers and RNG are those after
    `done` of the epoch's `total` batches (`iteration` optimiser steps in all, `sums` the epoch's loss sums
    so far). `signum` is the signal that asked for it, agreed by every process (0: a DataLoader worker of
    this process died while the next batch was awaited: `reason`, and the other processes of a
    distributed run are not at this boundary). Not shown to users: `engine/loop.py` turns it into
    Interrupted or TrainingStopped."""

    def __init__(self, reason: str, signum: int, done: int, total: int, iteration: int, sums: dict[str, float]):
        super().__init__(reason)
        self.reason, self.signum, self.done, self.total = reason, int(signum), int(done), int(total)
        self.iteration, self.sums = int(iteration), dict(sums)
