"""The on-disk cache of GGUF models turned into Hugging Face directories.

Layout, under ``$S2O_EVAL_CACHE`` or else ``platformdirs.user_cache_dir("s2o-eval")``::

    models/<name>-<gguf sha256[:12]>/       config.json, model.safetensors (bf16), generation_config.json,
                                            tokenizer.json, tokenizer_config.json, s2o_eval_cache.json
    tokenizers/<name>-<gguf sha256[:12]>/   the tokenizer files alone (for commands that need no weights)

Every directory is written under a temporary name beside its final one and renamed into place when
complete (``s2o_eval_cache.json`` written last), so an interrupted first load leaves no broken entry.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from ..reading import InputFile, UnreadableFile
from .sources import ModelSource, assemble_embedded_gguf

CACHE_ENV = "S2O_EVAL_CACHE"
RECORD_FILE = "s2o_eval_cache.json"
# Raise when what a cache directory holds changes, so old entries are rebuilt instead of trusted.
CACHE_FORMAT = 1
STALE_TEMP_SECONDS = 6 * 3600
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def cache_root() -> Path:
    """Where converted models live: ``$S2O_EVAL_CACHE`` if set, else the user cache dir of s2o-eval."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("s2o-eval"))


def entry_name(source: ModelSource) -> str:
    return f"{source.name}-{source.revision[:12]}"


def model_dir(source: ModelSource) -> Path:
    return cache_root() / "models" / entry_name(source)


def tokenizer_dir(source: ModelSource) -> Path:
    return cache_root() / "tokenizers" / entry_name(source)


def read_record(directory: Path) -> dict | None:
    """The record of a complete, current cache entry, else None: an entry whose record is unreadable or
    whose weights are cut short (a full disk, a killed copy) counts as absent, and is rebuilt."""
    try:
        record = InputFile(directory / RECORD_FILE, "rebuilt").read_json({"format": int})
        for weights in directory.glob("*.safetensors"):
            InputFile(weights, "rebuilt").check_weights()
    except UnreadableFile:
        return None
    return record if record["format"] == CACHE_FORMAT else None


def _remove_stale_temps(parent: Path, final_name: str) -> None:
    """Delete temp dirs of this entry left by killed builds (old enough not to be a running one)."""
    now = time.time()
    for leftover in parent.glob(f".tmp-{final_name}-*"):
        try:
            if now - leftover.stat().st_mtime > STALE_TEMP_SECONDS:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            pass


@contextmanager
def building(final: Path):
    """Yield an empty temp dir beside ``final``; when the block succeeds, it becomes ``final`` by rename.

    The block must write ``RECORD_FILE`` last. If another process completed ``final`` meanwhile, its
    entry is kept and ours dropped; an outdated or incomplete ``final`` is replaced.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(final.parent, final.name)
    # Not tempfile.mkdtemp: that makes the entry private (0700) instead of following the umask.
    temp = final.with_name(f".tmp-{final.name}-{os.getpid()}-{secrets.token_hex(4)}")
    temp.mkdir()
    try:
        yield temp
        if not (temp / RECORD_FILE).is_file():
            raise RuntimeError(f"cache build of {final.name} finished without writing {RECORD_FILE}")
        if final.exists() and read_record(final) is None:
            # Outdated format or a half-deleted entry: move it aside, then put ours in its place.
            _discard(final)
        try:
            temp.rename(final)
        except OSError:
            if read_record(final) is None:
                raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _discard(directory: Path) -> None:
    """Remove a directory by renaming it out of the way first, so its name is free at once."""
    doomed = directory.with_name(f".tmp-{directory.name}-discard-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        directory.rename(doomed)
    except FileNotFoundError:  # another process discarded it first
        return
    shutil.rmtree(doomed, ignore_errors=True)


def write_record(directory: Path, source: ModelSource, **facts) -> None:
    import transformers

    record = {"format": CACHE_FORMAT, "source": source.spec if source.kind == "gguf" else source.name,
              "gguf_sha256": source.revision, "transformers": transformers.__version__, **facts}
    (directory / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")


@contextmanager
def _gguf_file(source: ModelSource, scratch: Path):
    """The GGUF path of a source: the user's file, or the embedded one assembled into ``scratch``."""
    if source.kind == "gguf":
        yield Path(source.location)
        return
    path = assemble_embedded_gguf(scratch)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _open_gguf(path: Path):
    from gguf import GGUFReader

    from s2o_eval.errors import UserError

    try:
        return GGUFReader(str(path))
    except (ValueError, OSError, IndexError) as error:
        raise UserError(f"'{path}' is not a readable GGUF file ({error}): check the file or download it again") from error


def _write_tokenizer(reader, gguf_path: Path, out_dir: Path, max_window: int | None) -> str:
    """Tokenizer files for the GGUF into ``out_dir``; return which converter made them."""
    from .gguf_tokenizer import read_spm_vocab, save_tokenizer_dir, tokenizer_kind

    if tokenizer_kind(reader) == "llama":
        save_tokenizer_dir(read_spm_vocab(reader), out_dir, model_max_length=max_window)
        return "s2o_eval sentencepiece-bpe"
    # Byte-level BPE vocabularies (tokenizer.ggml.model "gpt2") carry their merges; transformers'
    # own converter handles those.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=str(gguf_path))
    if max_window:
        tokenizer.model_max_length = max_window
    tokenizer.save_pretrained(str(out_dir))
    return "transformers"


def _context_length(reader) -> int | None:
    from .gguf_tokenizer import gguf_value

    architecture = gguf_value(reader, "general.architecture")
    return gguf_value(reader, f"{architecture}.context_length")


def ensure_tokenizer_dir(source: ModelSource) -> Path:
    """A directory ``AutoTokenizer`` loads for a GGUF source: the model entry if built, else a tokenizer entry."""
    built = model_dir(source)
    if read_record(built) is not None:
        return built
    final = tokenizer_dir(source)
    if read_record(final) is not None:
        return final
    with building(final) as temp, _gguf_file(source, temp) as gguf_path:
        reader = _open_gguf(gguf_path)
        converter = _write_tokenizer(reader, gguf_path, temp, _context_length(reader))
        del reader
        write_record(temp, source, tokenizer=converter)
    return final


def ensure_model_dir(source: ModelSource, *, progress=None) -> Path:
    """The converted model directory of a GGUF source, dequantizing the GGUF on the first call."""
    final = model_dir(source)
    if read_record(final) is not None:
        return final
    from .gguf_model import WEIGHTS_DTYPE, save_dequantized_model

    started = time.perf_counter()
    with building(final) as temp, _gguf_file(source, temp) as gguf_path:
        if progress and final.exists():
            progress(f"The cached {final} is outdated or damaged: converting {source.name} from GGUF again "
                     "(about a minute)")
        elif progress:
            progress(f"Converting {source.name} from GGUF into {final.parent} (first load only, about a minute)")
        reader = _open_gguf(gguf_path)
        fixes = save_dequantized_model(gguf_path, reader, temp)
        ready = tokenizer_dir(source)
        if read_record(ready) is not None:
            for name in TOKENIZER_FILES:
                if (ready / name).is_file():
                    shutil.copy2(ready / name, temp / name)
            converter = read_record(ready).get("tokenizer")
        else:
            converter = _write_tokenizer(reader, gguf_path, temp, _context_length(reader))
        del reader
        write_record(temp, source, tokenizer=converter, weights_dtype=WEIGHTS_DTYPE, config_fixes=fixes,
                     build_seconds=round(time.perf_counter() - started, 1))
    return final
