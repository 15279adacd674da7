"""Build posedistill._jpeg_band with AddressSanitizer and coverage feedback for the fuzzer.

`build(out_dir, libjpeg_src)` compiles csrc/jpeg_band.c (and, when `libjpeg_src` names a
libjpeg-turbo source tree, libjpeg-turbo itself, statically, without SIMD so that all of it is C
the compiler instruments) with gcc's `-fsanitize=address -fsanitize-coverage=trace-pc,trace-cmp`,
plus sancov_shim.c, which turns gcc's trace-pc calls into libFuzzer's 8-bit edge counters.
Without `libjpeg_src` the module links the system libjpeg: coverage and ASan then see the
extension's own code only.

The result is `out_dir/_jpeg_band.<abi>.so`. It must be loaded in a Python started with the
ASan runtime preloaded (`asan_env()`); `run.py --asan` does both. Rebuilt only when a source is
newer than the module. Nothing here is collected by pytest.
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
EXT_SOURCE = REPO / "posedistill" / "csrc" / "jpeg_band.c"
SHIM = HERE / "sancov_shim.c"
SAN_FLAGS = ["-fsanitize=address", "-fsanitize-coverage=trace-pc,trace-cmp", "-fno-omit-frame-pointer",
             "-g", "-O1"]


def libasan() -> str:
    """Path of gcc's ASan runtime (to LD_PRELOAD into Python)."""
    out = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True, check=True)
    path = out.stdout.strip()
    if not os.path.isabs(path) or not os.path.exists(path):
        raise RuntimeError("gcc has no libasan.so (Debian: libasan8 / gcc)")
    return os.path.realpath(path)


def asan_env(base: dict | None = None) -> dict:
    """Environment for a Python that loads the instrumented module."""
    env = dict(os.environ if base is None else base)
    # libstdc++ too: ASan intercepts __cxa_throw, and finds no real one to call when OpenCV throws if
    # libstdc++ was not loaded at start-up (python itself does not link it)
    cxx = subprocess.run(["gcc", "-print-file-name=libstdc++.so.6"], capture_output=True, text=True).stdout.strip()
    env["LD_PRELOAD"] = libasan() + (f":{os.path.realpath(cxx)}" if os.path.isabs(cxx) else "")
    # Python itself leaks by design at exit; stop on the first error; keep libFuzzer's own handlers
    env["ASAN_OPTIONS"] = ("detect_leaks=0:abort_on_error=1:symbolize=1:allocator_may_return_null=1:"
                           "handle_segv=1:handle_abort=1:detect_stack_use_after_return=0")
    return env


def _run(cmd: list[str], cwd: Path | None = None, log: Path | None = None) -> None:
    with open(log or os.devnull, "ab") as f:
        r = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode:
        raise RuntimeError(f"command failed ({r.returncode}): {' '.join(map(str, cmd))}" +
                           (f"; see {log}" if log else ""))


def _build_libjpeg(src: Path, out_dir: Path, log: Path) -> Path:
    """Static libjpeg.a of the source tree `src`, instrumented, in out_dir/libjpeg."""
    build = out_dir / "libjpeg"
    lib = build / "libjpeg.a"
    if lib.exists():
        return build
    build.mkdir(parents=True, exist_ok=True)
    flags = " ".join(SAN_FLAGS + ["-fPIC"])
    _run(["cmake", str(src), "-DWITH_SIMD=0", "-DENABLE_SHARED=0", "-DENABLE_STATIC=1", "-DWITH_TURBOJPEG=0",
          "-DCMAKE_BUILD_TYPE=Debug", "-DCMAKE_TRY_COMPILE_TARGET_TYPE=STATIC_LIBRARY",
          "-DCMAKE_POSITION_INDEPENDENT_CODE=1", f"-DCMAKE_C_FLAGS={flags}"],
         cwd=build, log=log)
    _run(["cmake", "--build", ".", "--target", "jpeg-static", "-j", "1"], cwd=build, log=log)
    if not lib.exists():
        raise RuntimeError(f"libjpeg build produced no {lib}; see {log}")
    return build


def build(out_dir: str | os.PathLike, libjpeg_src: str | os.PathLike | None = None) -> Path:
    """Path of the instrumented extension module (built if missing or older than its sources)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    target = out_dir / f"_jpeg_band{suffix}"
    sources = [EXT_SOURCE, SHIM]
    if target.exists() and all(target.stat().st_mtime > s.stat().st_mtime for s in sources):
        return target
    log = out_dir / "build.log"
    includes = ["-I", sysconfig.get_paths()["include"]]
    link = ["-ljpeg"]
    if libjpeg_src:
        build_dir = _build_libjpeg(Path(libjpeg_src).resolve(), out_dir, log)
        includes = ["-I", str(build_dir), "-I", str(Path(libjpeg_src).resolve())] + includes
        link = [str(build_dir / "libjpeg.a")]
    shim_obj = out_dir / "sancov_shim.o"
    _run(["gcc", "-c", "-fPIC", "-O2", str(SHIM), "-o", str(shim_obj)], log=log)
    _run(["gcc", "-shared", "-fPIC", *SAN_FLAGS, *includes, str(EXT_SOURCE), str(shim_obj), *link, "-ldl",
          "-Wl,--exclude-libs,ALL",
          "-o", str(target)], log=log)
    return target


if __name__ == "__main__":
    print(build(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
