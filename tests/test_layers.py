"""Which package may import which, and what the repository root holds.

s2o_kernels knows nothing of models, tasks or the harness; s2o_tasks (lm-eval adapters) knows nothing of
the harness; inside the harness, lower layers never import higher ones (``HARNESS_LAYERS``). Only s2o_eval is a package at the root: a root-level ``kernels/__init__.py`` shadowed Hugging
Face's ``kernels``, which transformers imports, for every ``python -m ...`` run from the root."""

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "kernels/s2o_kernels": ("s2o_eval", "s2o_tasks"),
    "tasks/s2o_tasks": ("s2o_eval",),
}


def imported_modules(path: Path) -> set[str]:
    """Absolute module names a file imports: import statements anywhere in it (functions included) and
    ``importlib.import_module("...")`` / ``__import__("...")`` calls with a literal name."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            names.add(node.args[0].value)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_never_import_higher_ones(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package} holds no Python files"
    wrong = [f"{path.relative_to(ROOT)} imports {name}"
             for path in files for name in sorted(imported_modules(path))
             if name.split(".")[0] in FORBIDDEN[package]]
    assert not wrong, "\n".join(wrong)


# Inside s2o_eval, from the bottom up: what each part may not import. The top-level modules (errors, env,
# formatting, reading, outputs) are what every layer shares; the CLI, at the top, may import anything.
HARNESS_LAYERS = {
    "shared": ("methods", "models", "integration", "run", "bench", "reporting", "cli"),
    "methods": ("models", "integration", "run", "bench", "reporting", "cli"),
    "models": ("methods", "integration", "run", "bench", "reporting", "cli"),
    "integration": ("models", "run", "bench", "reporting", "cli"),
    "run": ("bench", "reporting", "cli"),
    "bench": ("run", "reporting", "cli"),
    "reporting": ("integration", "bench", "cli"),
}


def harness_imports(path: Path) -> set[str]:
    """The parts of s2o_eval (``run``, ``methods``, ... or a top-level module) that a file of it imports,
    relative imports resolved."""
    package = path.relative_to(ROOT).parts[:-1]  # ("s2o_eval", "run") for a file of the run package
    names = {name for name in imported_modules(path) if name.split(".")[0] == "s2o_eval"}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1]
            stem = ".".join([*base, *([node.module] if node.module else [])])
            names.update(f"{stem}.{alias.name}" if not node.module else stem for alias in node.names)
    return {name.split(".")[1] for name in names if name.count(".") >= 1} - {"__version__"}


def test_lower_layers_of_the_harness_never_import_higher_ones():
    wrong = []
    for path in sorted((ROOT / "s2o_eval").rglob("*.py")):
        parts = path.relative_to(ROOT / "s2o_eval").parts
        layer = "shared" if len(parts) == 1 else parts[0]
        if layer == "shared" and parts[0] in ("__init__.py", "__main__.py"):
            continue  # the package's front door: register() and python -m reach up on purpose
        wrong += [f"{path.relative_to(ROOT)} imports s2o_eval.{name}" for name in sorted(harness_imports(path))
                  if name in HARNESS_LAYERS.get(layer, ())]
    assert not wrong, "\n".join(wrong)


def test_the_harness_check_resolves_relative_imports():
    imports = harness_imports(ROOT / "s2o_eval" / "run" / "evaluate.py")
    assert {"env", "run"} <= imports and "cli" not in imports


def test_the_harness_top_level_holds_only_what_every_layer_shares():
    modules = sorted(p.stem for p in (ROOT / "s2o_eval").glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert modules == ["env", "errors", "formatting", "outputs", "reading"]


@pytest.mark.parametrize("package", sorted(p.parent.name for p in (ROOT / "s2o_eval").glob("*/__init__.py")))
def test_every_harness_package_says_in_two_lines_what_it_holds(package):
    docstring = ast.get_docstring(ast.parse((ROOT / "s2o_eval" / package / "__init__.py").read_text()))
    assert docstring, f"s2o_eval/{package}/__init__.py has no docstring"
    assert len(docstring.split("\n\n")[0].splitlines()) <= 2, f"s2o_eval.{package}: say what it holds in two lines"


def test_the_import_check_sees_every_way_of_importing(tmp_path):
    source = tmp_path / "example.py"
    source.write_text("import s2o_eval.cli\nfrom s2o_tasks import common\nfrom . import sibling\n"
                      "def later():\n    from s2o_eval.methods import create\n"
                      "    importlib.import_module('s2o_eval.bench')\n")
    assert imported_modules(source) == {"s2o_eval.cli", "s2o_tasks", "s2o_eval.methods", "s2o_eval.bench"}


def test_only_s2o_eval_is_a_package_at_the_root():
    packages = sorted(p.parent.name for p in ROOT.glob("*/__init__.py"))
    assert packages == ["s2o_eval"]


def test_readme_layout_names_every_top_level_folder():
    readme = (ROOT / "README.md").read_text()
    paths = re.findall(r"^\| `([^`]+)`", readme[readme.index("\n## Layout\n"):], re.M)
    for path in paths:
        assert (ROOT / path).is_dir(), f"README's Layout names {path}, which is not a folder here"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout: which folders belong to the repository is unknown")
    folders = {line.split("/")[0] for line in tracked.stdout.splitlines() if "/" in line}
    assert {path.split("/")[0] for path in paths} == {f for f in folders if not f.startswith(".")}
