"""The expected failures: what a user can fix (a file, a field, a recipe key, a checkpoint, a missing
package), as one error hierarchy.

`posedistill/cli.py` catches `PosedistillError` once and prints `posedistill COMMAND: error: <message>`
(and `hint: ...` when the error carries one), exit code 2; `--debug` or `POSEDISTILL_DEBUG=1` shows the
traceback instead. Anything else is a bug and keeps its traceback. Each class also derives from the
built-in type code used to raise before (ValueError, OSError, ...), so `except ValueError` still works.
"""
from __future__ import annotations


class PosedistillError(Exception):
    """An expected failure; the message says what, where and what was expected."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


class InputError(PosedistillError, ValueError):
    """A bad value in a file, a recipe, a command-line option or an annotation."""


class UnknownNameError(InputError, KeyError):
    """An unknown model, keypoint set, term or command-line choice; the message lists the known ones."""

    def __str__(self) -> str:   # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MissingFileError(PosedistillError, FileNotFoundError):
    """A file the command was told to read is not there."""


class CheckpointError(PosedistillError, RuntimeError):
    """A checkpoint that cannot be read, was refused, or does not fit the model asked for."""


class TrainingStopped(PosedistillError, RuntimeError):
    """Training cannot go on (a non-finite loss, too many unreadable samples, a failed worker); a
    checkpoint to resume from is named in the message where one exists."""


class NonFiniteLossError(TrainingStopped, FloatingPointError):
    """The loss became NaN or infinite; the message names the loss parts."""


class DiskFullError(PosedistillError, OSError):
    """No space left while writing; the previous file is kept."""


class DependencyError(PosedistillError, ImportError):
    """An optional package this command needs is not installed."""


class Interrupted(PosedistillError):
    """SIGINT (Ctrl-C) or SIGTERM stopped training at an iteration boundary; the message names the
    checkpoint it saved. `exit_code` is what the process should exit with: 128 + the signal number
    (130 for SIGINT, 143 for SIGTERM), as a shell reports a process killed by that signal."""

    def __init__(self, message: str, exit_code: int, hint: str = ""):
        super().__init__(message, hint)
        self.exit_code = int(exit_code)
