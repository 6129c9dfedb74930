"""Real-size architectures with random weights: the true compute cost of a model without its weights.

Used by benchmarks; weights cannot be downloaded here, and random weights cost the same to run.
"""

from __future__ import annotations

from typing import Any

import torch

QWEN25_VL_PRESETS: dict[str, dict[str, Any]] = {
    "qwen2.5-vl-3b": {
        "text": {
            "hidden_size": 2048,
            "intermediate_size": 11008,
            "num_hidden_layers": 36,
            "num_attention_heads": 16,
            "num_key_value_heads": 2,
            "vocab_size": 151936,
            "tie_word_embeddings": True,
        },
        "vision": {
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "out_hidden_size": 2048,
            "fullatt_block_indexes": [7, 15, 23, 31],
        },
    },
    "qwen2.5-vl-7b": {
        "text": {
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "vocab_size": 152064,
            "tie_word_embeddings": False,
        },
        "vision": {
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "out_hidden_size": 3584,
            "fullatt_block_indexes": [7, 15, 23, 31],
        },
    },
}


_QWEN3_VISION_SMALL = {"depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16,
                       "deepstack_visual_indexes": [5, 11, 17]}  # fmt: skip
_QWEN3_VISION_LARGE = {"depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16,
                       "deepstack_visual_indexes": [8, 16, 24]}  # fmt: skip

QWEN3_VL_PRESETS: dict[str, dict[str, Any]] = {
    "qwen3-vl-2b": {
        "text": {"hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28, "num_attention_heads": 16,
                 "num_key_value_heads": 8, "tie_word_embeddings": True},
        "vision": _QWEN3_VISION_SMALL,
    },
    "qwen3-vl-4b": {
        "text": {"hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36, "num_attention_heads": 32,
                 "num_key_value_heads": 8, "tie_word_embeddings": True},
        "vision": _QWEN3_VISION_SMALL,
    },
    "qwen3-vl-8b": {
        "text": {"hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36, "num_attention_heads": 32,
                 "num_key_value_heads": 8, "tie_word_embeddings": False},
        "vision": _QWEN3_VISION_LARGE,
    },
    "qwen3-vl-30b-a3b": {
        "moe": True,
        "text": {"hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 48, "num_attention_heads": 32,
                 "num_key_value_heads": 4, "moe_intermediate_size": 768, "num_experts": 128,
                 "num_experts_per_tok": 8, "decoder_sparse_step": 1, "mlp_only_layers": [],
                 "tie_word_embeddings": False},
        "vision": _QWEN3_VISION_LARGE,
    },
}  # fmt: skip
"""Qwen3-VL architectures (dense and MoE) as published: text 128-wide heads with interleaved M-RoPE [24, 20, 20],
vision 16-px patches with DeepStack levels."""

PRESETS = (*QWEN25_VL_PRESETS, *QWEN3_VL_PRESETS)
"""Every preset name ``build_random_adapter`` takes."""


def _tiny_tokenizer_ids(tokenizer: Any) -> dict[str, int]:
    names = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|im_end|>", "<|endoftext|>")
    return {t: tokenizer.convert_tokens_to_ids(t) for t in names}


def _random_model(cls: Any, config: Any, ids: dict[str, int], device: str, dtype: str) -> Any:
    """``cls`` built from ``config`` with seeded random weights on the resolved device, in eval mode."""
    from assistant.models import resolve_device, resolve_dtype

    dev = resolve_device(device)
    torch.manual_seed(0)
    with torch.device(dev):
        model = cls._from_config(config, dtype=resolve_dtype(dtype, dev)).eval()
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    return model


def _build_qwen3(preset: str, device: str, dtype: str) -> Any:
    """A Qwen3-VL adapter of a real size with random weights and the tiny Qwen3-VL's tokenizer."""
    import transformers
    from transformers import AutoTokenizer

    from assistant.models.qwen3_vl import QWEN3_NORM, Qwen3VLAdapter
    from assistant.models.qwen_vl import read_geometry
    from assistant.models.tiny import ensure_tiny_model

    spec = QWEN3_VL_PRESETS[preset]
    tiny = ensure_tiny_model(family="qwen3-vl")
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    ids = _tiny_tokenizer_ids(tokenizer)
    text = dict(
        spec["text"],
        vocab_size=151936,
        head_dim=128,
        max_position_embeddings=262144,
        rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [24, 20, 20],
                         "mrope_interleaved": True},
        pad_token_id=ids["<|endoftext|>"],
    )  # fmt: skip
    vision = dict(
        spec["vision"],
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
        num_position_embeddings=2304,
        out_hidden_size=spec["text"]["hidden_size"],
    )
    prefix = "Qwen3VLMoe" if spec.get("moe") else "Qwen3VL"
    config = getattr(transformers, f"{prefix}Config")(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=spec["text"]["tie_word_embeddings"],
    )
    model = _random_model(getattr(transformers, f"{prefix}ForConditionalGeneration"), config, ids, device, dtype)
    geometry = read_geometry(str(tiny), model.config.vision_config, default_norm=QWEN3_NORM)
    family = "qwen3_vl_moe" if spec.get("moe") else "qwen3_vl"
    return Qwen3VLAdapter(f"random:{preset}", family, model, tokenizer, geometry)


def build_random_adapter(preset: str, *, device: str = "auto", dtype: str = "auto") -> Any:
    """A Qwen2.5-VL or Qwen3-VL adapter of a real size with random weights and the tiny model's tokenizer."""
    from transformers import AutoTokenizer, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from assistant.models.qwen_vl import QwenVLAdapter, read_geometry
    from assistant.models.tiny import ensure_tiny_model

    if preset in QWEN3_VL_PRESETS:
        return _build_qwen3(preset, device, dtype)
    if preset not in QWEN25_VL_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    spec = QWEN25_VL_PRESETS[preset]
    tiny = ensure_tiny_model()
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    ids = _tiny_tokenizer_ids(tokenizer)
    text = dict(
        spec["text"],
        max_position_embeddings=128000,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    vision = dict(
        spec["vision"], patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112, tokens_per_second=2
    )
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=spec["text"]["tie_word_embeddings"],
    )
    model = _random_model(Qwen2_5_VLForConditionalGeneration, config, ids, device, dtype)
    geometry = read_geometry(str(tiny), model.config.vision_config)
    return QwenVLAdapter(f"random:{preset}", "qwen2_5_vl", model, tokenizer, geometry)
