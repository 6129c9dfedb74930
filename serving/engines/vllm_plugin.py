"""vLLM general plugin: registers Vigil's kept-token Qwen-VL models (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3-VL-MoE)
with vLLM's model registry.

vLLM loads every ``vllm.general_plugins`` entry point (``pyproject.toml``) in each of its processes (the
in-process engine core, ``vllm serve`` and its workers), so installing Vigil beside vLLM is enough. The models
are registered by ``"module:Class"`` name, so ``serving.engines.vllm_kept`` (which imports vLLM) is imported by
vLLM only when a checkpoint is pointed at one of these architectures (``hf_overrides={"architectures": [...]}``
in process, ``--hf-overrides`` on ``vllm serve``). This module itself imports nothing of vLLM at import time.
"""

from __future__ import annotations

from typing import Any

KEPT_ARCHITECTURES: dict[str, str] = {
    "qwen2_vl": "VigilKeptQwen2VLForConditionalGeneration",
    "qwen2_5_vl": "VigilKeptQwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "VigilKeptQwen3VLForConditionalGeneration",
    "qwen3_vl_moe": "VigilKeptQwen3VLMoeForConditionalGeneration",
}
"""Model family -> the architecture name of its kept-token model."""

_CLASSES = {
    "VigilKeptQwen2VLForConditionalGeneration": "serving.engines.vllm_kept:KeptQwen2VL",
    "VigilKeptQwen2_5_VLForConditionalGeneration": "serving.engines.vllm_kept:KeptQwen2_5_VL",
    "VigilKeptQwen3VLForConditionalGeneration": "serving.engines.vllm_kept:KeptQwen3VL",
    "VigilKeptQwen3VLMoeForConditionalGeneration": "serving.engines.vllm_kept:KeptQwen3VLMoe",
}


CONFIG_OVERRIDES: dict[str, dict[str, Any]] = {
    # vLLM 0.32's Qwen3-VL-MoE reads text_config.norm_topk_prob, which transformers 5's config no longer has;
    # transformers' Qwen3-VL-MoE always renormalises the top-k router weights, so True is the same model
    "qwen3_vl_moe": {"text_config": {"norm_topk_prob": True}},
}
"""Model family -> config values vLLM needs beside the architecture."""


def hf_overrides(family: str) -> dict[str, Any]:
    """The ``hf_overrides`` that point a checkpoint of ``family`` at its kept-token model."""
    try:
        return {"architectures": [KEPT_ARCHITECTURES[family]], **CONFIG_OVERRIDES.get(family, {})}
    except KeyError:
        raise ValueError(
            f"kept-token items are implemented for {sorted(KEPT_ARCHITECTURES)}, not {family!r}; "
            "use visual_input 'frames'"
        ) from None


def register() -> None:
    """The entry point: register the kept-token models (lazily, by module path)."""
    from vllm import ModelRegistry

    for arch, target in _CLASSES.items():
        if arch not in ModelRegistry.get_supported_archs():
            ModelRegistry.register_model(arch, target)
