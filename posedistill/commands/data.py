"""`posedistill data synth|video`: built-in synthetic pose data (the library is
`posedistill.data.synthetic`)."""
from __future__ import annotations

import argparse

from posedistill.data.synth_render import DIFFICULTY
from posedistill.commands.common import parse_size
from posedistill.data.synthetic import FORMATS, generate_dataset, generate_video


def _rate(text: str) -> float:
    v = float(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"--missing-label-rate expects a value in [0, 1], got {text}")
    return v


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="posedistill data", description="Synthetic multi-person pose data.")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("synth", help="write a synthetic dataset (images + annotations + detections)")
    s.add_argument("--out", required=True, help="output folder (images/ and annotations/ are created)")
    s.add_argument("--images", type=int, required=True, help="number of images")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--format", choices=sorted(FORMATS), default="coco")
    s.add_argument("--size", type=parse_size, default=(640, 480), help="WIDTHxHEIGHT (default 640x480)")
    s.add_argument("--difficulty", choices=sorted(DIFFICULTY), default="medium")
    s.add_argument("--missing-label-rate", type=_rate, default=0.0,
                   help="fraction of labelled joints removed from the annotations (images unchanged)")
    s.add_argument("--split-name", default="train", help="annotation file suffix (default train)")
    s.add_argument("--preview", default=None, help="also write a PNG grid of the first images with keypoints")
    s.add_argument("--no-segmentation", action="store_true", help="omit COCO polygons (smaller JSON)")
    v = sub.add_parser("video", help="write a short clip of moving synthetic people")
    v.add_argument("--out", required=True, help="output .mp4 path")
    v.add_argument("--frames", type=int, default=60)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--size", type=parse_size, default=(640, 480))
    v.add_argument("--fps", type=float, default=15.0)
    v.add_argument("--people", type=int, default=3)
    args = p.parse_args(argv)
    if args.cmd == "synth":
        res = generate_dataset(args.out, args.images, args.seed, fmt=args.format, size=args.size,
                               difficulty=args.difficulty, missing_label_rate=args.missing_label_rate,
                               split=args.split_name, segmentation=not args.no_segmentation,
                               preview=args.preview, progress=args.images >= 200)
        print(f"wrote {res.num_images} images ({res.num_people} people) to {res.image_dir}")
        print(f"annotations: {res.ann_file}")
        for label, path in (("detections", res.det_file), ("full truth", res.complete_ann_file),
                            ("preview", res.preview)):
            if path is not None:
                print(f"{label}: {path}")
    else:
        res = generate_video(args.out, args.frames, args.seed, size=args.size, fps=args.fps,
                             num_people=args.people)
        what = "MP4" if res.kind == "mp4" else "JPEG frames (no MP4 writer available)"
        print(f"wrote {args.frames} frames as {what}: {res.path}\nkeypoints: {res.keypoints_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
