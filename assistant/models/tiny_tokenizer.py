"""The offline tokenizer of the tiny test models: a byte-level BPE trained on a small word corpus, with the
Qwen-VL special tokens and chat templates (Qwen2.5-VL's and Qwen3-VL's)."""

from __future__ import annotations

import json
import random

TINY_VERSION = 3
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

TINY_FAMILIES = ("qwen2.5-vl", "qwen3-vl", "qwen3-vl-moe")
"""Families ``build_tiny_model`` writes (the first is the default test model)."""
QWEN3_SPECIAL_TOKENS = ("<tool_call>", "</tool_call>", "<think>", "</think>")
"""Special tokens a Qwen3-VL tokenizer has beyond Qwen2.5-VL's."""

# Qwen2-VL's chat template: messages whose content is a string or a list of text/image/video parts.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen3-VL Instruct's chat template (without tools): no default system turn, the same vision framing.
QWEN3_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_WORDS = (
    "a the person man woman child dog cat car bike ball door window table chair cup phone screen light "
    "red green blue yellow white black small large left right top bottom front back near far enters "
    "leaves walks runs sits stands opens closes picks holds drops moves turns stops starts is are was "
    "there here now then yes no what where when who how many why which video frame scene camera room "
    "street kitchen office outside inside seconds minute time describe tell me answer question happened "
    "changed see shows appears one two three four five"
).split()


def word_token_ids(tokenizer) -> list[int]:
    """Ids of the tokens that are a whole word of the corpus with its leading space, and of sentence punctuation."""
    vocab = tokenizer.get_vocab()
    words = {"\u0120" + w for w in _WORDS} | {".", ",", "?"}  # "\u0120" is byte-level BPE's space
    return sorted(i for token, i in vocab.items() if token in words)


def _corpus(lines: int = 4000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 14))]
        sentence = " ".join(words).capitalize()
        out.append(f"{sentence}{rng.choice('.?!')} At {rng.randint(0, 3600)} s: {rng.randint(0, 99)}.")
    return out


def build_tokenizer(vocab_size: int = 1024, *, extra_special: tuple[str, ...] = (), chat_template: str = CHAT_TEMPLATE):
    """Byte-level BPE trained on generated text, wrapped as a Qwen2 tokenizer with Qwen's special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=state["vocab"],
        merges=merges,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        extra_special_tokens=[*SPECIAL_TOKENS, *extra_special],
    )
    tokenizer.chat_template = chat_template
    return tokenizer
