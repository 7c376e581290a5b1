"""Self-prompted examples for attacks that fine-tune on the target's own generations (SPV-MIA)."""

from ..data import Example
from ..generation import sample_continuations


def self_prompted_examples(ev, examples, max_new_tokens: int, seed: int) -> list[Example]:
    """The examples' prompts with responses sampled from the model as it is now (the target)."""
    enc = ev.encode(examples)
    prompts = [seq[:s] for seq, s in zip(enc.input_ids, enc.response_start, strict=True)]
    texts = sample_continuations(ev.model, ev.tokenizer, prompts, max_new_tokens, seed, max(1, ev.batch_size // 2))
    return [Example(f"self-prompted:{ex.id}", ex.prompt, text) for ex, text in zip(examples, texts, strict=True)]
