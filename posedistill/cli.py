"""The `posedistill` command. Each sub-command lives in its own module as `main(argv) -> int`;
this file only maps names to those functions, importing a module when its command runs so that
`posedistill --help` stays instant."""
from __future__ import annotations

import importlib
import sys

# command -> (module, function, one-line help). Flat and explicit: grep finds every entry point.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "data": ("posedistill.data.synthetic", "main", "synthetic data: `posedistill data synth --out DIR ...`"),
    "train": ("posedistill.engine.train", "main_train", "train a model from a YAML recipe"),
    "eval": ("posedistill.engine.train", "main_eval", "evaluate a checkpoint (COCO AP / PCKh)"),
    "distill": ("posedistill.distill.task", "main", "train a student distilled from a teacher"),
    "ablate": ("posedistill.distill.ablate", "main", "run the distillation ablation over seeds"),
    "demo": ("posedistill.engine.demo", "main", "main job on synthetic data: teacher, student, distilled student"),
    "profile": ("posedistill.tools.profile", "main", "parameters, GMACs and images/s of a model"),
    "convert": ("posedistill.models.convert", "main", "convert an MMPose checkpoint to the official layout"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: posedistill COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
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
    module, func, _ = COMMANDS[name]
    return int(getattr(importlib.import_module(module), func)(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
