"""`posedistill predict SRC --checkpoint F [--config C] [--out DIR] [--boxes whole|FILE] [--detector F.onnx]`.

SRC is an image, a folder, a glob or a video. Writes the drawn pictures (`DIR/vis/`) or a drawn video
(`DIR/<name>.mp4`) and `DIR/predictions.json` (COCO keypoint results, one entry per person), then one
summary line. On a video the person detector runs every `--detect-every` frames and boxes are carried
between by IoU and the previous frame's poses, so the pose model runs on every frame.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
from tqdm import tqdm

from posedistill.errors import InputError
from posedistill.commands.common import add_pipeline_arguments, pipeline_from_args
from posedistill.inference.boxes import BoxTracker
from posedistill.inference.pipeline import PosePipeline
from posedistill.inference.predictor import draw_prediction
from posedistill.inference.sources import Source, VideoOut, coco_result, open_source, warn_skipped, write_json

PROG = "posedistill predict"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Run a trained model on images or a video: drawn "
                                "skeletons and COCO-results JSON.")
    p.add_argument("source", help="an image, a folder of images, a glob ('photos/*.jpg') or a video file")
    p.add_argument("--checkpoint", "-c", required=True, metavar="F",
                   help="a posedistill checkpoint (.pth) or an exported model (.onnx)")
    p.add_argument("--out", default="runs/predict", metavar="DIR", help="output folder (default runs/predict)")
    add_pipeline_arguments(p)
    p.add_argument("--detect-every", type=int, default=5, metavar="N",
                   help="video with --detector: detect every N frames, track boxes in between (default 5)")
    p.add_argument("--show-heatmaps", action="store_true", help="blend the joint confidence maps into the pictures")
    p.add_argument("--kpt-thr", type=float, default=0.3, help="draw joints scoring above this")
    p.add_argument("--no-draw", action="store_true", help="write predictions.json only")
    return p


def _boxes_for(args, pipeline: PosePipeline, source: Source):
    """Per-frame box function: a tracker over the detector on videos, the pipeline's source otherwise."""
    if not source.video or not args.detector:
        return None
    return BoxTracker(lambda frame: pipeline.boxes(frame, source.video), every=max(1, args.detect_every))


def _run(args, pipeline: PosePipeline, meta, source: Source, out_dir: Path) -> dict:
    """Every frame through the pipeline; returns counts and the results."""
    tracker = _boxes_for(args, pipeline, source)
    video = VideoOut(out_dir / f"{Path(source.video).stem}.mp4", source.fps, source.size) \
        if source.video and not args.no_draw else None
    results, skipped, frames, people_n = [], [], 0, 0
    bar = tqdm(source.frames(), total=len(source), desc="predict", unit="img", dynamic_ncols=True,
               disable=len(source) <= 1 or not sys.stderr.isatty())
    try:
        for frame in bar:
            if frame.image is None:
                warn_skipped(frame)
                skipped.append(frame.path)
                continue
            if tracker is not None:
                boxes, ids = tracker(frame.image)
                people = pipeline.predictor(frame.image, boxes, keep_outputs=args.show_heatmaps)
                tracker.update([p["keypoints"] for p in people])
                for p, tid in zip(people, ids):
                    p["track_id"] = int(tid)
            else:
                people = pipeline(frame.image, frame.path, keep_outputs=args.show_heatmaps)
            frames += 1
            people_n += len(people)
            results += [coco_result(p, frame) for p in people]
            if not args.no_draw:
                drawn = draw_prediction(frame.image, people, meta, score_thr=args.kpt_thr,
                                        show_heatmaps=args.show_heatmaps)
                if video is not None:
                    video.write(drawn)
                else:
                    (out_dir / "vis").mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(out_dir / "vis" / frame.name), drawn)
    finally:
        if video is not None:
            video.close()
    return {"results": results, "skipped": skipped, "frames": frames, "people": people_n,
            "detector_calls": tracker.detector_calls if tracker is not None else None}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    source = open_source(args.source)
    if source.video and args.boxes not in (None, "whole"):
        raise InputError("a detections file names images, not video frames: use --detector F.onnx or "
                         "--boxes whole for a video")
    pipeline, loaded = pipeline_from_args(args.checkpoint, args)
    if args.boxes is None and args.detector is None and loaded.cfg.codec.type != "paf":
        print(f"{PROG}: no --boxes / --detector: each image is one person box (the whole image)", file=sys.stderr)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    run = _run(args, pipeline, loaded.meta, source, out_dir)
    seconds = time.perf_counter() - start
    path = write_json(run["results"], out_dir / "predictions.json")
    unit = "frames" if source.video else "images"
    skipped = f" ({len(run['skipped'])} skipped: {', '.join(run['skipped'][:3])})" if run["skipped"] else ""
    detector = f", detector ran on {run['detector_calls']} of {run['frames']} frames" \
        if run["detector_calls"] is not None else ""
    print(f"{PROG}: {run['frames']} {unit}{skipped}, {run['people']} people{detector}, "
          f"{run['frames'] / max(seconds, 1e-9):.1f} {unit}/s -> {path}")
    return 0
