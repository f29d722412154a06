"""The package's layering, read from every module's imports (with `ast`, so imports inside
functions count too). Lower layers never import higher ones:

    geometry <- diffusion <- model <- training <- inference <- evaluation <- cli <- entry points
                     data <-'                         reference <-'

geometry/ and diffusion/ are pure functions: jax, numpy and a few pure standard modules only
(no Flax, no I/O). Nothing in the package imports the repository's top-level files
(configs.py, train.py, sample.py) or benchmarks/ and tests/. See docs/architecture.md.
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "nanoaf2_jax"

_BASE = {"geometry", "diffusion", "model", "data", "compilation"}
ALLOWED = {
    # subpackage: the subpackages it may import (besides itself)
    "geometry": set(),
    "compilation": set(),
    "diffusion": {"geometry"},
    "model": {"geometry", "diffusion"},
    "data": {"geometry"},
    "training": _BASE,
    "inference": _BASE | {"training"},
    "evaluation": _BASE | {"training", "inference"},
    "reference": _BASE | {"training", "inference"},
    "cli": _BASE | {"training", "inference", "evaluation", "reference"},
    # entry points: python -m nanoaf2_jax.evaluate / .compare / .parity / .prepare / .fit_identity_prior
    "evaluate": {"cli"},
    "prepare": {"cli"},
    "compare": {"cli"},
    "parity": {"reference"},
    "fit_identity_prior": {"cli"},
}
PURE = ("geometry", "diffusion")
PURE_IMPORTS = {"__future__", "math", "typing", "functools", "dataclasses", "collections", "jax", "numpy"}
TOP_LEVEL_FILES = {"__init__.py", "evaluate.py", "compare.py", "parity.py", "prepare.py",
                   "fit_identity_prior.py"}


def module_name(path: Path, root: Path) -> tuple[str, bool]:
    """('nanoaf2_jax.model.layers', is_package) of a file under root/nanoaf2_jax."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join(parts), is_package


def imports_of(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative ones resolved;
    `from X import a` yields X.a as well as X (a may be a submodule)."""
    name, is_package = module_name(path, root)
    package = name.split(".") if is_package else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level > len(package):
                    found.append((node.lineno, "<relative import above the package>"))
                    continue
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("__import__", "import_module")))):
            found.append((node.lineno, node.args[0].value))
    return found


def layer_of(module: str) -> str | None:
    """'model' for nanoaf2_jax.model.layers, None for the package's own __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def violations(root: Path = REPO, package: str = PACKAGE) -> list[str]:
    """Every import that breaks the layering, as 'file:line: what' (the first per line)."""
    problems = {}
    repo_top = {p.stem for p in root.glob("*.py")} | {"benchmarks", "tests", "helpers"}
    for path in sorted((root / package).rglob("*.py")):
        where = path.relative_to(root)
        name, _ = module_name(path, root)
        layer = layer_of(name)
        if path.parent == root / package and path.name not in TOP_LEVEL_FILES:
            problems[where, 0] = f"{where}: a module at the package top level; put it in a subpackage"
        for line, target in imports_of(path, root):
            top = target.split(".")[0]
            problem = None
            if top.startswith("<"):
                problem = f"{where}:{line}: {target}"
            elif top in repo_top:
                problem = f"{where}:{line}: imports {target}, outside the package"
            elif top == package:
                other = layer_of(target)
                if layer is None or other is None or other == layer:
                    continue
                if layer not in ALLOWED:
                    problem = f"{where}: subpackage {layer!r} has no place in the layering"
                elif other not in ALLOWED[layer] and other in ALLOWED:
                    problem = f"{where}:{line}: {layer}/ imports {target} ({other}/ is not below it)"
            elif layer in PURE and top not in PURE_IMPORTS:
                problem = f"{where}:{line}: {layer}/ is pure but imports {target}"
            if problem:
                problems.setdefault((where, line), problem)
    return list(problems.values())


def test_the_package_keeps_its_layering():
    assert violations() == []


def test_the_pure_subpackages_and_every_layer_exist():
    for layer in ALLOWED:
        assert (REPO / PACKAGE / layer).is_dir() or (REPO / PACKAGE / f"{layer}.py").is_file(), layer


@pytest.mark.parametrize("layer, source, complaint", [
    ("geometry", "import flax.linen as nn\n", "geometry/ is pure but imports flax.linen"),
    ("diffusion", "import os\n", "diffusion/ is pure but imports os"),
    ("geometry", "from ..model import layers\n", "geometry/ imports nanoaf2_jax.model"),
    ("model", "def f():\n    from ..training.train_step import loss_fn\n", "model/ imports nanoaf2_jax.training"),
    ("inference", "from nanoaf2_jax.evaluation.metrics import ca_rmsd\n", "inference/ imports nanoaf2_jax.evaluation"),
    ("training", "from configs import get_preset\n", "imports configs, outside the package"),
    ("data", "import importlib\nimportlib.import_module('configs')\n", "imports configs, outside the package"),
    ("model", "from .... import x\n", "relative import above the package"),
])
def test_the_checker_reports_a_planted_violation(tmp_path, layer, source, complaint):
    pkg = tmp_path / PACKAGE
    for sub in ALLOWED:
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (tmp_path / "configs.py").write_text("")
    (pkg / layer / "planted.py").write_text(source)
    problems = violations(tmp_path)
    assert any(complaint in p and "planted.py" in p for p in problems), problems


def test_the_checker_reports_a_module_at_the_top_level(tmp_path):
    (tmp_path / PACKAGE).mkdir()
    (tmp_path / PACKAGE / "__init__.py").write_text("")
    (tmp_path / PACKAGE / "helpers_of_mine.py").write_text("x = 1\n")
    assert violations(tmp_path) == [f"{PACKAGE}/helpers_of_mine.py: a module at the package top "
                                    "level; put it in a subpackage"]
