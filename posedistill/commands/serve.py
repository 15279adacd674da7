"""`posedistill serve MODEL [--port 8000] [--boxes whole|FILE] [--detector FILE.onnx] ...`: a trained
model behind HTTP (`inference.server`): POST /predict with an image, or open the page at / in a browser.

The listening socket is opened here, before uvicorn starts, so that a port already in use is a
one-line error like any other, and `--port 0` (any free port) prints the port actually taken.
"""
from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

import torch
import uvicorn

from posedistill.commands.common import load_recipe
from posedistill.inference.pipeline import BACKENDS, build_pipeline
from posedistill.inference.server import create_app

PROG = "posedistill serve"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Serve a pose model over HTTP: POST /predict with an "
                                "image (multipart field `file` or raw body) returns the people's keypoints "
                                "as JSON; / is a page to try it in a browser; /health reports batching.")
    p.add_argument("model", help="posedistill checkpoint (.pth) or exported .onnx file")
    p.add_argument("--config", metavar="C", help="recipe YAML; only needed for files without a model card")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    p.add_argument("--boxes", metavar="whole|FILE", default=None,
                   help="person boxes: the whole image (default) or a COCO detections JSON, matched by the "
                        "uploaded file's name")
    p.add_argument("--detector", metavar="FILE.onnx", help="an ONNX person detector finds the people")
    p.add_argument("--det-score-thr", type=float, default=0.3, help="lowest person box score kept (0.3)")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto: ONNX Runtime for a .onnx file, PyTorch otherwise")
    p.add_argument("--flip", action="store_true", help="flip test (slower, a little more accurate)")
    p.add_argument("--max-upload-mb", type=float, default=10, help="largest upload accepted (10 MB)")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="largest image accepted, in pixels")
    p.add_argument("--batch-window-ms", type=float, default=10,
                   help="how long a request waits for others to share its batch (10 ms)")
    p.add_argument("--max-batch", type=int, default=8, help="most images in one batch (8)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for inference (0: the library default)")
    return p


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as e:
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    if args.max_upload_mb <= 0 or args.max_pixels <= 0 or args.max_batch <= 0 or args.batch_window_ms < 0:
        p.error("--max-upload-mb, --max-pixels and --max-batch must be positive, --batch-window-ms not negative")
    cfg = load_recipe(PROG, args.config, []) if args.config else None
    if args.config and cfg is None:
        return 2
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        if not Path(args.model).is_file():
            raise FileNotFoundError(f"model file {args.model} does not exist")
        pipeline, loaded = build_pipeline(args.model, cfg, boxes=args.boxes, detector=args.detector,
                                          score_thr=args.det_score_thr, backend=args.backend,
                                          flip_test=args.flip, threads=args.threads)
        sock = _listen(args.host, args.port)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)   # one line, whatever raised
        return 2
    model_name = f"{Path(args.model).name} ({loaded.cfg.model.name}, {loaded.meta.num_joints} joints)"
    app = create_app(pipeline, loaded.meta, max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels,
                     batch_window_ms=args.batch_window_ms, max_batch=args.max_batch, model=model_name)
    host, port = sock.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    print(f"{PROG}: {model_name} on http://{shown_host}:{port}/ (Ctrl+C stops)", flush=True)
    try:
        uvicorn.Server(uvicorn.Config(app, log_level="info")).run(sockets=[sock])
    except KeyboardInterrupt:   # uvicorn has shut down cleanly and passes Ctrl+C on
        pass
    return 0
