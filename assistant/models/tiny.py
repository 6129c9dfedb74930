"""Tiny random-weight Qwen-VL models with an offline tokenizer: the test models, built once and cached on disk.

``qwen2.5-vl`` is the default test model; ``qwen3-vl`` and ``qwen3-vl-moe`` are Qwen3-VL (DeepStack, 16-px
patches, interleaved M-RoPE, its chat template) dense and mixture-of-experts.

It is saved with ``save_pretrained`` and loaded back through the same ``from_pretrained`` path as any real
checkpoint, so everything that runs on it runs unchanged on a real model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from assistant.models.tiny_tokenizer import (
    SPECIAL_TOKENS,
    TINY_FAMILIES,
    TINY_VERSION,
    build_tokenizer,
    word_token_ids,
)

WORD_LOGIT_STD = 8.0
"""Spread of the logits of whole-word tokens: far above every other token's (zero), so answers are words."""


def _speak_in_words(model, tokenizer, seed: int) -> None:
    """Give only whole-word tokens output weights, so random answers decode to words instead of byte noise.

    Other tokens keep a zero row (logit 0) and the end-of-answer tokens their small random row; every token stays
    encodable, only what the model says is limited.
    """
    import torch

    head = model.lm_head.weight  # [V, D]
    stops = {tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")}
    words = torch.tensor(word_token_ids(tokenizer))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        kept = head[sorted(stops)].clone()  # [2, D]
        head.zero_()
        std = WORD_LOGIT_STD / head.shape[1] ** 0.5  # the final norm gives hidden states of RMS 1
        head[words] = torch.randn(len(words), head.shape[1], generator=generator) * std  # [W, D]
        head[sorted(stops)] = kept


def default_cache_dir() -> Path:
    """Where built models live: ``$VIGIL_HOME/models`` (default ``~/.cache/vigil/models``)."""
    home = os.environ.get("VIGIL_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "vigil")
    return Path(home) / "models"


def build_tiny_model(directory: str | os.PathLike, seed: int = 0, family: str = TINY_FAMILIES[0]) -> Path:
    """Write a deterministic tiny checkpoint of ``family`` (model, tokenizer, preprocessor config) to ``directory``."""
    if family not in TINY_FAMILIES:
        raise ValueError(f"no tiny model of family {family!r}; choose from {', '.join(TINY_FAMILIES)}")
    if family != TINY_FAMILIES[0]:
        from assistant.models.tiny_qwen3 import build_tiny_qwen3

        return build_tiny_qwen3(Path(directory), seed, moe=family == "qwen3-vl-moe")
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    head_dim = 32
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": head_dim,
            "max_position_embeddings": 131072,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "tie_word_embeddings": False,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_heads": 2,
            "out_hidden_size": 128,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [1],
            "tokens_per_second": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,  # a tied random head echoes its input (blank answers); untied gives visible text
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    _speak_in_words(model, tokenizer, seed)
    model.generation_config = GenerationConfig(
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
        do_sample=False,
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    preprocessor = {
        "image_processor_type": "Qwen2VLImageProcessor",
        "patch_size": 14,
        "merge_size": 2,
        "temporal_patch_size": 2,
        "min_pixels": 56 * 56,
        "max_pixels": 28 * 28 * 64,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
    }
    (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    (directory / "VIGIL_TINY_MODEL").write_text(
        f"version {TINY_VERSION}: random weights, for tests only; its answers mean nothing\n"
    )
    return directory


def ensure_tiny_model(cache_dir: str | os.PathLike | None = None, family: str = TINY_FAMILIES[0]) -> Path:
    """Path of the cached tiny model of ``family``, building it first if needed (atomic; safe with concurrent
    builders)."""
    if family not in TINY_FAMILIES:
        raise ValueError(f"no tiny model of family {family!r}; choose from {', '.join(TINY_FAMILIES)}")
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    target = root / f"tiny-{family}-v{TINY_VERSION}"
    if (target / "VIGIL_TINY_MODEL").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=root))
    try:
        build_tiny_model(staging, family=family)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "VIGIL_TINY_MODEL").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def is_tiny_model(path: str | os.PathLike) -> bool:
    """Whether a checkpoint directory is the random-weight test model."""
    return (Path(path) / "VIGIL_TINY_MODEL").exists()
