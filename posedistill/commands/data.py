"""`posedistill data synth|video`: built-in synthetic pose data (the library is
`posedistill.data.synthetic`)."""
from __future__ import annotations

import argparse

from posedistill.errors import InputError
from posedistill.data.synth_render import DIFFICULTY
from posedistill.commands.common import parse_size
from posedistill.data.synthetic import FORMATS, generate_dataset, generate_video, scene_config


def _rate(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a rate in [0, 1], got {text!r}")
    return v


_DEFECTS_HELP = """label defects (Kato et al., seed 004): each is off by default and changes only the annotation
files (and, for truncation, where people stand); whenever one is on, annotations/complete_keypoints_<split>.json
holds the full truth. Nothing is applied unless asked: generate the held-out split (e.g. --split-name val)
without these flags and it is labelled completely."""


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
    s.add_argument("--people", type=int, nargs=2, metavar=("MIN", "MAX"),
                   help="people per image (default: the difficulty preset's, e.g. easy 1 3)")
    s.add_argument("--person-height", type=float, nargs=2, metavar=("MIN", "MAX"),
                   help="person height as a fraction of the image height (default: the preset's, e.g. easy 0.25 0.83)")
    d = s.add_argument_group("label defects", _DEFECTS_HELP)
    d.add_argument("--truncation-rate", type=_rate, default=None, metavar="RATE",
                   help="(a) fraction of people placed partly outside the image, their outside joints unlabelled; "
                        "everyone else is kept inside (default: the difficulty preset, medium 0.15)")
    d.add_argument("--occluded-unlabelled", type=_rate, nargs="?", const=1.0, default=0.0, metavar="RATE",
                   help="(b) fraction of hidden joints (v=1) left unlabelled; the flag alone means all of them")
    d.add_argument("--missing-keypoint-rate", type=_rate, default=0.0, metavar="RATE",
                   help="(c) fraction of visible joints (v=2) left unlabelled")
    d.add_argument("--missing-person-rate", type=_rate, default=0.0, metavar="RATE",
                   help="(d) fraction of people left out of the annotations, with no crowd / ignore region")
    d.add_argument("--missing-label-rate", type=_rate, default=0.0, metavar="RATE",
                   help="older mixed knob: fraction of labelled joints removed, about a quarter of them as whole "
                        "people (as d), the rest single joints (as b and c)")
    d.add_argument("--crowd-rate", type=_rate, default=0.0, metavar="RATE",
                   help="not a defect: fraction of people released as crowd regions (iscrowd=1, RLE mask, no "
                        "keypoints), which bottom-up loaders mask out")
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
        try:
            scene = scene_config(args.difficulty, **({"people": tuple(args.people)} if args.people else {}),
                                 **({"height_frac": tuple(args.person_height)} if args.person_height else {}))
        except ValueError as e:     # SceneConfig's own check, said in the flags' words
            raise InputError(f"--people / --person-height: {e}") from None
        res = generate_dataset(args.out, args.images, args.seed, fmt=args.format, size=args.size,
                               difficulty=args.difficulty, scene=scene, missing_label_rate=args.missing_label_rate,
                               split=args.split_name, segmentation=not args.no_segmentation,
                               preview=args.preview, progress=args.images >= 200,
                               truncation_rate=args.truncation_rate, occluded_unlabelled=args.occluded_unlabelled,
                               missing_keypoint_rate=args.missing_keypoint_rate,
                               missing_person_rate=args.missing_person_rate, crowd_rate=args.crowd_rate)
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
