"""Adapter for the Qwen3-VL families, dense (``qwen3_vl``) and mixture-of-experts (``qwen3_vl_moe``).

What differs from Qwen2.5-VL: 16-px patches (32-px tokens) normalised with mean = std = 0.5, interleaved M-RoPE
without temporal spacing (each frame starts at the running position, as in the stock ``get_rope_index``), a text
timestamp ``<t seconds>`` before every frame (the layout's stamp), and DeepStack: the vision tower also emits
features of a few intermediate layers, added to the hidden states of the first language-model layers at the
visual tokens.

A visual token is therefore ``1 + deepstack_levels`` vectors. ``encode`` returns them side by side,
[N, D * (1 + L)] (the main embedding first, then each level: the layout vLLM's Qwen3-VL takes as precomputed
``image_embeds``), so they follow the kept tokens through the drop, the memory, pooling and the archive as one
row. ``split_visual`` takes a row block apart again for the language model.
"""

from __future__ import annotations

from typing import Any

import torch

from assistant.models.qwen_vl import QWEN3_FAMILIES, QwenVLAdapter

QWEN3_NORM = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
"""Qwen3-VL's image mean and std (its processor's defaults)."""


def split_visual(embeddings: torch.Tensor, hidden: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Main embeddings [K, D] and DeepStack levels [L, K, D] (None when L = 0) of rows [K, D * (1 + L)]."""
    k, width = embeddings.shape
    if width % hidden:
        raise ValueError(f"visual rows of width {width} are not a multiple of the model width {hidden}")
    levels = width // hidden - 1
    if levels == 0:
        return embeddings, None
    stacked = embeddings.view(k, levels + 1, hidden)  # [K, 1 + L, D]
    return stacked[:, 0], stacked[:, 1:].permute(1, 0, 2)  # [K, D], [L, K, D]


class Qwen3VLAdapter(QwenVLAdapter):
    """A Qwen3-VL or Qwen3-VL-MoE checkpoint (any size)."""

    FAMILIES = QWEN3_FAMILIES
    DEFAULT_NORM = QWEN3_NORM

    def __init__(self, name: str, family: str, model: Any, tokenizer: Any, geometry: Any) -> None:
        super().__init__(name, family, model, tokenizer, geometry)
        self.deepstack_levels = len(model.config.vision_config.deepstack_visual_indexes)

    def time_interval(self, seconds_per_step: float) -> float:
        """Qwen3-VL has no temporal spacing: time is given by the text timestamps between frames."""
        return 1.0

    @torch.inference_mode()
    def encode(self, patches: torch.Tensor, grid_thw: tuple[int, int, int]) -> torch.Tensor:
        """Visual rows [N, D * (1 + L)]: the merged token, then its DeepStack levels, for patches
        [grid_t * grid_h * grid_w, C * tp * p * p]."""
        grid = torch.tensor([list(grid_thw)], dtype=torch.long, device=self.device)
        pixels = patches.to(device=self.device, dtype=self.dtype)
        out = self.model.model.get_video_features(pixels, grid, return_dict=True)
        main = torch.cat(list(out.pooler_output), dim=0)  # [N, D]
        levels = [torch.cat(list(level), dim=0) for level in out.deepstack_features]  # L x [N, D]
        return torch.cat([main, *levels], dim=1)  # [N, D * (1 + L)]
