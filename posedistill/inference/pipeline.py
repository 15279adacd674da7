"""A model file plus a source of person boxes = people in an image: what `predict` and `serve` run.

`open_model` takes a posedistill checkpoint (run in PyTorch) or an exported `.onnx` (run in ONNX Runtime;
its embedded model card gives the codec and keypoint set). `box_source` turns the command-line choice of
where person boxes come from into one callable: the whole image (MMPose's inferencer fallback), a
COCO detections file, or a user-supplied ONNX person detector.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from posedistill.errors import InputError
from posedistill.engine.config import Config
from posedistill.inference.backends import OnnxBackend, TorchBackend
from posedistill.inference.boxes import OnnxDetector, read_detections, whole_image_box
from posedistill.codecs.paf import PafCodec
from posedistill.inference.predictor import (BottomUpPredictor, LoadedModel, Predictor, load_model,
                                             load_onnx_card)

BoxFn = Callable[[np.ndarray, str], np.ndarray]   # (image BGR, its path or "") -> [N, 5] (x, y, w, h, score)
BACKENDS = ("auto", "torch", "onnxruntime")
# How each detector family's ONNX file wants its input and gives its output (docs/person_detectors.md):
# YOLOX exported with --decode_in_inference or by MMDeploy: raw 0..255 BGR; YOLOX's default export:
# grid offsets to decode; RTMDet (MMDeploy): normalised by MMDetection's RTMDet mean / std.
DETECTOR_PRESETS = {
    "yolox": {},
    "yolox-grid": {"decode_grid": True},
    "rtmdet": {"mean": OnnxDetector.RTMDET_MEAN, "std": OnnxDetector.RTMDET_STD},
}


def open_model(path: str, cfg: Config | None = None, *, backend: str = "auto", device: str = "cpu",
               threads: int = 0) -> tuple[LoadedModel, Callable]:
    """(model, codec, keypoint set) and the backend that runs it. "auto" = ONNX Runtime for a .onnx
    file, PyTorch otherwise."""
    if backend not in BACKENDS:
        raise InputError(f"--backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    is_onnx = Path(path).suffix.lower() == ".onnx"
    if backend == "onnxruntime" and not is_onnx:
        raise InputError(f"--backend onnxruntime runs an exported .onnx file, got {path}; "
                         f"make one with `posedistill export {path} --format onnx`")
    if backend == "torch" and is_onnx:
        raise InputError(f"--backend torch needs a posedistill checkpoint (.pth), got the ONNX file {path}")
    if is_onnx:
        runner = OnnxBackend(path, threads=threads)
        return load_onnx_card(runner.metadata, f"ONNX file {path}", cfg), runner
    loaded = load_model(path, cfg)
    return loaded, TorchBackend(loaded.model, device)


def box_source(boxes: str | None, detector: str | None = None, *, score_thr: float = 0.3,
               detector_input: tuple[int, int] | None = None, detector_preset: str = "yolox") -> BoxFn:
    """Where person boxes come from: `detector` (an ONNX person detector file), `boxes` = "whole" (the
    whole image as one box, the default), a COCO detections JSON, or "bottomup:CKPT" (the people a
    bottom-up model finds, as boxes)."""
    if detector and boxes not in (None, "whole"):
        raise InputError("give either --boxes or --detector, not both")
    if detector:
        if detector_preset not in DETECTOR_PRESETS:
            raise InputError(f"--det-preset: expected one of {', '.join(DETECTOR_PRESETS)}, got {detector_preset!r}")
        det = OnnxDetector(detector, score_thr=score_thr, input_size=detector_input,
                           **DETECTOR_PRESETS[detector_preset])
        return lambda image, path: det(image)
    if boxes in (None, "whole"):
        return lambda image, path: whole_image_box(image.shape[1], image.shape[0])
    if boxes.startswith("bottomup:"):
        return bottomup_boxes(boxes[len("bottomup:"):], score_thr)
    dets = read_detections(boxes, score_thr=score_thr)
    return lambda image, path: dets.boxes_for(path)


def bottomup_boxes(path: str, score_thr: float) -> BoxFn:
    """Person boxes from a bottom-up model file (checkpoint or .onnx): the extent of each person's
    found joints, scored by the person score (people below `score_thr` dropped)."""
    loaded, runner = open_model(path)
    if loaded.codec.target_keys != PafCodec.target_keys:
        raise InputError(f"--boxes bottomup:{path}: that model is not bottom-up (head "
                         f"{loaded.card.get('head_type', loaded.cfg.codec.type)!r}); it needs boxes itself")
    finder = BottomUpPredictor(runner, loaded.codec, loaded.meta, loaded.input_size)

    def boxes(image: np.ndarray, image_path: str) -> np.ndarray:
        people = [p for p in finder(image) if p["score"] >= score_thr]
        return np.array([[*p["box"], p["score"]] for p in people], np.float32).reshape(-1, 5)
    return boxes


class PosePipeline:
    """Boxes, then the top-down model on each: `pipeline(image, path) -> people` (see `Predictor`)."""

    def __init__(self, predictor: Predictor, boxes: BoxFn):
        self.predictor, self.boxes = predictor, boxes

    def __call__(self, image_bgr: np.ndarray, path: str = "", *, keep_outputs: bool = False) -> list[dict]:
        return self.predictor(image_bgr, self.boxes(image_bgr, path), keep_outputs=keep_outputs)

    def many(self, images_bgr: list[np.ndarray], paths: list[str] | None = None) -> list[list[dict]]:
        """Several images in shared batches (the server batches requests that arrive together)."""
        paths = paths or [""] * len(images_bgr)
        return self.predictor.predict_many(images_bgr, [self.boxes(im, p) for im, p in zip(images_bgr, paths)])


def build_pipeline(model_path: str, cfg: Config | None = None, *, boxes: str | None = None,
                   detector: str | None = None, score_thr: float = 0.3,
                   detector_input: tuple[int, int] | None = None, detector_preset: str = "yolox",
                   backend: str = "auto",
                   device: str = "cpu", flip_test: bool = False, batch_size: int = 16,
                   threads: int = 0) -> tuple[PosePipeline, LoadedModel]:
    """The pipeline `predict` and `serve` run, from their command-line options."""
    loaded, runner = open_model(model_path, cfg, backend=backend, device=device, threads=threads)
    if isinstance(loaded.codec, PafCodec):
        if boxes not in (None, "whole") or detector:
            raise InputError(f"{model_path} is a bottom-up model: it finds the people itself, so it takes no "
                             f"--boxes / --detector")
        finder = BottomUpPredictor(runner, loaded.codec, loaded.meta, loaded.input_size, flip_test=flip_test)
        return PosePipeline(finder, lambda image, path: None), loaded
    predictor = Predictor(runner, loaded.codec, loaded.meta, loaded.input_size, flip_test=flip_test,
                          batch_size=batch_size, keypoint_score_thr=loaded.cfg.eval.keypoint_score_thr)
    return PosePipeline(predictor, box_source(boxes, detector, score_thr=score_thr,
                                                      detector_input=detector_input,
                                                      detector_preset=detector_preset)), loaded
