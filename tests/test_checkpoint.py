"""Checkpoints: atomic writes survive SIGKILL, corrupt files are named, RNG states round-trip."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from posedistill.engine.checkpoint import read_checkpoint, rng_state, save_checkpoint, set_rng_state


def test_roundtrip_weights_only(tmp_path):
    state = {"model": {"w": torch.randn(3, 4)}, "epoch": 3, "iteration": 12, "history": [{"epoch": 1, "loss": 0.5}],
             "rng": [rng_state()], "best_metric": float("-inf")}
    path = save_checkpoint(state, tmp_path / "sub" / "last.pth")
    back = read_checkpoint(path)
    assert torch.equal(back["model"]["w"], state["model"]["w"])
    assert back["epoch"] == 3 and back["history"] == state["history"]
    assert not [p for p in path.parent.iterdir() if p.name != "last.pth"]  # no temp file left behind


def test_rng_state_roundtrip():
    state = rng_state()
    a = (random.random(), np.random.rand(3), torch.rand(3), np.random.randn())
    set_rng_state(state)
    b = (random.random(), np.random.rand(3), torch.rand(3), np.random.randn())
    assert a[0] == b[0] and np.array_equal(a[1], b[1]) and torch.equal(a[2], b[2]) and a[3] == b[3]


def test_rng_state_survives_weights_only_file(tmp_path):
    np.random.randn()  # leave a cached Gaussian in NumPy's state
    save_checkpoint({"rng": rng_state()}, tmp_path / "r.pth")
    expected = (random.random(), np.random.randn(), torch.randn(1))
    set_rng_state(read_checkpoint(tmp_path / "r.pth")["rng"])
    got = (random.random(), np.random.randn(), torch.randn(1))
    assert expected[0] == got[0] and expected[1] == got[1] and torch.equal(expected[2], got[2])


def test_truncated_checkpoint_error_names_file(tmp_path):
    path = save_checkpoint({"model": {"w": torch.randn(100, 100)}}, tmp_path / "c.pth")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RuntimeError, match=r"c\.pth.*truncated or corrupt"):
        read_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        read_checkpoint(tmp_path / "missing.pth")


WRITER = textwrap.dedent("""
    import sys, torch
    from posedistill.engine.checkpoint import save_checkpoint
    path = sys.argv[1]
    i = 0
    while True:
        i += 1
        # ~16 MB so that a save takes long enough to be interrupted
        save_checkpoint({"step": i, "w": torch.full((4_000_000,), float(i))}, path)
        print(i, flush=True)
""")


def test_sigkill_while_saving_leaves_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "last.pth"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        # wait for two completed saves, then kill while a temp file is being written
        for _ in range(2):
            assert proc.stdout.readline().strip(), "writer exited early"
        deadline = time.time() + 20
        while time.time() < deadline and not any(p.name.startswith(".last.pth.tmp") for p in tmp_path.iterdir()):
            time.sleep(0.001)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    state = read_checkpoint(path)
    assert state["step"] >= 2
    assert torch.all(state["w"] == float(state["step"]))  # a complete, consistent save
