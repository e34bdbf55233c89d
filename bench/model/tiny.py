"""Tiny random models and a tiny tokenizer, built from configs, for tests.

Four architectures (llama, gemma3, gpt2, gpt_neox) at a size that runs in milliseconds on a
CPU. Weights are seeded; dropout is off. The tokenizer is a byte-level BPE trained in memory
on a small corpus (by default a built-in one; tests may pass the text of a task so that its
words become single tokens).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
)

TINY_ARCHS = ("llama", "gemma3", "gpt2", "gpt_neox")

_DEFAULT_CORPUS = """
The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is Rome.
The parents are here. The parent is here. The dogs have a ball. The dog has a ball.
The athlete that the managers like is tall. The athletes that the manager likes are tall.
The secretaries near the cars do work. The secretary near the car does work.
The authors were happy. The author was happy. When Mary and John went to the store, John gave
a drink to Mary. When Alice and Bob went to the park, Bob gave a book to Alice.
The war lasted from the year 1732 to the year 1789. 12 + 34 = 46. 0 1 2 3 4 5 6 7 8 9
""".split("\n")


def tiny_tokenizer(corpus: Iterable[str] | None = None, vocab_size: int = 1024):
    """A byte-level BPE tokenizer trained on ``corpus`` (any text round-trips)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = list(corpus) if corpus is not None else _DEFAULT_CORPUS
    tok.train_from_iterator(lines, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        name_or_path="tiny-bpe",
    )


def tiny_config(arch: str, vocab_size: int, special_id: int = 0):
    """A 2-layer config of the given architecture (d_model 32, d_mlp 64)."""
    common = dict(
        vocab_size=vocab_size,
        initializer_range=0.1,
        bos_token_id=special_id,
        eos_token_id=special_id,
        pad_token_id=special_id,
    )
    if arch == "llama":
        return LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False,
            **common,
        )  # fmt: skip
    if arch == "gemma3":
        from transformers import Gemma3TextConfig

        return Gemma3TextConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, sliding_window=8, max_position_embeddings=128,
            **common,
        )  # fmt: skip
    if arch == "gpt2":
        return GPT2Config(
            n_embd=32, n_layer=2, n_head=4, n_positions=128, resid_pdrop=0.0, embd_pdrop=0.0,
            attn_pdrop=0.0, **common,
        )  # fmt: skip
    if arch == "gpt_neox":
        return GPTNeoXConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=128, rotary_pct=0.5, hidden_dropout=0.0,
            attention_dropout=0.0, **common,
        )  # fmt: skip
    raise ValueError(f"unknown tiny architecture {arch!r}; valid: {', '.join(TINY_ARCHS)}")


def tiny_model(arch: str, tokenizer=None, seed: int = 0):
    """(model, tokenizer): a seeded random model of ``arch`` sized to the tokenizer."""
    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer()
    config = tiny_config(arch, vocab_size=len(tokenizer), special_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    return model, tokenizer
