"""ONNX export of a pose network, and the parity check that the file computes what the model does.

Exporter: torch's TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`). Measured on
torch 2.13 (2-core CPU, every registered model at 64x64 input, 17 joints):
- it exports all of them (GC blocks, HRNet fusions with nearest up-sampling to a computed size,
  SimCC Linear heads, transposed convs) with ONNX Runtime parity below 1e-5 of the output range at
  batch 1 and 4 through a dynamic batch axis;
- it needs no package beyond torch itself, while the dynamo exporter (`dynamo=True`, torch's default
  since 2.9) needs `onnxscript`, starts at opset 18 and down-converts to 17;
- it is 5-10x faster: ELPN-V1 5 s against 48 s, HRNet-W32 12 s against 77 s (dynamo, onnxscript 0.7.2).
torch marks the TorchScript exporter deprecated; its DeprecationWarning and the tracer's warnings
about Python-side shape checks (which only guard the fixed input size) are silenced here.

The file holds one input "images" [N, 3, H, W] (N dynamic, H x W fixed: SimCC heads and the traced
resize sizes are built for one input size), outputs named by `backends.output_names(head_type)`,
and the metadata as a JSON object under the metadata_props key "posedistill" (the model card
`OnnxBackend.metadata` and `predict` read back). Models must serialise below protobuf's 2 GB limit
(the largest registered one, FR-SBN-R152, is about 310 MB).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from posedistill.errors import DependencyError, InputError
from posedistill.inference.backends import (INPUT_NAME, METADATA_KEY, OnnxBackend, TorchBackend, output_names,
                                           prediction_module)

try:
    import onnx
except ImportError:  # optional dependency: pip install 'posedistill[onnx]'
    onnx = None

MIN_OPSET = 17   # LayerNormalization (the GC blocks' LayerNorm as one op) entered the standard at 17


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """Eval mode (BN running statistics) for the block, then the caller's mode back."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters(), torch.empty(0)).device


def _embedded_metadata(model: nn.Module, input_size: tuple[int, int], metadata: dict | None) -> dict:
    """`metadata` plus what a reader needs to decode the outputs (head type, output stride, input size),
    filled in where missing; a value that contradicts the model is an error, not silently kept."""
    meta = dict(metadata or {})
    facts = {"head_type": model.head_type, "output_stride": int(model.output_stride),
             "input_size": [int(input_size[0]), int(input_size[1])]}
    for key, value in facts.items():
        given = meta.setdefault(key, value)
        if (list(given) if isinstance(given, (list, tuple)) else given) != value:
            raise InputError(f"metadata {key}={given!r} contradicts the exported model ({key}={value!r})")
    return meta


def _trace_to_onnx(model: nn.Module, input_size: tuple[int, int], opset: int) -> bytes:
    """The TorchScript exporter's ONNX bytes for `model` at batch 1, the batch axis left dynamic."""
    w, h = input_size
    device = _device_of(model)
    names = list(output_names(model.head_type))
    dynamic = {n: {0: "batch"} for n in [INPUT_NAME, *names]}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)      # "legacy TorchScript-based ONNX export"
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks on the fixed input size
        torch.onnx.export(model, (torch.zeros(1, 3, h, w, device=device),), buffer, dynamo=False,
                          input_names=[INPUT_NAME], output_names=names, dynamic_axes=dynamic,
                          opset_version=opset, do_constant_folding=True)
    return buffer.getvalue()


def _write_atomically(data: bytes, path: Path) -> None:
    """Temp file in the destination folder + fsync + os.replace (as engine.checkpoint.save_checkpoint):
    a killed export leaves the previous file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def export_onnx(model: nn.Module, path: str | os.PathLike, input_size: tuple[int, int], *,
                metadata: dict | None = None, opset: int = 17) -> Path:
    """Write `model` (in eval mode) as ONNX to `path` for input `input_size` (width, height), with
    `metadata` (JSON-serialisable) embedded; see the module docstring for the file's layout."""
    if onnx is None:
        raise DependencyError("ONNX export needs the `onnx` package: pip install 'posedistill[onnx]'")
    if int(opset) < MIN_OPSET:
        raise InputError(f"opset {opset} is not supported; ONNX export needs opset >= {MIN_OPSET}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta_json = json.dumps(_embedded_metadata(model, input_size, metadata), sort_keys=True)  # fails before tracing
    with _eval_mode(model):
        proto = onnx.load_model_from_string(_trace_to_onnx(prediction_module(model), input_size, int(opset)))
    del proto.metadata_props[:]
    proto.metadata_props.add(key=METADATA_KEY, value=meta_json)
    _write_atomically(proto.SerializeToString(), path)
    return path


def check_parity(model: nn.Module, onnx_path: str | os.PathLike, input_size: tuple[int, int],
                 batch_sizes: tuple[int, ...] = (1, 4), seed: int = 0) -> float:
    """Worst max|ONNX Runtime - eager| / (eager max - eager min) over all outputs and batch sizes, on the
    same standard-normal inputs (a constant eager output is compared in absolute terms)."""
    w, h = input_size
    rng = np.random.default_rng(seed)
    session = OnnxBackend(onnx_path)
    worst = 0.0
    with _eval_mode(model):
        eager = TorchBackend(model, _device_of(model))
        for n in batch_sizes:
            images = rng.standard_normal((n, 3, h, w), dtype=np.float32)
            for ref, got in zip(eager(images), session(images), strict=True):
                if ref.shape != got.shape:
                    raise InputError(f"{onnx_path}: output shape {list(got.shape)} != eager {list(ref.shape)}")
                spread = float(ref.max() - ref.min()) or 1.0
                worst = max(worst, float(np.abs(got - ref).max()) / spread)
    return worst
