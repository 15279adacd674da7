"""The `posedistill` command. Each sub-command is a module of `posedistill/commands/` with
`main(argv) -> int`; this file only maps names to those modules, importing a module when its
command runs so that `posedistill --help` stays instant."""
from __future__ import annotations

import importlib
import sys

# command -> (module, one-line help). Flat and explicit: grep finds every entry point.
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("posedistill.commands.data", "synthetic data: `posedistill data synth --out DIR ...`"),
    "train": ("posedistill.commands.train", "train a model from a YAML recipe"),
    "eval": ("posedistill.commands.eval", "evaluate a checkpoint (COCO AP / PCKh)"),
    "distill": ("posedistill.commands.distill", "train a student distilled from a teacher"),
    "ablate": ("posedistill.commands.ablate", "run the distillation ablation over seeds"),
    "cache": ("posedistill.commands.cache", "build a teacher-output cache and measure its error"),
    "demo": ("posedistill.commands.demo", "main job on synthetic data: teacher, student, distilled student"),
    "profile": ("posedistill.commands.profile", "parameters, GMACs and images/s of a model"),
    "convert": ("posedistill.commands.convert", "convert an MMPose checkpoint to the official layout"),
    "predict": ("posedistill.commands.predict", "run a trained model on images, a folder or a video"),
    "export": ("posedistill.commands.export", "export a checkpoint to ONNX (checked against PyTorch)"),
    "serve": ("posedistill.commands.serve", "HTTP server with a web page: POST /predict, GET /"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: posedistill COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`posedistill COMMAND --help` shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"posedistill: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    return int(importlib.import_module(COMMANDS[name][0]).main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
