"""`posedistill serve MODEL [--port 8000] [--boxes whole|FILE] [--detector FILE.onnx] ...`: a trained
model behind HTTP (`inference.server`): POST /predict with an image, or open the page at / in a browser.

The listening socket is opened here, before uvicorn starts, so that a port already in use is a
one-line error like any other, and `--port 0` (any free port) prints the port actually taken.
"""
from __future__ import annotations

import argparse
import socket
from pathlib import Path

import uvicorn

from posedistill.errors import InputError
from posedistill.commands.common import add_pipeline_arguments, pipeline_from_args
from posedistill.inference.server import create_app

PROG = "posedistill serve"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Serve a pose model over HTTP: POST /predict with an "
                                "image (multipart field `file` or raw body) returns the people's keypoints "
                                "as JSON; / is a page to try it in a browser; /health reports batching.")
    p.add_argument("model", help="posedistill checkpoint (.pth) or exported .onnx file")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    add_pipeline_arguments(p)
    p.add_argument("--max-upload-mb", type=float, default=10, help="largest upload accepted (10 MB)")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="largest image accepted, in pixels")
    p.add_argument("--batch-window-ms", type=float, default=10,
                   help="how long a request waits for others to share its batch (10 ms)")
    p.add_argument("--max-batch", type=int, default=8, help="most images in one batch (8)")
    return p


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as e:
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}",
                         hint="another server may hold the port; try --port 0 for any free port") from e


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    if args.max_upload_mb <= 0 or args.max_pixels <= 0 or args.max_batch <= 0 or args.batch_window_ms < 0:
        p.error("--max-upload-mb, --max-pixels and --max-batch must be positive, --batch-window-ms not negative")
    pipeline, loaded = pipeline_from_args(args.model, args)
    sock = _listen(args.host, args.port)
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
