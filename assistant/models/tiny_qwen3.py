"""The tiny random-weight Qwen3-VL test models (dense and MoE), written like any Qwen3-VL checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from assistant.models.tiny_tokenizer import (
    QWEN3_CHAT_TEMPLATE,
    QWEN3_SPECIAL_TOKENS,
    SPECIAL_TOKENS,
    TINY_VERSION,
    build_tokenizer,
)

QWEN3_PREPROCESSOR = {
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen3VLProcessor",
    "patch_size": 16,
    "merge_size": 2,
    "temporal_patch_size": 2,
    "size": {"shortest_edge": 64 * 64, "longest_edge": 32 * 32 * 64},
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
}
"""The tiny models' preprocessor config (Qwen3-VL's keys; at most 64 tokens per frame)."""


def qwen3_text_config(vocab_size: int, ids: dict[str, int], *, moe: bool) -> dict[str, Any]:
    """Text config of the tiny Qwen3-VL: 2 layers, width 128, interleaved M-RoPE over head_dim 32."""
    text: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "max_position_embeddings": 131072,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5000000.0,
            "mrope_section": [6, 5, 5],
            "mrope_interleaved": True,
        },
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": False,
    }
    if moe:
        text.update(
            num_experts=4, num_experts_per_tok=2, moe_intermediate_size=48, decoder_sparse_step=1, mlp_only_layers=[]
        )
    return text


def qwen3_vision_config() -> dict[str, Any]:
    """Vision config of the tiny Qwen3-VL: depth 2, a DeepStack level after each block."""
    return {
        "depth": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_heads": 2,
        "out_hidden_size": 128,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "num_position_embeddings": 64,
        "deepstack_visual_indexes": [0, 1],
    }


def published_expert_layout(path: Path) -> None:
    """Store the fused expert weights as published Qwen3-VL-MoE checkpoints do (gate_up [E, H, 2I], down [E, I, H]).

    transformers 5 holds them transposed and converts on load (either layout loads there; the sizes are chosen so
    2I != H, which tells them apart), but writes its own layout back, which vLLM's loader does not take."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    for name, value in tensors.items():
        if name.endswith(("mlp.experts.gate_up_proj", "mlp.experts.down_proj")):
            tensors[name] = value.transpose(1, 2).contiguous()
    save_file(tensors, path, metadata={"format": "pt"})


def build_tiny_qwen3(directory: Path, seed: int = 0, *, moe: bool = False) -> Path:
    """Write a deterministic tiny Qwen3-VL (``moe``: Qwen3-VL-MoE) checkpoint to ``directory``."""
    import torch
    import transformers
    from transformers import GenerationConfig

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(extra_special=QWEN3_SPECIAL_TOKENS, chat_template=QWEN3_CHAT_TEMPLATE)
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    prefix = "Qwen3VLMoe" if moe else "Qwen3VL"
    config = getattr(transformers, f"{prefix}Config")(
        text_config=qwen3_text_config(len(tokenizer), ids, moe=moe),
        vision_config=qwen3_vision_config(),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,  # a tied random head echoes its input (blank answers)
    )
    torch.manual_seed(seed)
    model = getattr(transformers, f"{prefix}ForConditionalGeneration")(config).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
        do_sample=False,
    )
    model.save_pretrained(directory)
    if moe:
        published_expert_layout(directory / "model.safetensors")
    tokenizer.save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(json.dumps(QWEN3_PREPROCESSOR, indent=2))
    kind = "Qwen3-VL-MoE" if moe else "Qwen3-VL"
    (directory / "VIGIL_TINY_MODEL").write_text(
        f"version {TINY_VERSION} ({kind}): random weights, for tests only; its answers mean nothing\n"
    )
    return directory
