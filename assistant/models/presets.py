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


def build_random_adapter(preset: str, *, device: str = "auto", dtype: str = "auto") -> Any:
    """A Qwen2.5-VL adapter of a real size with random weights and the tiny model's tokenizer."""
    from transformers import AutoTokenizer, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from assistant.models import resolve_device, resolve_dtype
    from assistant.models.qwen_vl import QwenVLAdapter, read_geometry
    from assistant.models.tiny import ensure_tiny_model

    if preset not in QWEN25_VL_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(QWEN25_VL_PRESETS)}")
    spec = QWEN25_VL_PRESETS[preset]
    tiny = ensure_tiny_model()
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    ids = {
        t: tokenizer.convert_tokens_to_ids(t)
        for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|im_end|>", "<|endoftext|>")
    }
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
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    torch.manual_seed(0)
    with torch.device(dev):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch_dtype).eval()
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    geometry = read_geometry(str(tiny), model.config.vision_config)
    return QwenVLAdapter(f"random:{preset}", "qwen2_5_vl", model, tokenizer, geometry)
