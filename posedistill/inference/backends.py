"""The two ways to run a pose network on a batch of crops: PyTorch (`TorchBackend`) and ONNX Runtime
(`OnnxBackend`, on a file written by `inference.export.export_onnx`).

Both are callables with one contract, so `Predictor` and the server never ask which one they hold:

    backend(images)  # images: float32 [N, 3, H, W], already normalised (data.transforms.normalize_image)
    -> list of float32 arrays, in `output_names(head_type)` order

The output names are also the names of the ONNX graph's outputs, which is how an exported file says
what it holds even without its metadata.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn

from posedistill.errors import InputError, MissingFileError
from posedistill.models.bottomup import LastStage

INPUT_NAME = "images"
# head type -> the network's outputs, in the order the model returns them. "paf" is reserved for the
# bottom-up models (a model returning (confidence_maps, pafs)); no registered model has it yet.
OUTPUT_NAMES: dict[str, tuple[str, ...]] = {
    "heatmap": ("heatmaps",),
    "simcc": ("simcc_x", "simcc_y"),
    "paf": ("confidence_maps", "pafs"),
    "coords": ("keypoints",),          # [B, K, 3] (x, y, score) in crop pixels: student + IGP-GCN refiner
}
# Key of the ONNX metadata_props entry holding the export's metadata (a JSON object).
METADATA_KEY = "posedistill"


def output_names(head_type: str) -> tuple[str, ...]:
    """Names of a model's outputs, in the order it returns them, for its `head_type`."""
    if head_type not in OUTPUT_NAMES:
        raise InputError(f"unknown head type {head_type!r}; known: {', '.join(OUTPUT_NAMES)}")
    return OUTPUT_NAMES[head_type]


def _head_type_of(names: tuple[str, ...]) -> str | None:
    """The head type whose output names are exactly `names` (any order), else None."""
    for head, expected in OUTPUT_NAMES.items():
        if sorted(expected) == sorted(names):
            return head
    return None


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"expected images [N, 3, H, W], got shape {list(images.shape)}")
    return np.ascontiguousarray(images, dtype=np.float32)


def prediction_module(model: nn.Module) -> nn.Module:
    """The module whose outputs are `output_names(model.head_type)`: the model itself, or for a
    multi-stage PAF network (a list of per-stage outputs, every stage supervised in training) its last
    stage (`models.bottomup.LastStage`)."""
    if model.head_type == "paf" and not isinstance(model, LastStage):
        return LastStage(model)
    return model


class TorchBackend:
    """Run `model` (eval mode, under `torch.inference_mode`) on `device`; numpy in, numpy out."""

    input_names = (INPUT_NAME,)

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = prediction_module(model).eval().to(self.device)
        self.head_type = model.head_type
        self.output_names = output_names(self.head_type)

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        x = torch.from_numpy(_check_images(images)).to(self.device)
        with torch.inference_mode():
            out = self.model(x)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        if len(outs) != len(self.output_names):
            raise InputError(f"{type(self.model).__name__} returned {len(outs)} outputs; head type "
                             f"{self.head_type!r} has {len(self.output_names)} ({', '.join(self.output_names)})")
        return [o.detach().float().cpu().numpy() for o in outs]


def _open_session(path: Path, options: ort.SessionOptions) -> ort.InferenceSession:
    """An ONNX Runtime session on the CPU, or a one-line error naming the file."""
    if not path.is_file():
        raise MissingFileError(f"ONNX model {path} does not exist (expected a .onnx file written by "
                                f"`posedistill export`)")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own InvalidProtobuf / Fail / InvalidGraph types
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{path} is not a readable ONNX model (expected a .onnx file written by "
                         f"`posedistill export`): {first_line}") from None


class OnnxBackend:
    """Run an exported `.onnx` file in ONNX Runtime (CPU), with `TorchBackend`'s call contract.

    threads: intra-op threads (0 = ONNX Runtime's default, one per physical core).
    options: a prepared `onnxruntime.SessionOptions` (graph optimisation level, execution mode, ...),
    for benchmarks; `threads` is applied on top when given.
    `.metadata` is the JSON object the export embedded ({} for a file from elsewhere); `.head_type`
    comes from it, else from the output names, else is None (then every output is returned)."""

    input_names = (INPUT_NAME,)

    def __init__(self, path: str | os.PathLike, threads: int = 0, options: ort.SessionOptions | None = None):
        self.path = Path(path)
        options = options or ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = int(threads)
        self.session = _open_session(self.path, options)
        self.metadata = self._read_metadata()
        self.input_name = self.session.get_inputs()[0].name
        graph_outputs = tuple(o.name for o in self.session.get_outputs())
        self.head_type = self.metadata.get("head_type") or _head_type_of(graph_outputs)
        self.output_names = output_names(self.head_type) if self.head_type else graph_outputs
        missing = [n for n in self.output_names if n not in graph_outputs]
        if missing:
            raise InputError(f"{self.path}: head type {self.head_type!r} needs outputs {', '.join(missing)}; "
                             f"the graph has {', '.join(graph_outputs)}")

    def _read_metadata(self) -> dict:
        text = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if text is None:
            return {}
        try:
            meta = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{self.path}: metadata {METADATA_KEY!r} is not valid JSON ({e})") from None
        if not isinstance(meta, dict):
            raise InputError(f"{self.path}: metadata {METADATA_KEY!r} is not a JSON object")
        return meta

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        outs = self.session.run(list(self.output_names), {self.input_name: _check_images(images)})
        return [np.asarray(o, dtype=np.float32) for o in outs]
