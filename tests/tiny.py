"""A tiny random-weight Llama and a small BPE tokenizer trained here: a model the tests can run
end to end through lm-eval on the CPU in seconds, with no download."""

from __future__ import annotations

from pathlib import Path

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
                                                       special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(path)
    return fast


def make_tiny_llama(path: Path, *, max_positions: int = 8192, vocab_size: int = 400, seed: int = 0) -> Path:
    """A 2-layer random Llama (GQA 4/2 heads) with the tokenizer above, saved as a model dir."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tokenizer = make_tokenizer(path, vocab_size)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(path)
    return path
