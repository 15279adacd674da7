"""The package's import layering, checked statically with `ast` (nothing is imported).

A module may import modules of its own layer or of any lower layer, never of a higher one; every
subpackage and top-level module must be placed in LAYERS; and no function imports a posedistill
module (a function-level import is how a cycle gets hidden instead of removed).

Two more package-wide rules are checked the same way: no function or method longer than
MAX_FUNCTION_LINES lines, and no two public module-level functions of the same name.
"""
from __future__ import annotations

import ast
from pathlib import Path, PurePosixPath

import pytest

# posedistill module (subpackage or top-level module) -> layer. Higher layers may import lower ones.
LAYERS: dict[str, int] = {
    # 4: the command line (every argparse `main`)
    "posedistill.cli": 4,
    "posedistill.commands": 4,
    # 3: loop, evaluate, run log, build, checkpoint, dist, config
    "posedistill.engine": 3,
    # 3: prediction, box sources, ONNX export, server (beside engine; only commands import it)
    "posedistill.inference": 3,
    # 2: what one training step computes
    "posedistill.tasks": 2,
    # 1: distillation terms, teacher, cache, adversarial
    "posedistill.distill": 1,
    # 0: the library
    "posedistill": 0,  # the package __init__ only
    "posedistill.losses": 0,
    "posedistill.codecs": 0,
    "posedistill.models": 0,
    "posedistill.data": 0,
    "posedistill.evaluation": 0,
    "posedistill.tools": 0,
    "posedistill.keypoints": 0,
    "posedistill.vis": 0,
    "posedistill.tensors": 0,
    "posedistill.errors": 0,
    "posedistill._jpeg_band": 0,  # C extension built from csrc/jpeg_band.c (setup.py)
}

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "posedistill"
EXTENSION_SUFFIXES = (".so", ".pyd")


def layer_of(module: str, layers: dict[str, int] = LAYERS) -> int | None:
    """Layer of a dotted module name: its longest prefix in `layers`. The bare package name only
    places the package __init__ itself, so an unplaced `pkg.new_thing` gets None."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in layers and (n > 1 or n == len(parts)):
            return layers[prefix]
    return None


def module_name(path: Path, root: Path) -> str:
    """posedistill/data/synthetic.py -> posedistill.data.synthetic; a package's __init__.py -> the package.
    `root` is the folder holding the package folder."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _known_modules(package_dir: Path) -> set[str]:
    """Every module of the package on disk: .py files, packages, compiled extensions."""
    root = package_dir.parent
    found = {module_name(p, root) for p in package_dir.rglob("*.py")}
    for p in package_dir.rglob("*"):
        if p.suffix in EXTENSION_SUFFIXES:
            found.add(module_name(p.with_name(p.name.split(".")[0] + ".py"), root))
    return found


def _imports(tree: ast.Module, module: str, is_package: bool, known: set[str],
             layers: dict[str, int]) -> list[tuple[ast.stmt, str, bool]]:
    """(node, imported module, inside a function) for every import anywhere in the module, relative
    imports resolved. `from X import name` imports the module X.name when that is a module (on disk
    or in `layers`), otherwise X."""
    out: list[tuple[ast.stmt, str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((child, alias.name, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    if child.level - 1 > len(base) - 1:
                        raise ValueError(f"{module}: relative import beyond the top-level package")
                    base = base[:len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                for alias in child.names:
                    sub = f"{target}.{alias.name}"
                    out.append((child, sub if (sub in known or sub in layers) else target, in_function))
            visit(child, inner)

    visit(tree, False)
    return out


def _top(module: str) -> str:
    """pkg.sub.mod -> pkg.sub: what LAYERS places."""
    return ".".join(module.split(".")[:2])


def scan(package_dir: Path, layers: dict[str, int] = LAYERS):
    """Walk every .py file under `package_dir`. Returns (violations, function_level, unplaced):
    violations: "<file> (layer L) imports <module> (layer M)" for every M > L;
    function_level: "<file>:<line> <module>" for every import of a package module inside a function;
    unplaced: subpackages / top-level modules (on disk or imported) that `layers` does not place."""
    root = package_dir.parent
    pkg = package_dir.name
    known = _known_modules(package_dir)
    violations: list[str] = []
    function_level: list[str] = []
    unplaced = {_top(m) for m in known if layer_of(m, layers) is None}
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        mod = module_name(path, root)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        own = layer_of(mod, layers)
        for node, target, in_function in _imports(tree, mod, path.name == "__init__.py", known, layers):
            if target != pkg and not target.startswith(pkg + "."):
                continue
            if in_function and f"{rel}:{node.lineno} {target}" not in function_level:
                function_level.append(f"{rel}:{node.lineno} {target}")
            theirs = layer_of(target, layers)
            if theirs is None:
                unplaced.add(_top(target))
            elif own is not None and theirs > own:
                violations.append(f"{rel} (layer {own}) imports {target} (layer {theirs})")
    return sorted(set(violations)), function_level, sorted(unplaced)


def _report(title: str, items: list[str]) -> str:
    return f"{len(items)} {title}:\n  " + "\n  ".join(items)


def test_no_import_from_a_higher_layer():
    violations, _, _ = scan(PACKAGE_DIR)
    assert not violations, _report("imports from a higher layer (layers: top of tests/test_layers.py)", violations)


def test_every_subpackage_and_top_level_module_has_a_layer():
    _, _, unplaced = scan(PACKAGE_DIR)
    assert not unplaced, _report("modules without a layer; add them to LAYERS in tests/test_layers.py", unplaced)


def test_no_function_level_package_imports():
    _, function_level, _ = scan(PACKAGE_DIR)
    assert not function_level, _report("imports of posedistill modules inside functions; "
                                       "import at module level (a cycle means a layering problem)", function_level)


# --- function length and public names ------------------------------------------------------------

MAX_FUNCTION_LINES = 80
# Files (relative to the folder holding the package) whose functions may be longer. The synthetic
# renderer's drawing code (posing a figure, drawing limbs, scenes and occluders) may keep long
# straight-line functions: splitting them would only scatter one drawing sequence over helpers.
LONG_FUNCTIONS_ALLOWED: tuple[str, ...] = ("posedistill/data/synth_render.py",)
# Public module-level names that several modules may define, and the files allowed to (path patterns,
# `*` within one folder). Every command module exposes `main(argv)`, the entry-point convention
# posedistill/cli.py dispatches on.
SHARED_NAMES_ALLOWED: dict[str, tuple[str, ...]] = {"main": ("posedistill/cli.py", "posedistill/commands/*.py")}


def _parsed_files(package_dir: Path):
    """(path relative to the folder holding the package, as posix, parsed module) for every .py file."""
    root = package_dir.parent
    for path in sorted(package_dir.rglob("*.py")):
        yield path.relative_to(root).as_posix(), ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _functions(node: ast.AST, prefix: str = ""):
    """(qualified name, node) for every function and method under `node`, nested ones included."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + child.name, child
            yield from _functions(child, f"{prefix}{child.name}.")
        elif isinstance(child, ast.ClassDef):
            yield from _functions(child, f"{prefix}{child.name}.")
        else:
            yield from _functions(child, prefix)


def _module_level_functions(body: list[ast.stmt]):
    """Function names defined at module level, including under a module-level if / try / with."""
    for stmt in body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield stmt.name
        elif isinstance(stmt, (ast.If, ast.Try, ast.With)):
            for block in ("body", "orelse", "finalbody"):
                yield from _module_level_functions(getattr(stmt, block, []))
            for handler in getattr(stmt, "handlers", []):
                yield from _module_level_functions(handler.body)


def long_functions(package_dir: Path, max_lines: int = MAX_FUNCTION_LINES,
                   allowed: tuple[str, ...] = LONG_FUNCTIONS_ALLOWED) -> list[str]:
    """"<file>:<line> <qualified name> (<N> lines)" for every function or method of more than
    `max_lines` lines (end_lineno - lineno + 1: from the `def` line, decorators not counted)."""
    found = []
    for rel, tree in _parsed_files(package_dir):
        if rel in allowed:
            continue
        for name, node in _functions(tree):
            n = node.end_lineno - node.lineno + 1
            if n > max_lines:
                found.append(f"{rel}:{node.lineno} {name} ({n} lines)")
    return found


def _allowed_to_share(name: str, rel: str, allowed: dict[str, tuple[str, ...]]) -> bool:
    return any(PurePosixPath(rel).match(pattern) for pattern in allowed.get(name, ()))


def duplicate_public_functions(package_dir: Path,
                               allowed: dict[str, tuple[str, ...]] = SHARED_NAMES_ALLOWED) -> list[str]:
    """"<name>: <file>, <file>, ..." for every public (no leading underscore) module-level function
    name defined in more than one file, unless every one of those files may define it (`allowed`)."""
    files: dict[str, list[str]] = {}
    for rel, tree in _parsed_files(package_dir):
        for name in dict.fromkeys(_module_level_functions(tree.body)):
            if not name.startswith("_"):
                files.setdefault(name, []).append(rel)
    return [f"{name}: {', '.join(where)}" for name, where in sorted(files.items())
            if len(where) > 1 and not all(_allowed_to_share(name, rel, allowed) for rel in where)]


def test_no_function_longer_than_the_limit():
    found = long_functions(PACKAGE_DIR)
    assert not found, _report(f"functions longer than {MAX_FUNCTION_LINES} lines; split them "
                              "(exempt files: LONG_FUNCTIONS_ALLOWED in tests/test_layers.py)", found)


def test_no_two_public_module_functions_share_a_name():
    found = duplicate_public_functions(PACKAGE_DIR)
    assert not found, _report("public module-level function names defined in more than one module; rename "
                              "one or make it private (allowed: SHARED_NAMES_ALLOWED in tests/test_layers.py)", found)


DISTRIBUTED_ALLOWED = ("posedistill/engine/dist.py",)


def torch_distributed_importers(package_dir: Path, allowed: tuple[str, ...] = DISTRIBUTED_ALLOWED) -> list[str]:
    """Files other than `allowed` that import torch.distributed (or torch.nn.parallel's DDP)."""
    found = []
    for rel, tree in _parsed_files(package_dir):
        if rel in allowed:
            continue
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
                     if isinstance(node, ast.ImportFrom) else [])
            if any(n.startswith(("torch.distributed", "torch.nn.parallel")) for n in names):
                found.append(f"{rel}:{node.lineno}")
    return found


def test_only_engine_dist_imports_torch_distributed():
    """DDP in one place: every process-group call and every DDP wrapper goes through engine/dist.py."""
    found = torch_distributed_importers(PACKAGE_DIR)
    assert not found, _report("imports of torch.distributed / DDP outside engine/dist.py", found)


# --- the checker itself, on a synthetic tree ------------------------------------------------------

TOY_LAYERS = {"toy": 0, "toy.low": 0, "toy.mid": 1, "toy.top": 2, "toy.util": 0}


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root / "toy"


def test_checker_reports_upward_imports_and_passes_downward_ones(tmp_path):
    pkg = _write(tmp_path, {
        "toy/__init__.py": "",
        "toy/util.py": "import os\n",
        "toy/low/__init__.py": "from toy.util import x\n",                      # 0 -> 0: fine
        "toy/low/a.py": "from ..mid import b\n",                                 # 0 -> 1 (relative)
        "toy/low/c.py": "def f():\n    import toy.top.d\n",                      # 0 -> 2, in a function
        "toy/mid/__init__.py": "",
        "toy/mid/b.py": "from toy.low import a\nfrom . import e\nimport numpy\n",  # down / same / other
        "toy/mid/e.py": "from toy import top\n",                                 # 1 -> 2 via `from pkg import sub`
        "toy/top/__init__.py": "",
        "toy/top/d.py": "from toy.mid.b import thing\nfrom toy import util\nfrom toy import VERSION\n",
    })
    violations, function_level, unplaced = scan(pkg, TOY_LAYERS)
    assert violations == [
        "toy/low/a.py (layer 0) imports toy.mid.b (layer 1)",
        "toy/low/c.py (layer 0) imports toy.top.d (layer 2)",
        "toy/mid/e.py (layer 1) imports toy.top (layer 2)",
    ]
    assert function_level == ["toy/low/c.py:2 toy.top.d"]
    assert unplaced == []


def test_checker_resolves_relative_imports_to_submodules(tmp_path):
    pkg = _write(tmp_path, {
        "toy/__init__.py": "from .top import d\n",                  # 0 -> 2 from the package __init__
        "toy/mid/__init__.py": "from . import b\nfrom .. import top\n",
        "toy/mid/b.py": "",
        "toy/top/__init__.py": "",
        "toy/top/d.py": "",
    })
    violations, _, _ = scan(pkg, TOY_LAYERS)
    assert violations == ["toy/__init__.py (layer 0) imports toy.top.d (layer 2)",
                          "toy/mid/__init__.py (layer 1) imports toy.top (layer 2)"]


def test_checker_reports_unplaced_modules(tmp_path):
    pkg = _write(tmp_path, {
        "toy/__init__.py": "",
        "toy/low/__init__.py": "import toy.ghost\n",   # imported but absent (e.g. an unbuilt extension)
        "toy/newpkg/__init__.py": "",
        "toy/newpkg/x.py": "",
        "toy/loose.py": "",
    })
    _, _, unplaced = scan(pkg, TOY_LAYERS)
    assert unplaced == ["toy.ghost", "toy.loose", "toy.newpkg"]


def _body(n: int, indent: str = "    ") -> str:
    """A function body that makes a `def` of exactly n lines."""
    return f"{indent}x = 1\n" * (n - 2) + f"{indent}return x\n"


def test_checker_reports_long_functions_and_methods(tmp_path):
    pkg = _write(tmp_path, {
        "toy/__init__.py": "",
        "toy/ok.py": "def at_limit():\n" + _body(80),
        "toy/long.py": ("import os\n\n@staticmethod\ndef too_long():\n" + _body(81)
                        + "\nclass A:\n    async def method(self):\n" + _body(90, " " * 8)),
        "toy/render.py": "def drawing():\n" + _body(200),     # exempt
    })
    assert long_functions(pkg, 80, allowed=("toy/render.py",)) == [
        "toy/long.py:4 too_long (81 lines)",
        "toy/long.py:87 A.method (90 lines)",
    ]
    assert long_functions(pkg, 80, allowed=())[-1] == "toy/render.py:1 drawing (200 lines)"
    assert long_functions(pkg, 79, allowed=("toy/render.py",))[0] == "toy/long.py:4 too_long (81 lines)"
    assert "toy/ok.py:1 at_limit (80 lines)" in long_functions(pkg, 79, allowed=())


def test_checker_reports_public_functions_sharing_a_name(tmp_path):
    pkg = _write(tmp_path, {
        "toy/__init__.py": "",
        "toy/a.py": ("def helper():\n    pass\ndef _private():\n    pass\n"
                     "class C:\n    def method(self):\n        pass\n"),   # a method is not module-level
        "toy/b.py": ("def _private():\n    pass\ndef method():\n    pass\n"
                     "try:\n    def helper():\n        pass\nexcept ImportError:\n    def helper():\n        pass\n"),
        "toy/cli.py": "def main(argv=None):\n    pass\n",
        "toy/commands/__init__.py": "",
        "toy/commands/run.py": "def main(argv=None):\n    pass\ndef parse(text):\n    pass\n",
        "toy/commands/show.py": "def main(argv=None):\n    pass\n",
        "toy/commands/deep/x.py": "def parse(text):\n    pass\n",
    })
    allowed = {"main": ("toy/cli.py", "toy/commands/*.py"), "parse": ("toy/commands/*.py",)}
    assert duplicate_public_functions(pkg, allowed) == [
        "helper: toy/a.py, toy/b.py",
        "parse: toy/commands/deep/x.py, toy/commands/run.py",   # `*` does not reach into subfolders
    ]
    _write(tmp_path, {"toy/engine.py": "def main():\n    pass\n"})   # a `main` outside the allowed files
    assert duplicate_public_functions(pkg, allowed)[1] == \
        "main: toy/cli.py, toy/commands/run.py, toy/commands/show.py, toy/engine.py"


@pytest.mark.parametrize("module, layer", [("posedistill", 0), ("posedistill.cli", 4), ("posedistill.engine.loop", 3),
                                           ("posedistill.data.synthetic", 0), ("posedistill.commands.data", 4),
                                           ("posedistill.newthing", None), ("numpy", None)])
def test_layer_of(module, layer):
    assert layer_of(module) == layer


def test_checker_reports_torch_distributed_imports(tmp_path):
    pkg = _write(tmp_path, {"toy/__init__.py": "", "toy/a.py": "import torch.distributed as d\n",
                            "toy/b.py": "from torch.nn.parallel import DistributedDataParallel\n",
                            "toy/c.py": "import torch.nn as nn\n"})
    assert torch_distributed_importers(pkg, allowed=()) == ["toy/a.py:1", "toy/b.py:1"]
