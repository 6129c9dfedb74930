"""Adapter for the Qwen2-VL and Qwen2.5-VL families (any size), loaded through ``from_pretrained``; the base of the
Qwen3-VL adapter (``qwen3_vl.py``)."""

from __future__ import annotations

import json
import logging
from typing import Any

import torch

from assistant.models.base import VisionTokenIds
from assistant.models.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, VisualGeometry
from assistant.models.prompt import PromptLayout

log = logging.getLogger(__name__)

QWEN2_FAMILIES = ("qwen2_vl", "qwen2_5_vl")
QWEN3_FAMILIES = ("qwen3_vl", "qwen3_vl_moe")
QWEN_FAMILIES = QWEN2_FAMILIES + QWEN3_FAMILIES
"""Every family an adapter of this package loads."""


def _model_class(family: str) -> type:
    import transformers

    return {
        "qwen2_vl": transformers.Qwen2VLForConditionalGeneration,
        "qwen2_5_vl": transformers.Qwen2_5_VLForConditionalGeneration,
        "qwen3_vl": transformers.Qwen3VLForConditionalGeneration,
        "qwen3_vl_moe": transformers.Qwen3VLMoeForConditionalGeneration,
    }[family]


def read_geometry(
    name: str,
    vision_config: Any,
    *,
    default_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
    **hub_kwargs: Any,
) -> VisualGeometry:
    """Geometry from the checkpoint's ``preprocessor_config.json``, falling back to its vision config (and to
    ``default_norm`` = (mean, std), CLIP's when None)."""
    from transformers.utils import cached_file

    data: dict[str, Any] = {}
    path = cached_file(name, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False, **hub_kwargs)
    if path:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    size = data.get("size") or {}
    mean, std = default_norm or (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    token_px = int(data.get("patch_size", vision_config.patch_size)) * int(
        data.get("merge_size", vision_config.spatial_merge_size)
    )
    return VisualGeometry(
        patch_size=int(data.get("patch_size", vision_config.patch_size)),
        merge_size=int(data.get("merge_size", vision_config.spatial_merge_size)),
        temporal_patch_size=int(data.get("temporal_patch_size", vision_config.temporal_patch_size)),
        min_pixels=int(data.get("min_pixels", size.get("shortest_edge", 4 * token_px * token_px))),
        max_pixels=int(data.get("max_pixels", size.get("longest_edge", token_px * token_px * 1280))),
        mean=tuple(data.get("image_mean", mean)),
        std=tuple(data.get("image_std", std)),
    )


class QwenVLAdapter:
    """A Qwen2-VL / Qwen2.5-VL checkpoint: vision tower, M-RoPE positions, tokenizer and language model."""

    FAMILIES: tuple[str, ...] = QWEN2_FAMILIES
    deepstack_levels: int = 0
    """Vision-layer feature levels appended to each visual token (Qwen3-VL's DeepStack; none here)."""

    def __init__(self, name: str, family: str, model: Any, tokenizer: Any, geometry: VisualGeometry) -> None:
        if family not in self.FAMILIES:
            raise ValueError(f"{type(self).__name__} handles {self.FAMILIES}, not {family!r}")
        self.name = name
        self.family = family
        self.model = model
        self.tokenizer = tokenizer
        self.geometry = geometry
        cfg = model.config
        self.token_ids = VisionTokenIds(
            vision_start=int(cfg.vision_start_token_id),
            vision_end=int(cfg.vision_end_token_id),
            image_pad=int(cfg.image_token_id),
            video_pad=int(cfg.video_token_id),
        )
        self.layout = PromptLayout.build(tokenizer, family, self.token_ids, cfg)
        self._tokens_per_second = float(getattr(cfg.vision_config, "tokens_per_second", 1) or 1)

    @classmethod
    def from_pretrained(
        cls, name: str, family: str, *, device: torch.device, dtype: torch.dtype, **hub_kwargs: Any
    ) -> QwenVLAdapter:
        """Load model, tokenizer and geometry from a Hugging Face id or a local directory."""
        from transformers import AutoTokenizer

        model = _model_class(family).from_pretrained(name, dtype=dtype, **hub_kwargs)
        model.to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(name, **hub_kwargs)
        geometry = read_geometry(name, model.config.vision_config, default_norm=cls.DEFAULT_NORM, **hub_kwargs)
        return cls(name, family, model, tokenizer, geometry)

    DEFAULT_NORM: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    """(mean, std) when the checkpoint has no preprocessor config (None: CLIP's)."""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.text_config.hidden_size)

    def time_interval(self, seconds_per_step: float) -> float:
        """Qwen2.5-VL spaces steps by tokens_per_second * seconds; Qwen2-VL by 1."""
        if self.family == "qwen2_5_vl":
            return self._tokens_per_second * seconds_per_step
        return 1.0

    @torch.inference_mode()
    def encode(self, patches: torch.Tensor, grid_thw: tuple[int, int, int]) -> torch.Tensor:
        """Post-merger visual tokens [N, hidden] for patches [grid_t*grid_h*grid_w, C*tp*p*p]."""
        grid = torch.tensor([list(grid_thw)], dtype=torch.long, device=self.device)
        pixels = patches.to(device=self.device, dtype=self.dtype)
        out = self.model.model.get_video_features(pixels, grid, return_dict=True)
        return torch.cat(list(out.pooler_output), dim=0)  # [N, hidden]

    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids.to(self.device))
