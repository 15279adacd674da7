"""Replay the fuzz seed corpus and every regression input through every fuzz target (fast).

Each input must keep the contract of fuzz_targets.py: a damaged JPEG decodes or raises
ValueError (the C extension) / ImageReadError (data/topdown.py), a malformed annotation or
detection file loads into well-formed instances or raises a one-line AnnotationError naming the
file. The JPEG inputs run in a subprocess, so that a crash of the C decoder fails this test (naming
the input) instead of killing pytest; the wrappers (which call the same C code) then run in-process. The fuzzers themselves (run.py) are not run here; see
docs/reliability.md, "Fuzzing".
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import fuzz_targets

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("target", ["coco", "detections", "mpii"])
def test_annotation_inputs_keep_the_contract(target):
    files = fuzz_targets.input_files(target)
    assert files, f"no inputs for {target}"
    assert fuzz_targets.replay(target, files) == []


def test_jpeg_inputs_keep_the_contract():
    """The C function alone in a subprocess (crash isolation, no torch import), then the wrappers."""
    files = fuzz_targets.input_files("jpeg")
    assert len(files) >= 10
    if fuzz_targets.topdown._jpeg_band is not None:
        proc = subprocess.run([sys.executable, str(HERE / "contract.py"), *map(str, files)], capture_output=True,
                              text=True, timeout=120, cwd=HERE)
        ran = [line[4:] for line in proc.stdout.splitlines() if line.startswith("RUN ")]
        assert proc.returncode == 0, (f"the C decoder died (exit {proc.returncode}) on {ran[-1] if ran else '?'}:\n"
                                      f"{proc.stderr[-3000:]}")
        assert len(ran) == len(files)
        assert [line for line in proc.stdout.splitlines() if line.startswith("VIOLATION ")] == []
    problems = []
    with tempfile.TemporaryDirectory() as workdir:
        for path in files:
            try:
                fuzz_targets.check_jpeg_wrapper(path.read_bytes(), workdir)
            except fuzz_targets.ContractViolation as e:
                problems.append(f"{path.name}: {e}")
    assert problems == []


def test_the_corpus_stays_small():
    total = sum(p.stat().st_size for d in ("corpus", "regressions") for p in (HERE / d).rglob("*") if p.is_file())
    assert total < 300_000, f"fuzz corpus + regressions hold {total} bytes; keep them small"


def test_detection_boxes_beyond_float32_are_refused():
    """Found by the fuzzer: bbox numbers like 1e39 became inf float32 boxes; now a one-line error."""
    data = (HERE / "regressions" / "detections" / "known-bbox-float32-overflow.json").read_bytes()
    with tempfile.TemporaryDirectory() as workdir:
        fuzz_targets.check_detections(data, workdir, known=())
