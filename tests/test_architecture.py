"""The package's layering, read from its source: no import cycles (function-local imports
included), no bpy or torch where the layers forbid them, and short modules.

- core/ is plain Python and numpy: it imports nothing of ours but core;
- client/ speaks to the worker without bpy: it imports core only, and no heavy library;
- worker/ never imports bpy, nor the Blender side or the client;
- batch/ runs a spec's jobs on many workers (local ones, or Ray actors) without Blender: it
  imports core, client and worker, never bpy; nothing else imports it;
- blender/ never imports torch, diffusers, transformers, the worker or batch/;
- a function-local import is only for a heavy or optional library (or a module of ours that needs
  one at import time), with a comment saying why, never to dodge a cycle.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "shape_e_blender"
MAX_LINES = 400
HEAVY = {
    "bpy",
    "addon_utils",
    "mathutils",
    "torch",
    "diffusers",
    "transformers",
    "tokenizers",
    "accelerate",
    "safetensors",
    "huggingface_hub",
    "skimage",
    "scipy",
    "trimesh",
    "PIL",
    "tqdm",
    "filelock",
    "httpx",
    "httpx2",
    "ray",
    "xatlas",
    "fast_simplification",
}
BLENDER_ONLY = {"bpy", "addon_utils", "mathutils"}
TORCH_STACK = {"torch", "diffusers", "transformers", "tokenizers", "accelerate"}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. shape_e_blender.worker.engine
    target: str  # what it imports: an absolute module name
    line: int
    local: bool  # inside a function
    commented: bool  # a comment on its line or the line above


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[Import]:
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source)
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*up, *([base] if base else [])])
                # "from . import x" imports the submodule x; "from .m import f" imports m.
                targets = [
                    f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base
                    for a in child.names
                ]
            for target in targets:
                text = lines[child.lineno - 1]
                above = lines[child.lineno - 2] if child.lineno > 1 else ""
                commented = "#" in text or above.strip().startswith("#")
                found.append(Import(name, target, child.lineno, inside, commented))
            visit(child, inside)

    visit(tree, False)
    return [i for i in found if not _type_checking_only(tree, i.line)]


def _is_module(name: str) -> bool:
    if not name.startswith("shape_e_blender"):
        return False
    rel = Path(*name.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def _type_checking_only(tree: ast.Module, line: int) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            end = node.end_lineno or node.lineno
            if node.lineno <= line <= end:
                return True
    return False


MODULES = sorted(PACKAGE.rglob("*.py"))
IMPORTS = [imp for path in MODULES for imp in _imports(path)]


def _ours(target: str) -> bool:
    return target == "shape_e_blender" or target.startswith("shape_e_blender.")


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _top(target: str) -> str:
    return target.split(".")[0]


def _heavy_at_import(module: str, seen: frozenset[str] = frozenset()) -> bool:
    """Whether importing ``module`` imports a heavy library (directly or through our modules)."""
    for imp in IMPORTS:
        if imp.module != module or imp.local:
            continue
        if _top(imp.target) in HEAVY:
            return True
        if (
            _ours(imp.target)
            and imp.target not in seen
            and _heavy_at_import(imp.target, seen | {module})
        ):
            return True
    return False


def test_the_scan_sees_the_whole_package():
    names = {_module_name(p) for p in MODULES}
    assert {"shape_e_blender.core.params", "shape_e_blender.client.client"} <= names
    # Function-local imports are read too (register() imports the Blender side late).
    assert any(i.local and i.target == "shape_e_blender.blender" for i in IMPORTS)
    relative = next(i for i in IMPORTS if i.module == "shape_e_blender.client.client")
    assert _ours(relative.target) or not relative.target.startswith(".")


def test_no_import_cycles_local_imports_included():
    graph: dict[str, set[str]] = {}
    for imp in IMPORTS:
        if _ours(imp.target) and imp.target != imp.module:
            graph.setdefault(imp.module, set()).add(imp.target)
    # A package's __init__ is imported with each of its modules: it depends on what it imports,
    # and a module does not depend on its own package's __init__ unless it imports it.
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)
    assert cycles == []


@pytest.mark.parametrize(
    ("layer", "forbidden_ours", "forbidden_libs"),
    [
        ("core", {"client", "worker", "batch", "blender"}, HEAVY),
        ("client", {"worker", "batch", "blender"}, HEAVY),
        ("worker", {"client", "batch", "blender"}, BLENDER_ONLY),
        ("batch", {"blender"}, BLENDER_ONLY),
        ("blender", {"worker", "batch"}, TORCH_STACK),
    ],
)
def test_each_layer_imports_only_what_it_may(layer, forbidden_ours, forbidden_libs):
    bad = [
        f"{i.module}:{i.line} imports {i.target}"
        for i in IMPORTS
        if _layer(i.module) == layer
        and (
            (_ours(i.target) and _layer(i.target) in forbidden_ours)
            or _top(i.target) in forbidden_libs
        )
    ]
    assert bad == []


def test_the_package_root_imports_no_bpy_at_import_time():
    # The worker's environment runs ``-m shape_e_blender.worker``: it has no Blender.
    assert not _heavy_at_import("shape_e_blender")
    assert not _heavy_at_import("shape_e_blender.client.client")
    assert not _heavy_at_import("shape_e_blender.core.jobdir")


def test_local_imports_are_for_heavy_libraries_only_and_say_why():
    bad = []
    for i in IMPORTS:
        if not i.local:
            continue
        heavy = _top(i.target) in HEAVY or (_ours(i.target) and _heavy_at_import(i.target))
        stdlib = not _ours(i.target) and _top(i.target) in sys.stdlib_module_names
        if stdlib:
            bad.append(f"{i.module}:{i.line} imports the standard library's {i.target} late")
        elif not heavy:
            bad.append(f"{i.module}:{i.line} imports {i.target} inside a function")
    assert bad == []


def test_heavy_local_imports_carry_a_comment_saying_why():
    # One comment per function covers the imports right below it.
    bad = [
        f"{i.module}:{i.line} imports {i.target}"
        for i in IMPORTS
        if i.local and not i.commented and not _covered(i)
    ]
    assert bad == []


def _covered(imp: Import) -> bool:
    """An import in a run of imports whose first one is commented."""
    run = sorted(
        (i for i in IMPORTS if i.module == imp.module and i.local and i.line <= imp.line),
        key=lambda i: i.line,
    )
    line = imp.line
    for i in reversed(run):
        if i.line < line - 1:
            return False
        if i.commented:
            return True
        line = i.line
    return False


def test_no_module_is_longer_than_400_lines():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in MODULES
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}
