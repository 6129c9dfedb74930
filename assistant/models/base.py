"""The interface every vision-language model adapter offers to perception and the engines."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from assistant.models.preprocess import VisualGeometry
from assistant.models.prompt import PromptLayout, VisionTokenIds

__all__ = ["PromptLayout", "VisionLanguageAdapter", "VisionTokenIds"]


@runtime_checkable
class VisionLanguageAdapter(Protocol):
    """A loaded vision-language checkpoint: preprocessing geometry, visual encoder, positions, text side."""

    family: str
    """Model family, e.g. ``qwen2_5_vl``."""
    name: str
    """The id or path it was loaded from."""
    geometry: VisualGeometry
    model: Any
    """The transformers model (``...ForConditionalGeneration``)."""
    tokenizer: Any
    token_ids: VisionTokenIds
    layout: PromptLayout
    """The prompt layout every engine builds its context from."""
    deepstack_levels: int
    """Feature levels appended to each visual token by ``encode`` (Qwen3-VL's DeepStack; 0 for others)."""

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def hidden_size(self) -> int:
        """Width of the language model's embeddings (= width of visual tokens)."""
        ...

    def time_interval(self, seconds_per_step: float) -> float:
        """Temporal M-RoPE spacing between consecutive temporal steps of a video."""
        ...

    def encode(self, patches: torch.Tensor, grid_thw: tuple[int, int, int]) -> torch.Tensor:
        """Visual tokens [grid_t * grid_h/m * grid_w/m, hidden * (1 + deepstack_levels)] for patches from
        ``preprocess.patchify`` (the main embedding first, then each DeepStack level)."""
        ...

    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings [..., hidden] of token ids."""
        ...
