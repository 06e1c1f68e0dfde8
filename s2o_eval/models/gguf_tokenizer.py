"""A correct Hugging Face tokenizer for a GGUF file with a SentencePiece vocabulary (Gemma's included).

Why not transformers' own GGUF converter: 5.17 (the GPU host's) builds a Unigram model from Gemma's
scores, which are BPE merge ranks, and adds no ``<bos>``, so "The capital of France is" comes out as
ten pieces without ``<bos>`` instead of ``[2, 818, 5279, 529, 7001, 563]``. 5.23 gets it right; with
this module the result does not depend on the installed release.

A GGUF says ``tokenizer.ggml.model == "llama"`` for a SentencePiece vocabulary. llama.cpp (like
SentencePiece's BPE) tokenizes such a text this way, and so does the tokenizer built here:

- control tokens (``<bos>``, ``<start_of_turn>``...) and user-defined tokens (``"\\n"``, runs of
  spaces, ``"<b>"``...) are cut out of the text first and never split or merged;
- spaces become ``"▁"``; a leading ``"▁"`` is added only when ``add_space_prefix`` says so (Gemma: no);
- the rest starts as single characters, and the adjacent pair whose union is the vocabulary token with
  the best score is merged, again and again (Gemma's scores are minus the token's rank);
- characters left outside the vocabulary become byte tokens ``<0xNN>``.

A ``tokenizers`` BPE model does the same when its merges are every two-piece split of every normal
token, ranked by that token's score: it always applies the best-ranked pair present, leftmost first.
The whole text is one "word" (no pre-tokenizer), because a few tokens span a space (Gemma: ``>▁</``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from s2o_eval.errors import UserError

SPACE_MARK = "\u2581"  # "▁", SentencePiece's visible space

# gguf.TokenType values (stable across gguf releases; spelled out so this module imports nothing heavy)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


@dataclass
class SpmVocab:
    """The tokenizer half of a GGUF's metadata, for a SentencePiece-style vocabulary."""

    tokens: list[str]
    scores: list[float]
    token_types: list[int]
    bos_id: int | None
    eos_id: int | None
    unk_id: int | None
    pad_id: int | None
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    chat_template: str | None


def gguf_value(reader, key: str, default=None):
    """One scalar or string field of an open ``gguf.GGUFReader`` (``default`` when absent)."""
    from gguf import GGUFValueType

    field = reader.fields.get(key)
    if field is None:
        return default
    part = field.parts[field.data[0]]
    if field.types[0] == GGUFValueType.STRING:
        return bytes(part).decode("utf-8")
    return part[0].item()


def _string_array(reader, key: str) -> list[str]:
    field = reader.fields[key]
    return [bytes(field.parts[index]).decode("utf-8") for index in field.data]


def _number_array(reader, key: str) -> list:
    field = reader.fields[key]
    return [field.parts[index][0].item() for index in field.data]


def tokenizer_kind(reader) -> str | None:
    """``tokenizer.ggml.model`` of an open ``gguf.GGUFReader``: "llama" (SentencePiece), "gpt2" (byte-level BPE)..."""
    return gguf_value(reader, "tokenizer.ggml.model")


def read_spm_vocab(reader) -> SpmVocab:
    """The SentencePiece vocabulary stored in an open ``gguf.GGUFReader``."""
    kind = tokenizer_kind(reader)
    if kind != "llama":
        raise ValueError(f"GGUF tokenizer model is {kind!r}, not a SentencePiece ('llama') vocabulary")
    tokens = _string_array(reader, "tokenizer.ggml.tokens")
    count = len(tokens)
    scores = _number_array(reader, "tokenizer.ggml.scores") if "tokenizer.ggml.scores" in reader.fields else [0.0] * count
    types = (_number_array(reader, "tokenizer.ggml.token_type")
             if "tokenizer.ggml.token_type" in reader.fields else [NORMAL] * count)
    return SpmVocab(
        tokens=tokens,
        scores=[float(s) for s in scores],
        token_types=[int(t) for t in types],
        bos_id=gguf_value(reader, "tokenizer.ggml.bos_token_id"),
        eos_id=gguf_value(reader, "tokenizer.ggml.eos_token_id"),
        unk_id=gguf_value(reader, "tokenizer.ggml.unknown_token_id"),
        pad_id=gguf_value(reader, "tokenizer.ggml.padding_token_id"),
        # llama.cpp's defaults for a SentencePiece vocabulary that does not say
        add_bos=bool(gguf_value(reader, "tokenizer.ggml.add_bos_token", True)),
        add_eos=bool(gguf_value(reader, "tokenizer.ggml.add_eos_token", False)),
        add_space_prefix=bool(gguf_value(reader, "tokenizer.ggml.add_space_prefix", True)),
        chat_template=gguf_value(reader, "tokenizer.chat_template"),
    )


def _vocab_spelling(vocab: SpmVocab) -> list[str]:
    """Tokens as the HF tokenizer spells them.

    llama.cpp's converter writes user-defined runs of spaces with real spaces ("  "); the tokenizer
    matches them after spaces have become "▁", so they go back to "▁▁".
    """
    spelled = []
    for token, token_type in zip(vocab.tokens, vocab.token_types):
        if token_type == USER_DEFINED and token and not token.strip(" "):
            token = SPACE_MARK * len(token)
        spelled.append(token)
    return spelled


def derive_merges(tokens: list[str], scores: list[float], token_types: list[int]) -> list[tuple[str, str]]:
    """Every ``(left, right)`` split of every normal token into two normal tokens, best merge first.

    A merge ranks by the score of the token it makes (higher first; ties by token id), which is the
    order SentencePiece's BPE and llama.cpp apply them in.
    """
    normal = {token for token, kind in zip(tokens, token_types) if kind == NORMAL}
    ranked = []
    for token_id, (token, kind) in enumerate(zip(tokens, token_types)):
        if kind != NORMAL or len(token) < 2:
            continue
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in normal and right in normal:
                ranked.append((-scores[token_id], token_id, cut, left, right))
    ranked.sort()
    return [(left, right) for _, _, _, left, right in ranked]


def build_tokenizer(vocab: SpmVocab):
    """A ``tokenizers.Tokenizer`` that encodes and decodes like llama.cpp does for this vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors

    spelled = _vocab_spelling(vocab)
    if len(set(spelled)) != len(spelled):
        raise UserError("this GGUF's vocabulary repeats a token, which a Hugging Face tokenizer cannot hold: "
                        "pass the model's Hugging Face directory or hub id instead")
    unk = spelled[vocab.unk_id] if vocab.unk_id is not None else None
    model = models.BPE(
        vocab={token: token_id for token_id, token in enumerate(spelled)},
        merges=derive_merges(spelled, vocab.scores, vocab.token_types),
        unk_token=unk,
        fuse_unk=True,
        byte_fallback=True,
    )
    tokenizer = Tokenizer(model)
    replace_spaces = normalizers.Replace(" ", SPACE_MARK)
    # With a space prefix (not Gemma) the "▁" goes in front of every stretch between added tokens;
    # llama.cpp puts it only at the start and after control tokens. Gemma files never take this branch.
    tokenizer.normalizer = (normalizers.Sequence([normalizers.Prepend(SPACE_MARK), replace_spaces])
                            if vocab.add_space_prefix else replace_spaces)
    steps = [decoders.Replace(SPACE_MARK, " "), decoders.ByteFallback(), decoders.Fuse()]
    if vocab.add_space_prefix:
        steps.append(decoders.Strip(" ", 1, 0))
    tokenizer.decoder = decoders.Sequence(steps)

    # Control tokens are matched in the raw text (chat templates write them); user-defined ones in the
    # text after spaces became "▁", as SentencePiece does. Neither is ever split.
    tokenizer.add_special_tokens([
        AddedToken(token, special=True, normalized=False)
        for token, kind in zip(spelled, vocab.token_types) if kind in (CONTROL, UNKNOWN)
    ])
    tokenizer.add_tokens([
        AddedToken(token, special=False, normalized=True)
        for token, kind in zip(spelled, vocab.token_types) if kind == USER_DEFINED
    ])

    template_single, template_pair, specials = "$A", "$A:0 $B:1", []
    if vocab.add_bos and vocab.bos_id is not None:
        bos = spelled[vocab.bos_id]
        template_single, template_pair = f"{bos} $A", f"{bos} $A:0 {bos}:1 $B:1"
        specials.append((bos, vocab.bos_id))
    if vocab.add_eos and vocab.eos_id is not None:
        eos = spelled[vocab.eos_id]
        template_single, template_pair = f"{template_single} {eos}", f"{template_pair} {eos}:1"
        specials.append((eos, vocab.eos_id))
    if specials:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=template_single, pair=template_pair, special_tokens=specials)
    return tokenizer


def save_tokenizer_dir(vocab: SpmVocab, out_dir: Path, *, model_max_length: int | None = None) -> None:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` that ``AutoTokenizer`` loads as they are."""
    from transformers import PreTrainedTokenizerFast

    spelled = _vocab_spelling(vocab)

    def name(token_id):
        return spelled[token_id] if token_id is not None else None

    extra = {"model_max_length": model_max_length} if model_max_length else {}
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(vocab),
        bos_token=name(vocab.bos_id),
        eos_token=name(vocab.eos_id),
        unk_token=name(vocab.unk_id),
        pad_token=name(vocab.pad_id),
        add_bos_token=vocab.add_bos,
        add_eos_token=vocab.add_eos,
        clean_up_tokenization_spaces=False,
        **extra,
    )
    if vocab.chat_template:
        wrapped.chat_template = vocab.chat_template
    wrapped.save_pretrained(str(out_dir))
