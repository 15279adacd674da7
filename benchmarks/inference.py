"""Inference images/s: eager PyTorch (`TorchBackend`) against ONNX Runtime (`OnnxBackend`) on the same
exported model, measured side by side in one run, for the demo student (ELPN-V1) and teacher (ELPN-V2).
Targets (issue "predict / export / serve"): ONNX Runtime >= 1.5x eager for the students, and the
student >= 3x the teacher.

    .venv/bin/python benchmarks/inference.py                             # demo models, 64x96, batch 1 and 8
    .venv/bin/python benchmarks/inference.py --models simcc_r18 hrnet_w32 --input 192x256 --batches 1
    .venv/bin/python benchmarks/inference.py --ort-variants basic parallel nospin   # ORT session options
    .venv/bin/python benchmarks/inference.py --checkpoint runs/demo/student/best.pth  # + predict on a video

Random weights (speed does not depend on them). Input: the demo recipes' data.input_size [64, 96]
(width, height; configs/demo_base.yaml). Every backend is timed in interleaved rounds, in a rotated
order so that none always runs first, and the median time per batch is reported; the first model
given is the student, each other one a teacher it is compared with. The network alone is timed:
crops, normalisation and decoding are the same for both backends.

On a machine shared with other busy processes, compare at `--threads 1` too: a descheduled OpenMP
thread stalls every op of torch's eager run at its barrier (measured here, ELPN-V1 batch 1 with two
niced training / fuzzing processes on the 2 cores: 63 ms at 1 thread, 490 ms at 2; 114 ms at 2 with
OMP_WAIT_POLICY=PASSIVE), which inflates the ORT / eager ratio.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from posedistill.commands.export import main as main_export  # noqa: E402
from posedistill.commands.predict import main as main_predict  # noqa: E402
from posedistill.data.synthetic import generate_video  # noqa: E402
from posedistill.inference.backends import OnnxBackend, TorchBackend  # noqa: E402
from posedistill.inference.export import export_onnx  # noqa: E402
from posedistill.models import create_model_at, list_models  # noqa: E402
from posedistill.tools.profile import count_params  # noqa: E402


def _session_options(variant: str) -> ort.SessionOptions:
    """ONNX Runtime session options to try against the defaults (graph optimisation ENABLE_ALL,
    sequential execution, spinning intra-op threads)."""
    o = ort.SessionOptions()
    if variant == "basic":
        o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    elif variant == "extended":
        o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    elif variant == "parallel":
        o.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    elif variant == "nospin":   # threads sleep between ops instead of busy-waiting
        o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    elif variant != "default":
        raise ValueError(f"unknown ORT variant {variant!r}")
    return o


ORT_VARIANTS = ("default", "basic", "extended", "parallel", "nospin")


def _time_backends(backends: dict, images: np.ndarray, rounds: int, iters: int) -> dict[str, float]:
    """Median seconds per call of each backend on `images`, interleaved over `rounds`."""
    for run in backends.values():       # warm-up: first-call allocations, ORT arena, oneDNN kernels
        run(images)
    times: dict[str, list[float]] = {name: [] for name in backends}
    names = list(backends)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            for _ in range(iters):
                backends[name](images)
            times[name].append((time.perf_counter() - t0) / iters)
    return {name: statistics.median(v) for name, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["elpn_v1", "elpn_v2"],
                   help="first = student, the others teachers (default: the demo's elpn_v1 elpn_v2)")
    p.add_argument("--input", default="64x96", help="WIDTHxHEIGHT (default 64x96, the demo recipes)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, default=0, help="torch and ORT intra-op threads (0: all cores)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=5, help="calls per backend per round")
    p.add_argument("--ort-variants", nargs="*", default=[], choices=ORT_VARIANTS[1:],
                   help="also time these ORT session options (besides the defaults)")
    p.add_argument("--checkpoint", metavar="F", help="also time `posedistill predict` end to end on a synthetic "
                   "video with this trained checkpoint, PyTorch against its ONNX export")
    p.add_argument("--video-frames", type=int, default=60, help="frames of that video (640x480, 3 people)")
    args = p.parse_args(argv)
    unknown = sorted(set(args.models) - set(list_models()))
    if unknown:
        p.error(f"unknown model(s) {', '.join(unknown)}; registered: {', '.join(list_models())}")
    w, h = (int(v) for v in args.input.lower().split("x"))
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    speed: dict[tuple[str, str, int], float] = {}   # (model, backend, batch) -> images/s
    params: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            torch.manual_seed(0)
            model = create_model_at(name, {"num_joints": 17}, input_size=(w, h)).eval()
            params[name] = count_params(model) / 1e6
            path = export_onnx(model, Path(tmp) / f"{name}.onnx", (w, h))
            backends = {"eager": TorchBackend(model)}
            for variant in ["default", *args.ort_variants]:
                label = "ort" if variant == "default" else f"ort-{variant}"
                backends[label] = OnnxBackend(path, threads=threads, options=_session_options(variant))
            for n in args.batches:
                images = rng.standard_normal((n, 3, h, w), dtype=np.float32)
                for label, sec in _time_backends(backends, images, args.rounds, args.iters).items():
                    speed[name, label, n] = n / sec
    _report(args, speed, params, (w, h), threads)
    if args.checkpoint:
        _predict_video(args.checkpoint, args.video_frames, threads)
    return 0


def _predict_video(checkpoint: str, frames: int, threads: int) -> None:
    """`posedistill predict` frames/s on a generated walking video, everything included: read the frame,
    crop, network, decode, draw, write the .mp4. One whole-frame box per frame (a video's boxes come from
    a person detector, and none ships with posedistill)."""
    with tempfile.TemporaryDirectory() as tmp:
        clip = generate_video(Path(tmp) / "clip.mp4", num_frames=frames, seed=0, num_people=3)
        onnx_file = Path(tmp) / "model.onnx"
        with contextlib.redirect_stdout(io.StringIO()):
            if main_export([checkpoint, "--out", str(onnx_file)]) != 0:
                raise SystemExit(f"export of {checkpoint} failed")
        print(f"\n`posedistill predict` on a {frames}-frame 640x480 video, whole-frame box, {threads} threads:")
        for label, model in (("pytorch", checkpoint), ("onnxruntime", str(onnx_file))):
            out = io.StringIO()
            start = time.perf_counter()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                main_predict([str(clip.path), "-c", model, "--out", str(Path(tmp) / label),
                              "--threads", str(threads)])
            print(f"  {label}: {frames / (time.perf_counter() - start):.1f} frames/s "
                  f"(predict's own line: {out.getvalue().strip().split(', ')[-1]})")


def _report(args, speed: dict, params: dict, size: tuple[int, int], threads: int) -> None:
    labels = list(dict.fromkeys(label for _, label, _ in speed))
    print(f"input {size[0]}x{size[1]} (WxH), {threads} threads (torch {torch.__version__}, onnxruntime "
          f"{ort.__version__}), median of {args.rounds} rounds x {args.iters} calls, images/s\n")
    print("| model | params (M) | batch | " + " | ".join(labels) + " | " +
          " | ".join(f"{label} / eager" for label in labels[1:]) + " |")
    print("|---|---|---|" + "---|" * (2 * len(labels) - 1))
    for name in args.models:
        for n in args.batches:
            row = [f"{speed[name, label, n]:.1f}" for label in labels]
            row += [f"{speed[name, label, n] / speed[name, 'eager', n]:.2f}" for label in labels[1:]]
            print(f"| {name} | {params[name]:.2f} | {n} | " + " | ".join(row) + " |")
    student = args.models[0]
    for teacher in args.models[1:]:
        print(f"\n{student} / {teacher} speed (target >= 3):")
        for n in args.batches:
            print(f"  batch {n}: " + ", ".join(f"{label} {speed[student, label, n] / speed[teacher, label, n]:.2f}"
                                             for label in labels))
    print(f"\n{student}: ort / eager (target >= 1.5): " +
          ", ".join(f"batch {n} {speed[student, 'ort', n] / speed[student, 'eager', n]:.2f}" for n in args.batches))


if __name__ == "__main__":
    raise SystemExit(main())
