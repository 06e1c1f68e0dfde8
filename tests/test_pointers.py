"""Docstrings, comments and READMEs point only at what exists: every repository path they name
(``s2o_eval/run/lm.py``, ``tasks/s2o_tasks/common.py``) and every dotted name of our packages
(``s2o_eval.run.window.window_refusal``) resolves here. A moved or renamed file leaves no stale pointer."""

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("s2o_eval", "tasks", "scripts", "tests")
PACKAGES = {"s2o_eval": ROOT / "s2o_eval", "s2o_kernels": ROOT / "kernels" / "s2o_kernels",
            "s2o_tasks": ROOT / "tasks" / "s2o_tasks"}
# a path starting with one of our folders (or a package folder, as seen from kernels/ or tasks/)
PATH = re.compile(r"(?<![\w/.-])((?:s2o_eval|kernels|tasks|scripts|tests|reports|s2o_kernels|s2o_tasks)/[\w./-]*\w/?)")
DOTTED = re.compile(r"(?<![\w/.-])((?:s2o_eval|s2o_kernels|s2o_tasks)(?:\.\w+)+)")
NOT_OURS = (
    "scripts/data/synthetic/", "scripts/eval/",  # NVIDIA/RULER's, cited by the RULER adapter
    "kernels/__init__.py",  # what must never exist (test_layers says why)
    # the files the README's "Adding a method" has you write
    "kernels/s2o_kernels/peers/local.py", "s2o_eval/methods/local.py", "s2o_kernels.peers.local",
)


def prose(path: Path) -> str:
    """What a file says to its reader: a Python file's docstrings and comments, a YAML or shell file's
    comments, a markdown file whole."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".md":
        return text
    if path.suffix in (".yaml", ".sh"):
        return "\n".join(line.partition("#")[2] for line in text.splitlines() if "#" in line)
    parts = [tok.string for tok in tokenize.generate_tokens(io.StringIO(text).readline)
             if tok.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            parts.append(ast.get_docstring(node, clean=False) or "")
    return "\n".join(parts)


def top_level_names(module: Path) -> set[str] | None:
    """Names a module defines or imports at its top level; None when it makes names up on demand
    (a module ``__getattr__``)."""
    names = set()
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return None if "__getattr__" in names else names


def resolves(dotted: str) -> bool:
    """Whether ``package.module....name`` is a module here, or a name its deepest module defines."""
    first, *rest = dotted.split(".")
    where = PACKAGES[first]
    for part in rest:
        if where.is_dir() and (where / part).is_dir():
            where = where / part
        elif where.is_dir() and (where / f"{part}.py").exists():
            where = where / f"{part}.py"
        else:
            module = where / "__init__.py" if where.is_dir() else where
            names = top_level_names(module) if module.exists() else set()
            return names is None or part in names
    return True


def exists(path: str) -> bool:
    return any((base / path).exists() for base in (ROOT, ROOT / "kernels", ROOT / "tasks"))


def stale_pointers(path: Path) -> list[str]:
    text = prose(path)
    stale = [p for p in PATH.findall(text) if not p.startswith(NOT_OURS) and not exists(p.rstrip("."))]
    stale += [d for d in DOTTED.findall(text) if not d.startswith(NOT_OURS) and not resolves(d)]
    return stale


FILES = sorted(p for folder in SCANNED for p in (ROOT / folder).rglob("*")
               if p.suffix in (".py", ".md", ".yaml", ".sh") and "__pycache__" not in p.parts) + [ROOT / "README.md"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_pointer_resolves(path):
    assert not stale_pointers(path), f"{path.relative_to(ROOT)} points at what is not here"


def test_a_stale_pointer_is_caught(tmp_path):
    source = tmp_path / "example.py"
    source.write_text('"""See ``s2o_eval/evaluation.py`` and ``s2o_eval.run.window.window_refusal``."""\n'
                      "# s2o_eval.suites.ctx_label moved; tasks/s2o_tasks/common.py did not\n"
                      'LABEL = "s2o_eval/not_a_pointer.py"  # code, not prose\n')
    assert stale_pointers(source) == ["s2o_eval/evaluation.py", "s2o_eval.suites.ctx_label"]
