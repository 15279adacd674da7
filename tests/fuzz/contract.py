"""The fuzzers' contract checks that need no more than the C extension (no torch, no OpenCV).

`python contract.py FILE...` replays jpeg-target inputs through posedistill._jpeg_band.decode
alone: test_regressions.py runs it in a subprocess, so that a crash of the C code cannot take
pytest down with it, and it starts in a fraction of a second. See fuzz_targets.py for the targets.
"""
from __future__ import annotations

import traceback
from pathlib import Path

MAX_MESSAGE = 1000          # an error message longer than this is not "one readable line"
_DENOMS = (1, 2, 4, 8, 1, 2, 4, 3)


class ContractViolation(AssertionError):
    """A target broke its contract (wrong exception type, bad message, malformed result)."""



def expect(fn, allowed: tuple[type, ...], path: str | None, what: str):
    """fn()'s result, or None when it raised an allowed exception with a clean message."""
    try:
        return fn()
    except allowed as e:
        msg = str(e)
        if path is not None and path not in msg:
            raise ContractViolation(f"{what}: {type(e).__name__} does not name the file {path}: {msg[:300]!r}")
        if "\n" in msg or len(msg) > MAX_MESSAGE:
            raise ContractViolation(f"{what}: {type(e).__name__} message is not one short line "
                                    f"({len(msg)} chars): {msg[:300]!r}")
        return None
    except ContractViolation:
        raise
    except Exception as e:      # noqa: BLE001 - the point: any other type is a finding
        frame = traceback.extract_tb(e.__traceback__)[-1]
        raise ContractViolation(f"{what}: {type(e).__name__} ({e!s:.200}) raised at "
                                f"{Path(frame.filename).name}:{frame.lineno} {frame.name}") from e


def make_jpeg_input(jpeg: bytes, factor: int, y0: int, y1: int) -> bytes:
    """Fuzz input for the jpeg target (see the module docstring)."""
    return bytes([_DENOMS.index(factor)]) + int(y0).to_bytes(2, "little", signed=True) \
        + int(y1).to_bytes(2, "little", signed=True) + jpeg


def jpeg_params(data: bytes) -> tuple[int, int, int, bytes]:
    """(scale denominator, y0, y1, JPEG bytes) of a jpeg-target input."""
    head = data[:5].ljust(5, b"\0")
    return (_DENOMS[head[0] & 7], int.from_bytes(head[1:3], "little", signed=True),
            int.from_bytes(head[3:5], "little", signed=True), data[5:])


def clip_band(y0: int, y1: int, height: int) -> tuple[int, int]:
    """The band csrc/jpeg_band.c decodes for a request [y0, y1) (at least one row)."""
    y1, y0 = min(y1, height), max(min(y0, height - 1), 0)
    return y0, max(y1, y0 + 1)


def check_band(band, data: bytes):
    """The C extension called directly: a well-formed band, or ValueError. Returns the result."""
    factor, y0, y1, jpeg = jpeg_params(data)
    out = expect(lambda: band.decode(jpeg, factor, y0, y1), (ValueError,), None, "_jpeg_band.decode")
    if factor == 3 and out is not None:
        raise ContractViolation("_jpeg_band.decode accepted scale_denom 3")
    if out is None:
        return None
    pixels, width, height, top, rows = out
    if not (isinstance(pixels, bytearray) and width > 0 and height > 0 and len(pixels) == width * height * 4):
        raise ContractViolation(f"_jpeg_band.decode: {len(pixels)} bytes for {width}x{height}")
    if (top, top + rows) != clip_band(y0, y1, height):
        raise ContractViolation(f"_jpeg_band.decode: rows [{top}, {top + rows}) for a request [{y0}, {y1}) "
                                f"of a {height}-row image")
    return out



if __name__ == "__main__":       # python contract.py FILE...: one line per violation, exit 0 unless it crashes
    import sys

    from posedistill import _jpeg_band

    bad = 0
    for name in sys.argv[1:]:
        print(f"RUN {name}", flush=True)
        try:
            check_band(_jpeg_band, Path(name).read_bytes())
        except ContractViolation as e:
            bad += 1
            print(f"VIOLATION {name}: {e}", flush=True)
    print(f"replayed {len(sys.argv) - 1} input(s) through _jpeg_band.decode: {bad} violation(s)")
