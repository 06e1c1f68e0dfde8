"""What the tests build instead of downloading: a small BPE tokenizer trained here, tiny random-weight
Llama and Gemma 3 models (run end to end through lm-eval on the CPU in seconds), and seeded q, k, v."""

from __future__ import annotations

from pathlib import Path

import torch

# the special tokens of ``make_tokenizer``, which the tiny models' configs name
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2

TEXT = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
    "One of the special magic numbers for the key is: 1234567. What is the special magic number? "
    "Memorize and track the chain(s) of variable assignment hidden in the following text. "
    "VAR ABCDE = 12345. Answer: According to the chain(s) of variable assignment in the text above, "
    "Below is a numbered list of words. In these words, some appear more often than others. "
    "Read the following coded text and track the frequency of each coded word. "
    "Answer the question based on the given documents. Only give me the answer and do not output any other words. "
    "Please read the following text and answer the question below. The correct answer is (A) (B) (C) (D). "
    "Some special magic uuids are hidden within the following text. 0123456789 abcdef "
)


def make_tokenizer(path: Path, vocab_size: int = 400, text: str = TEXT, repeats: int = 20):
    """Train a byte-level BPE (BOS added on encode) on ``text`` and save it as a Hugging Face tokenizer dir."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text] * repeats, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", BOS_ID)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(path)
    return fast


def tiny_llama_config(vocab_size: int = 400, max_positions: int = 8192, **overrides):
    """A 2-layer Llama config: hidden size 64, GQA with 4 query heads over 2 kv heads."""
    from transformers import LlamaConfig

    settings = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                    bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    return LlamaConfig(**{**settings, **overrides})


def make_tiny_llama(path: Path, *, max_positions: int = 8192, vocab_size: int = 400, seed: int = 0) -> Path:
    """A 2-layer random Llama (GQA 4/2 heads) with the tokenizer above, saved as a model dir."""
    from transformers import LlamaForCausalLM

    path = Path(path)
    tokenizer = make_tokenizer(path, vocab_size)
    torch.manual_seed(seed)
    config = tiny_llama_config(len(tokenizer), max_positions, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


GEMMA_LAYER_TYPES = ("sliding_attention", "sliding_attention", "full_attention")


def tiny_gemma_config(vocab_size: int = 128, *, layer_types=GEMMA_LAYER_TYPES, max_positions: int = 256,
                      **overrides):
    """A Gemma 3 text config mixing sliding-window layers (window 8) with full ones, as Gemma 3 does:
    hidden size 64, 4 query heads over 2 kv heads of dim 32. ``overrides`` replace any setting."""
    from transformers import Gemma3TextConfig

    settings = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=len(layer_types),
                    num_attention_heads=4, num_key_value_heads=2, head_dim=32, sliding_window=8,
                    layer_types=list(layer_types), max_position_embeddings=max_positions,
                    bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    return Gemma3TextConfig(**{**settings, **overrides})


def make_qkv(seed: int, n_ctx: int, *, batch: int = 1, q_heads: int = 4, kv_heads: int = 2, head_dim: int = 16,
             hot: float = 0.0, dtype: torch.dtype = torch.float32, q_offset: int = 0):
    """Seeded random q ``(batch, q_heads, n_ctx, head_dim)`` and k, v ``(batch, kv_heads, q_offset + n_ctx,
    head_dim)``: with ``q_offset`` P the queries follow P cached keys (a chunk of a longer prompt).

    With ``hot`` > 0 every query leans along one direction and a random eighth of the keys along it
    too, which raises those keys' logits by about ``hot``: attention then concentrates as on real text
    (plain Gaussian q, k give near-uniform attention)."""
    gen = torch.Generator().manual_seed(seed)
    n_keys = q_offset + n_ctx
    q = torch.randn(batch, q_heads, n_ctx, head_dim, generator=gen)
    k = torch.randn(batch, kv_heads, n_keys, head_dim, generator=gen)
    v = torch.randn(batch, kv_heads, n_keys, head_dim, generator=gen)
    if hot:
        direction = torch.randn(head_dim, generator=gen)
        direction = direction / direction.norm() * head_dim**0.5
        q = q + direction
        chosen = torch.rand(batch, kv_heads, n_keys, 1, generator=gen) < 0.125
        k = k + chosen * hot * direction / head_dim**0.5
    return q.to(dtype), k.to(dtype), v.to(dtype)


def make_tiny_gemma(path: Path, *, layer_types=GEMMA_LAYER_TYPES, max_positions: int = 4096, seed: int = 0) -> Path:
    """A random Gemma 3 (``tiny_gemma_config``: sliding and global layers) with the tokenizer above, saved
    as a model dir."""
    from transformers import Gemma3ForCausalLM

    path = Path(path)
    tokenizer = make_tokenizer(path)
    torch.manual_seed(seed)
    Gemma3ForCausalLM(tiny_gemma_config(len(tokenizer), layer_types=layer_types, max_positions=max_positions)
                      ).save_pretrained(path)
    return path


def make_tiny_gpt2(path: Path, *, max_positions: int = 4096, seed: int = 0) -> Path:
    """A 2-layer random GPT-2 (learned position embeddings, no RoPE) with the tokenizer above, saved as a model dir."""
    from transformers import GPT2Config, GPT2LMHeadModel

    path = Path(path)
    tokenizer = make_tokenizer(path)
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=max_positions, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    GPT2LMHeadModel(config).save_pretrained(path)
    return path
