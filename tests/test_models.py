"""Model loading: the embedded Gemma 3 270M (GGUF -> cached HF dir), its tokenizer, and --model resolution.

Everything runs offline against a cache in a temp dir, so the first load (dequantizing the GGUF,
about a minute on 2 cores) is exercised on every run, and the second load reuses it.
"""

from __future__ import annotations

import json
import random

import pytest
import torch

from s2o_eval.errors import UserError
from s2o_eval.models import (
    DEFAULT_MODEL,
    cache_root,
    load_model,
    load_tokenizer_only,
    resolve_dtype,
    resolve_model_source,
)
from s2o_eval.models import cache as model_cache
from s2o_eval.models.gguf_tokenizer import (
    BYTE, CONTROL, NORMAL, USER_DEFINED, SpmVocab, build_tokenizer, derive_merges, read_spm_vocab,
)
from s2o_eval.models.loading import resolve_device
from s2o_eval.models.sources import assemble_embedded_gguf, embedded_sha256

from tiny_models import tiny_gemma_config

PROMPT = "The capital of France is"
PROMPT_IDS = [2, 818, 5279, 529, 7001, 563]  # from the issue: <bos> The ▁capital ▁of ▁France ▁is

ROUND_TRIP_TEXTS = [
    PROMPT,
    "Digits 0123456789, 3.14159 and -42e10",
    "naïve café — “quotes” ½ ∑ 😀🎉 \x07",
    "日本語のテキスト 中文 한국어 עברית",
    "multiple  spaces   and    more     ",
    "  leading spaces",
    "lines\nand\n\nblank\n\n\nlines\n",
    "tabs\tand\t\ttabs",
    "<b>bold</b> and <table><tr><td>x</td></tr></table>",
    "a> </b",
]


@pytest.fixture(scope="module", autouse=True)
def offline_temp_cache(tmp_path_factory):
    """No network, and a fresh model cache for this module (so the cold path is what gets tested)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("HF_DATASETS_OFFLINE", "1")
        patch.setenv(model_cache.CACHE_ENV, str(tmp_path_factory.mktemp("s2o_eval_cache")))
        yield


@pytest.fixture(scope="module")
def gemma_tokenizer():
    return load_tokenizer_only(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def gemma_gguf(tmp_path_factory):
    """The packaged GGUF, assembled as a user's own .gguf file would be."""
    return assemble_embedded_gguf(tmp_path_factory.mktemp("gguf"))


@pytest.fixture(scope="module")
def gemma_vocab(gemma_gguf):
    from gguf import GGUFReader

    return read_spm_vocab(GGUFReader(str(gemma_gguf)))


class ReferenceSpm:
    """llama.cpp's SentencePiece tokenizer, written plainly: cut out control and user-defined tokens,
    turn spaces into "▁", merge the adjacent pair making the best-scored token until none is left
    (leftmost on ties), fall back to byte tokens."""

    def __init__(self, vocab: SpmVocab):
        self.vocab = vocab
        self.ids = {token: index for index, token in enumerate(vocab.tokens)}
        self.scores = {token: vocab.scores[i] for i, token in enumerate(vocab.tokens) if vocab.token_types[i] == NORMAL}
        self.atomic = {}
        for i, token in enumerate(vocab.tokens):
            if vocab.token_types[i] in (CONTROL, USER_DEFINED):
                self.atomic.setdefault(token[0], []).append(token)
        for candidates in self.atomic.values():
            candidates.sort(key=len, reverse=True)

    def _pieces(self, fragment: str) -> list[int]:
        symbols = list(("▁" if self.vocab.add_space_prefix else "") + fragment.replace(" ", "▁"))
        while True:
            best, best_score = None, None
            for k in range(len(symbols) - 1):
                score = self.scores.get(symbols[k] + symbols[k + 1])
                if score is not None and (best_score is None or score > best_score):
                    best, best_score = k, score
            if best is None:
                break
            symbols[best:best + 2] = [symbols[best] + symbols[best + 1]]
        ids = []
        for symbol in symbols:
            if symbol in self.scores:
                ids.append(self.ids[symbol])
            else:
                ids.extend(self.ids[f"<0x{byte:02X}>"] for byte in symbol.encode("utf-8"))
        return ids

    def encode(self, text: str) -> list[int]:
        ids = [self.vocab.bos_id] if self.vocab.add_bos else []
        start = position = 0
        while position < len(text):
            match = next((t for t in self.atomic.get(text[position], ()) if text.startswith(t, position)), None)
            if match is None:
                position += 1
                continue
            if position > start:
                ids += self._pieces(text[start:position])
            ids.append(self.ids[match])
            position += len(match)
            start = position
        if position > start:
            ids += self._pieces(text[start:position])
        return ids


# --- the tokenizer built from the GGUF --------------------------------------------------------------

def test_default_tokenizer_encodes_reference_ids(gemma_tokenizer):
    tokenizer, _ = gemma_tokenizer
    assert tokenizer(PROMPT)["input_ids"] == PROMPT_IDS
    assert tokenizer.bos_token == "<bos>" and tokenizer.bos_token_id == 2
    assert tokenizer(PROMPT, add_special_tokens=False)["input_ids"] == PROMPT_IDS[1:]
    assert tokenizer.convert_ids_to_tokens(PROMPT_IDS) == ["<bos>", "The", "▁capital", "▁of", "▁France", "▁is"]


def test_tokenizer_path_is_what_autotokenizer_loads(gemma_tokenizer):
    from transformers import AutoTokenizer

    tokenizer, path = gemma_tokenizer
    assert str(path).startswith(str(cache_root()))
    reloaded = AutoTokenizer.from_pretrained(path)
    assert reloaded(PROMPT)["input_ids"] == PROMPT_IDS
    assert reloaded.eos_token_id == 1 and reloaded.pad_token_id == 0
    assert reloaded.model_max_length == 32768


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_decode_round_trips(gemma_tokenizer, text):
    tokenizer, _ = gemma_tokenizer
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == 2
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer.decode(ids) == "<bos>" + text


def test_special_and_user_defined_tokens_stay_whole(gemma_tokenizer):
    tokenizer, _ = gemma_tokenizer
    ids = tokenizer("<start_of_turn>user\nhi  there<end_of_turn>\n\n", add_special_tokens=False)["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[0] == "<start_of_turn>" and tokens[-2:] == ["<end_of_turn>", "\n\n"]
    assert "▁▁" in tokens and "\n" in tokens


def test_matches_reference_sentencepiece_algorithm(gemma_tokenizer, gemma_vocab):
    tokenizer, _ = gemma_tokenizer
    reference = ReferenceSpm(gemma_vocab)
    rng = random.Random(0)
    alphabet = "abcdefghijklmnopqrstuvwxyz ABCXYZ  \n\t.,;:!?'0123456789éüñß日本語😀<>/"
    texts = ROUND_TRIP_TEXTS + ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80))) for _ in range(150)]
    for text in texts:
        assert tokenizer(text)["input_ids"] == reference.encode(text), text


def test_user_gguf_file_is_keyed_by_its_hash(gemma_gguf):
    """A .gguf path goes through the same conversion as the default; only its cache key differs."""
    source = resolve_model_source(str(gemma_gguf))
    assert (source.kind, source.name, source.revision) == ("gguf", "gemma-3-270m-q4_k_m", embedded_sha256())
    assert model_cache.model_dir(source).name == f"gemma-3-270m-q4_k_m-{embedded_sha256()[:12]}"


def test_built_tokenizer_on_a_tiny_vocabulary():
    """Merges rank by the merged token's score, whatever the order of its halves; bytes fill the gaps."""
    tokens = ["<unk>", "<bos>", "<eos>", "<0x21>", "▁", "a", "b", "c", "ab", "bc", "abc", "▁a", "\n"]
    types = [CONTROL, CONTROL, CONTROL, BYTE, NORMAL, NORMAL, NORMAL, NORMAL, NORMAL, NORMAL, NORMAL, NORMAL,
             USER_DEFINED]
    # "bc" outranks "ab", so "abc" is reached through a + bc; "▁a" is the worst merge.
    scores = [0, 0, 0, 0, -1, -2, -3, -4, -9, -5, -6, -10, 0]
    vocab = SpmVocab(tokens=tokens, scores=scores, token_types=types, bos_id=1, eos_id=2, unk_id=0, pad_id=None,
                     add_bos=True, add_eos=False, add_space_prefix=False, chat_template=None)
    merges = derive_merges(tokens, scores, types)
    assert merges == [("b", "c"), ("a", "bc"), ("ab", "c"), ("a", "b"), ("▁", "a")]
    tokenizer = build_tokenizer(vocab)
    encoded = tokenizer.encode("abc a!\nab")
    assert encoded.tokens == ["<bos>", "abc", "▁a", "<0x21>", "\n", "ab"]
    assert tokenizer.decode(encoded.ids, skip_special_tokens=True) == "abc a!\nab"


# --- the default model, converted once into the cache --------------------------------------------------

def _next_token(loaded, text: str) -> str:
    ids = loaded.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        logits = loaded.model(**ids).logits[0, -1]
    return loaded.tokenizer.decode([int(logits.argmax())])


def test_default_model_converts_once_and_works():
    """First load dequantizes into the cache; the second reuses it. Config facts of Gemma 3 270M hold."""
    loaded = load_model(DEFAULT_MODEL, device="cpu")
    entry = model_cache.model_dir(resolve_model_source(DEFAULT_MODEL))
    assert loaded.tokenizer_path == str(entry)
    assert loaded.name == "gemma-3-270m" and loaded.source == DEFAULT_MODEL
    assert loaded.revision == embedded_sha256()
    assert loaded.max_window == 32768
    assert loaded.chat_template is False  # the base model's GGUF carries no template
    assert loaded.model.dtype == torch.float32 and not loaded.model.training

    config = loaded.model.config
    assert config.num_hidden_layers == 18
    assert [i for i, kind in enumerate(config.layer_types) if kind == "full_attention"] == [5, 11, 17]
    assert set(config.layer_types) == {"full_attention", "sliding_attention"}
    assert config.sliding_window == 512
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (4, 1, 256)
    assert config.query_pre_attn_scalar == 256
    assert config.rope_parameters["full_attention"]["rope_theta"] == 1_000_000.0
    assert config.rope_parameters["sliding_attention"]["rope_theta"] == 10_000.0
    assert loaded.tokenizer(PROMPT)["input_ids"] == PROMPT_IDS

    record = json.loads((entry / model_cache.RECORD_FILE).read_text())
    assert record["weights_dtype"] == "bfloat16" and record["gguf_sha256"] == embedded_sha256()
    from safetensors import safe_open

    with safe_open(str(entry / "model.safetensors"), "pt") as weights:
        assert weights.get_slice("model.embed_tokens.weight").get_dtype() == "BF16"

    # A working model knows its capitals (greedy, CPU float32: deterministic).
    assert _next_token(loaded, "The capital of France is the city of") == " Paris"
    assert _next_token(loaded, "Paris is the capital of") == " France"

    weights_written = (entry / "model.safetensors").stat().st_mtime_ns
    again = load_model("default", device="cpu", dtype="fp32")
    assert (entry / "model.safetensors").stat().st_mtime_ns == weights_written
    ids = again.tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(again.model(**ids).logits, loaded.model(**ids).logits)
    # Once the model entry exists, the tokenizer-only path points at it too.
    assert load_tokenizer_only(DEFAULT_MODEL)[1] == str(entry)


def test_load_local_directory(tmp_path, gemma_tokenizer):
    """A plain HF model directory: loaded as is, in the dtype asked for, its window from its config."""
    import shutil

    from transformers import AutoModelForCausalLM

    # Gemma's own vocabulary (its tokenizer is copied in), everything else tiny
    config = tiny_gemma_config(262144, max_positions=4096, hidden_size=16, intermediate_size=32,
                               num_attention_heads=2, num_key_value_heads=1, head_dim=8)
    torch.manual_seed(0)
    model_dir = tmp_path / "tiny-gemma"
    AutoModelForCausalLM.from_config(config).save_pretrained(str(model_dir))
    tokenizer, tokenizer_dir = gemma_tokenizer
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(f"{tokenizer_dir}/{name}", model_dir / name)
    with_template = json.loads((model_dir / "tokenizer_config.json").read_text())
    with_template["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (model_dir / "tokenizer_config.json").write_text(json.dumps(with_template))

    loaded = load_model(str(model_dir), device="cpu", dtype="bf16", attn_implementation="eager")
    assert (loaded.name, loaded.revision, loaded.tokenizer_path) == ("tiny-gemma", None, str(model_dir))
    assert loaded.max_window == 4096 and loaded.chat_template is True
    assert loaded.model.dtype == torch.bfloat16 and loaded.model.config._attn_implementation == "eager"
    assert loaded.tokenizer(PROMPT)["input_ids"] == PROMPT_IDS


# --- cache writes ---------------------------------------------------------------------------------

def test_cache_entry_appears_only_when_complete(tmp_path):
    final = tmp_path / "models" / "m-123"
    with pytest.raises(RuntimeError, match="interrupted"):
        with model_cache.building(final) as temp:
            (temp / "config.json").write_text("{}")
            raise RuntimeError("interrupted")
    assert not final.exists() and list(final.parent.iterdir()) == []

    with model_cache.building(final) as temp:
        (temp / "config.json").write_text("{}")
        (temp / model_cache.RECORD_FILE).write_text(json.dumps({"format": model_cache.CACHE_FORMAT}))
    assert model_cache.read_record(final) is not None
    assert [p.name for p in final.parent.iterdir()] == ["m-123"]


def test_outdated_cache_entry_is_replaced(tmp_path):
    final = tmp_path / "m-123"
    final.mkdir()
    (final / model_cache.RECORD_FILE).write_text(json.dumps({"format": model_cache.CACHE_FORMAT - 1}))
    assert model_cache.read_record(final) is None
    with model_cache.building(final) as temp:
        (temp / model_cache.RECORD_FILE).write_text(json.dumps({"format": model_cache.CACHE_FORMAT}))
    assert model_cache.read_record(final) is not None
    assert [p.name for p in tmp_path.iterdir()] == ["m-123"]


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(model_cache.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert cache_root() == tmp_path / "elsewhere"
    source = resolve_model_source(DEFAULT_MODEL)
    assert model_cache.model_dir(source) == tmp_path / "elsewhere" / "models" / f"gemma-3-270m-{embedded_sha256()[:12]}"


# --- --model resolution and user errors -------------------------------------------------------------

@pytest.mark.parametrize("spec", ["gemma-3-270m", "default", "DEFAULT", " gemma-3-270m "])
def test_resolve_default(spec):
    source = resolve_model_source(spec)
    assert (source.kind, source.name, source.location) == ("embedded", "gemma-3-270m", "")
    assert source.revision == embedded_sha256() and len(source.revision) == 64


@pytest.mark.parametrize("spec, name", [
    ("meta-llama/Llama-3.1-8B-Instruct", "Llama-3.1-8B-Instruct"),
    ("gpt2", "gpt2"),
])
def test_resolve_hub_id(spec, name):
    source = resolve_model_source(spec)
    assert (source.kind, source.location, source.name, source.revision) == ("hub", spec, name, None)


def test_resolve_local_dir_and_hub_snapshot(tmp_path):
    plain = tmp_path / "my-model"
    plain.mkdir()
    (plain / "config.json").write_text("{}")
    source = resolve_model_source(str(plain))
    assert (source.kind, source.location, source.name, source.revision) == ("local", str(plain), "my-model", None)

    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "models--meta-llama--Llama-3.1-8B-Instruct" / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    source = resolve_model_source(str(snapshot))
    assert (source.kind, source.name, source.revision) == ("local", "Llama-3.1-8B-Instruct", commit)


def test_resolve_gguf_file(tmp_path):
    import hashlib

    path = tmp_path / "tiny-model.Q4_K_M.gguf"
    path.write_bytes(b"not really a gguf")
    source = resolve_model_source(str(path))
    assert (source.kind, source.name, source.location) == ("gguf", "tiny-model.Q4_K_M", str(path))
    assert source.revision == hashlib.sha256(b"not really a gguf").hexdigest()


@pytest.mark.parametrize("spec", ["/no/such/model", "./no-such-dir", "~/no/such/dir/model", "a/b/c",
                                  "/no/such/file.gguf", "not a model id!", ""])
def test_missing_paths_and_bad_ids_are_user_errors(spec):
    with pytest.raises(UserError):
        resolve_model_source(spec)
    with pytest.raises(UserError):
        load_model(spec, device="cpu")


def test_directory_without_config_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="config.json"):
        resolve_model_source(str(tmp_path))


def test_unreadable_gguf_is_a_user_error(tmp_path):
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"GGUF" + b"\x00" * 7)
    with pytest.raises(UserError, match="not a readable GGUF"):
        load_tokenizer_only(str(path))
    assert not any(p.name.startswith(".tmp-") for p in (cache_root() / "tokenizers").iterdir())


def test_hub_model_missing_offline_is_a_user_error():
    with pytest.raises(UserError, match="offline"):
        load_tokenizer_only("s2o-eval-tests/no-such-model")
    with pytest.raises(UserError, match="offline"):
        load_model("s2o-eval-tests/no-such-model", device="cpu")


def test_dtype_and_device_choices():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda:0") == torch.bfloat16
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    assert resolve_dtype(torch.float16, "cpu") == torch.float16
    with pytest.raises(UserError):
        resolve_dtype("int3", "cpu")
    assert resolve_device("CPU") == "cpu"
    with pytest.raises(UserError):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_gpu_is_a_user_error():
    with pytest.raises(UserError, match="--device cpu"):
        resolve_device("cuda")
