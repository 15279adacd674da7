"""The `posedistill` command. Each sub-command is a module of `posedistill/commands/` with
`main(argv) -> int`; this file only maps names to those modules, importing a module when its
command runs so that `posedistill --help` stays instant."""
from __future__ import annotations

import importlib
import os
import sys

from posedistill.errors import PosedistillError

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
    lines += ["", "`posedistill COMMAND --help` shows a command's options; `--debug` (or POSEDISTILL_DEBUG=1)",
              "shows the traceback of an error."]
    return "\n".join(lines)


def report(command: str, error: BaseException) -> int:
    """One line `posedistill COMMAND: error: ...` (and a hint line) for an expected failure; its exit code."""
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"posedistill {command}: error: {message}", file=sys.stderr)
    hint = getattr(error, "hint", "")
    if hint:
        print(f"posedistill {command}: hint: {hint}", file=sys.stderr)
    return int(getattr(error, "exit_code", 2))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("POSEDISTILL_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"posedistill: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        return int(importlib.import_module(COMMANDS[name][0]).main(rest) or 0)
    except PosedistillError as e:   # expected: bad input, config, checkpoint, stopped training
        if debug:
            if getattr(e, "details", ""):
                print(e.details, file=sys.stderr)
            raise
        return report(name, e)


if __name__ == "__main__":
    raise SystemExit(main())
