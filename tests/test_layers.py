"""The layers of the code base, lowest first. A module imports from its own package or from a
lower layer, never from a higher one, and never from another package of its own layer (the
method families are independent of each other). Imports inside functions count too.

  methods/core          arch, engine, hooks, calibration and batching, surgery, gates, hardware
                        ceilings and the timer: the ground every other package stands on
  methods/training      the one trainer and the shared training objectives
  methods/distillation  the distillation engine (feature taps, losses, layer matching), which the
                        QAT, low-rank and pruning methods distil with
  method families       pruning, quantization, lowrank, adaptors
  kernels               kernel formats, conversion, timing (read a method's stored codes)
  eval                  tasks, the pipeline, records
  tables                tables, plots, verify, merge, remeasure, reseed (read records)
  scripts               the command lines (anything)

The method registry finds the method modules by walking the `methods` package with importlib
(plugin discovery), not by importing them: it is not an import statement."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

LAYERS: list[tuple[str, ...]] = [
    ("methods/core",),
    ("methods/training",),
    ("methods/distillation",),
    ("methods/pruning", "methods/quantization", "methods/lowrank", "methods/adaptors"),
    ("kernels",),
    ("eval",),
    ("tables",),
    ("scripts",),
]
LEVEL = {package: i for i, layer in enumerate(LAYERS) for package in layer}


def package_of(dotted_or_path: str) -> str | None:
    """The layered package a module belongs to: `methods.pruning.trained.gates` → methods/pruning."""
    parts = dotted_or_path.replace("/", ".").split(".")
    for n in (2, 1):
        key = "/".join(parts[:n])
        if key in LEVEL:
            return key
    return None


def imports_of(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
    return out


def upward_imports(root: Path) -> list[str]:
    bad = []
    for path in sorted(root.glob("**/*.py")):
        rel = path.relative_to(root).as_posix()
        src = package_of(rel.removesuffix(".py"))
        if src is None or rel.startswith(".venv/"):
            continue
        for line, module in imports_of(path):
            dst = package_of(module)
            if dst is None or dst == src:
                continue
            if LEVEL[dst] > LEVEL[src] or LEVEL[dst] == LEVEL[src]:
                bad.append(f"{rel}:{line} imports {module} ({dst} is {'above' if LEVEL[dst] > LEVEL[src] else 'beside'} {src})")
    return bad


def test_no_import_runs_up_the_layers_or_across_the_method_families():
    bad = upward_imports(ROOT)
    assert not bad, "\n".join(bad)


def test_the_check_sees_an_upward_and_a_sideways_import(tmp_path):
    (tmp_path / "methods" / "core").mkdir(parents=True)
    (tmp_path / "methods" / "pruning").mkdir(parents=True)
    (tmp_path / "methods" / "core" / "x.py").write_text("def f():\n    from eval.records import RecordStore\n")
    (tmp_path / "methods" / "pruning" / "y.py").write_text("from methods.lowrank.svd import SVD\n"
                                                          "from methods.core.arch import family_of\n")
    assert upward_imports(tmp_path) == [
        "methods/core/x.py:2 imports eval.records (eval is above methods/core)",
        "methods/pruning/y.py:1 imports methods.lowrank.svd (methods/lowrank is beside methods/pruning)"]
