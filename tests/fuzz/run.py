"""Run one fuzzer (atheris / libFuzzer) for a number of minutes; see docs/reliability.md, "Fuzzing".

    .venv/bin/python tests/fuzz/run.py --target jpeg --minutes 15 --asan --libjpeg-src DIR
    .venv/bin/python tests/fuzz/run.py --target coco --minutes 5      # also: detections, mpii

Targets and their contract: fuzz_targets.py. Seeds: corpus/<target>/ (+ regressions/<target>/);
the growing corpus and the artifacts (crash-*, timeout-*, oom-*: inputs that broke the
contract, crashed or hung) go to --workdir (default $TMPDIR/posedistill-fuzz/<target>). A
finding stops libFuzzer; this script records it and starts it again until the time is up, then
prints the inputs executed, the findings and the coverage (libFuzzer's cov/ft at start and end,
inputs added to the corpus). With --save N the N smallest inputs that add coverage over the seeds
are copied to regressions/<target>/cov-*.

--asan (jpeg): the C decoder is rebuilt with AddressSanitizer and coverage feedback
(instrumented.py; gcc and its libasan needed) and used for both the direct calls and the wrapper;
with --libjpeg-src (a libjpeg-turbo source tree, e.g. the version the system's libjpeg is built
from) libjpeg-turbo is compiled in, instrumented, as well. Without --asan the installed extension
runs: crashes are still found, but coverage guides the Python code only.

Not collected by pytest (test_regressions.py replays the inputs instead). One process, one core.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
TARGETS = ("jpeg", "coco", "detections", "mpii")
MAX_LEN = {"jpeg": 16384, "coco": 16384, "detections": 8192, "mpii": 8192}


def _child(args: argparse.Namespace, child_argv: list[str], libfuzzer_args: list[str]) -> None:
    """The fuzzing process itself: atheris with the target's modules instrumented."""
    import atheris

    with atheris.instrument_imports(include=["posedistill"]):
        import posedistill.data.coco  # noqa: F401 - instrumented for coverage
        import posedistill.data.mpii  # noqa: F401
        import posedistill.data.topdown  # noqa: F401
        import posedistill.inference.boxes  # noqa: F401
    import fuzz_targets
    import json_mutator

    workdir = tempfile.mkdtemp(prefix="posedistill-fuzz-files-")
    band = None

    def test_one(data: bytes) -> None:
        try:
            fuzz_targets.run_target(args.target, data, workdir, band)
        except fuzz_targets.ContractViolation:      # keep the input even if libFuzzer cannot write it
            if args.artifacts:
                (Path(args.artifacts) / f"violation-{hashlib.sha1(data).hexdigest()}").write_bytes(data)
            raise

    # libFuzzer runs argv[0] again for -merge (and -fork): a launcher that starts this child again
    launcher = Path(workdir) / "fuzz-child"
    launcher.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(Path(__file__).resolve()))} "
                        f"{shlex.join(child_argv)} -- \"$@\"\n")
    launcher.chmod(0o755)
    mutator = None if args.target == "jpeg" else json_mutator.mutate
    atheris.Setup([str(launcher), *libfuzzer_args], test_one, custom_mutator=mutator)
    if args.module:            # after Setup: libFuzzer is loaded (globally) by now
        import ctypes
        import importlib.util

        spec = importlib.util.spec_from_file_location("_jpeg_band", args.module)
        band = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(band)
        posedistill.data.topdown._jpeg_band = band           # the wrapper uses it too
        fuzz_targets.COMPARE_PIXELS = not args.own_libjpeg
        core = next(Path(atheris.__file__).parent.glob("core_with_libfuzzer*.so"), None)
        register = ctypes.CDLL(args.module).pd_cov_register
        register.argtypes = [ctypes.c_char_p]
        if not register(str(core).encode() if core else None):
            print("WARNING: no libFuzzer to register C coverage with", file=sys.stderr)
    atheris.Fuzz()


def _parse(log: str) -> dict:
    """Numbers of one libFuzzer run's log."""
    execs = [int(m) for m in re.findall(r"^#(\d+)\s", log, re.M)]
    final = re.search(r"stat::number_of_executed_units: (\d+)", log)
    cov = re.findall(r"cov: (\d+) ft: (\d+)", log)
    artifacts = re.findall(r"Test unit written to (\S+)", log)
    return {"execs": int(final.group(1)) if final else (max(execs) if execs else 0),
            "cov": [(int(a), int(b)) for a, b in cov], "artifacts": artifacts}


def _libfuzzer_args(args, work: Path, seconds: int) -> list[str]:
    seeds = [str(d) for d in (HERE / "corpus" / args.target, HERE / "regressions" / args.target) if d.is_dir()]
    out = [str(work / "corpus"), *seeds, f"-max_total_time={seconds}", f"-timeout={args.timeout}",
           f"-max_len={MAX_LEN[args.target]}", "-rss_limit_mb=4096", "-print_final_stats=1",
           f"-artifact_prefix={work / 'artifacts'}/", "-use_value_profile=1"]
    if args.target == "jpeg":
        out.append(f"-dict={HERE / 'jpeg.dict'}")
    return out


def _run_once(args, work: Path, module, env: dict, seconds: int, log_path: Path):
    """One libFuzzer process until the time is up or a finding: (exit code, log numbers,
    finding artifacts, slow-unit artifacts)."""
    before = {p.name for p in args.artifacts_dir.iterdir()}
    with open(log_path, "w") as log:
        proc = subprocess.run(_child_cmd(args, module) + ["--", *_libfuzzer_args(args, work, seconds)], env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    info = _parse(log_path.read_text(errors="replace"))
    found = [a for a in info["artifacts"] if not Path(a).name.startswith("slow-unit")]
    slowest = [a for a in info["artifacts"] if a not in found]      # libFuzzer's slowest input so far
    new = sorted(p for p in args.artifacts_dir.iterdir() if p.name not in before and p.name.startswith("violation-"))
    if new and not found:           # the harness kept the input; libFuzzer died before writing it
        found = [str(p) for p in new]
    return proc.returncode, info, found, slowest


def _supervise(args: argparse.Namespace) -> int:
    work = Path(args.workdir or Path(tempfile.gettempdir()) / "posedistill-fuzz" / args.target)
    (work / "corpus").mkdir(parents=True, exist_ok=True)
    (work / "artifacts").mkdir(parents=True, exist_ok=True)
    env, module = dict(os.environ, OMP_NUM_THREADS="1"), None
    args.artifacts_dir = work / "artifacts"
    started = time.time()
    if args.asan:
        import instrumented

        module = instrumented.build(work / "asan-build", args.libjpeg_src)
        env = instrumented.asan_env(env)
        print(f"instrumented decoder: {module}" + (f" (libjpeg from {args.libjpeg_src})" if args.libjpeg_src
                                                    else " (system libjpeg, not instrumented)"))
    end = time.time() + 60 * args.minutes
    total, findings, slow, first_cov, last_cov, runs, silent = 0, [], [], None, None, 0, 0
    while (left := int(end - time.time())) > 5:
        log_path = work / f"libfuzzer-{runs}.log"
        rc, info, found, slowest = _run_once(args, work, module, env, left, log_path)
        runs += 1
        total += info["execs"]
        if info["cov"]:
            first_cov = first_cov or info["cov"][0]
            last_cov = info["cov"][-1]
        slow += [(a, log_path) for a in slowest]
        findings += [(a, log_path) for a in found]
        for a in found + slowest:
            print(f"{'FINDING' if a in found else 'SLOW INPUT'} (exit {rc}): {a}  (log: {log_path})", flush=True)
        silent = silent + 1 if rc and not found else 0
        if silent:
            findings.append((f"<exit {rc} without an artifact>", log_path))
            print(f"FINDING: libFuzzer exited {rc} without an artifact; see {log_path}", flush=True)
            if silent == 3:
                break
    args.elapsed_min = (time.time() - started) / 60
    code = _report(args, work, total, findings, slow, first_cov, last_cov)
    if args.save:
        _save_coverage_inputs(args, work, module, env)
    return code


def _report(args, work: Path, total: int, findings: list, slow: list, first_cov, last_cov) -> int:
    seeds = len(list((HERE / "corpus" / args.target).glob("*")))
    grown = len(list((work / "corpus").glob("*")))
    print(f"target {args.target}: {getattr(args, 'elapsed_min', 0):.1f} min, {total} inputs executed, "
          f"{len(findings)} finding(s), "
          f"{len(slow)} slow input(s) (libFuzzer's slow-unit; > {args.timeout} s would be a timeout finding)")
    print(f"coverage (libFuzzer cov/ft): start {first_cov}, end {last_cov}; corpus {seeds} seeds + {grown} "
          f"inputs found ({work / 'corpus'})")
    for artifact, log in findings + slow:
        print(f"  {artifact}  (log {log})")
    return 1 if findings else 0


def _child_cmd(args, module) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", "--target", args.target,
            "--timeout", str(args.timeout)] + (["--module", str(module)] if module else []) \
        + (["--artifacts", str(args.artifacts_dir)] if getattr(args, "artifacts_dir", None) else []) \
        + (["--own-libjpeg"] if args.libjpeg_src else [])


def _features(control: Path) -> tuple[list[str], dict[int, set[int]]]:
    """(file paths, features per file index) of a libFuzzer -merge_control_file."""
    lines = control.read_text().splitlines()
    n = int(lines[0])
    paths, feats = lines[2:2 + n], {}
    for line in lines[2 + n:]:
        if line.startswith("FT "):
            idx, *fs = line.split()[1:]
            feats[int(idx)] = {int(f) for f in fs}
    return paths, feats


def _save_coverage_inputs(args, work: Path, module, env: dict, max_bytes: int = 4096) -> None:
    """Copy to regressions/ the `args.save` inputs (of at most max_bytes) that add the most libFuzzer
    features, picked greedily from what a merge of seeds + found corpus attributes to each file (libFuzzer
    lists for a file the features that the smaller files before it did not reach)."""
    merged, control = work / "merged", work / "merge-control.txt"
    shutil.rmtree(merged, ignore_errors=True)
    merged.mkdir()
    seeds = HERE / "corpus" / args.target
    subprocess.run(_child_cmd(args, module) + ["--", str(merged), str(seeds), str(work / "corpus"), "-merge=1",
                                               f"-merge_control_file={control}", f"-max_len={MAX_LEN[args.target]}",
                                               f"-artifact_prefix={work / 'artifacts'}/", "-rss_limit_mb=4096",
                                               f"-timeout={args.timeout}"],
                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    paths, feats = _features(control)
    covered = set().union(*(f for i, f in feats.items() if Path(paths[i]).parent == seeds))
    candidates = {i: f for i, f in feats.items() if Path(paths[i]).parent != seeds
                  and Path(paths[i]).stat().st_size <= max_bytes}
    dest = HERE / "regressions" / args.target
    dest.mkdir(parents=True, exist_ok=True)
    for k in range(args.save):
        best = max(candidates, key=lambda i: len(candidates[i] - covered), default=None)
        if best is None or not candidates[best] - covered:
            break
        print(f"  cov-{k}: {Path(paths[best]).name} adds {len(candidates[best] - covered)} features")
        covered |= candidates.pop(best)
        shutil.copy(paths[best], dest / f"cov-{Path(paths[best]).name[:12]}")
    print(f"coverage-adding inputs copied to {dest}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    libfuzzer_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", choices=TARGETS, required=True)
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--timeout", type=int, default=10, help="seconds one input may take (a hang past it is a finding)")
    p.add_argument("--asan", action="store_true", help="jpeg: fuzz an ASan + coverage build of the C decoder")
    p.add_argument("--libjpeg-src", help="with --asan: libjpeg-turbo source tree to compile in, instrumented")
    p.add_argument("--workdir", help="corpus and artifacts (default $TMPDIR/posedistill-fuzz/TARGET)")
    p.add_argument("--save", type=int, default=0, help="copy N coverage-adding inputs to regressions/")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--module", help=argparse.SUPPRESS)
    p.add_argument("--own-libjpeg", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--artifacts", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args, argv, libfuzzer_args)
        return 0
    return _supervise(args)


if __name__ == "__main__":
    sys.exit(main())
