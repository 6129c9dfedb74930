"""Kept-token visual items for vLLM's Qwen2-VL, Qwen2.5-VL and Qwen3-VL (dense and MoE) (out-of-tree models,
loaded by vLLM only).

Registered by ``serving.engines.vllm_plugin`` (a ``vllm.general_plugins`` entry point); imported by vLLM's model
registry when a checkpoint is pointed at ``VigilKept...ForConditionalGeneration``. The classes subclass vLLM's
own models, processors and data parsers, so the checkpoint's weights load unchanged and every stock input
(pixels, whole-grid ``image_embeds``, videos) behaves exactly as in vLLM.

What they add: an ``image_embeds`` item may carry two extra fields,

- ``image_num_tokens``: [1] long, N, the number of kept tokens of the item;
- ``image_positions``: [N, 3] long, each kept token's (t, h, w) M-RoPE offset inside the item,

with ``image_embeds`` [N, D] holding only the kept tokens (Qwen3-VL: [N, D * (1 + L)], each row the token's
embedding and then its L DeepStack features, vLLM's own layout of Qwen3-VL embeddings) and ``image_grid_thw`` the
step's whole grid (in patches, as usual). Kept items are batched fields (in process: lists of per-item tensors), not
flat ones: a flat field's every element carries the slices of all items, which makes each request's serialization to
the engine core quadratic in the number of items. The prompt then holds N placeholder tokens for the item, the
item's tokens take the positions ``offset + start`` where ``start`` is where a whole grid would start (the previous
position + 1), and the text after it continues at the item's largest position + 1: exactly how the transformers
engine places kept tokens. Prefix caching hashes the item by its uuid as for any item.

vLLM internals this depends on (vLLM 0.32; ``tests/serving/vllm/test_kept_plugin.py`` fails if they move):
``Qwen2VLMultiModalDataParser`` (``embedding_fields``, ``embedding_field_sets``, ``DictEmbeddingItems``),
``_create_qwen2vl_field_factory``, ``BaseMultiModalProcessor._get_mm_fields_config`` / ``_get_prompt_updates``,
``PromptReplacement.replacement``, ``SupportsMRoPE.get_mrope_input_positions(input_tokens, mm_features)`` and
``iter_mm_grid_thw``, and ``embed_multimodal(**kwargs)`` returning one tensor per item; for Qwen3-VL also
``Qwen3VLMultiModalDataParser.embedding_fields``, ``Qwen3VLProcessingInfo._get_expected_hidden_size`` (D, which
would refuse DeepStack rows) and ``embed_input_ids`` splitting rows into ``visual_dim`` + ``multiscale_dim``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from vllm.model_executor.models.qwen2_5_vl import (
    Qwen2_5_VLDummyInputsBuilder,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLMultiModalProcessor,
    Qwen2_5_VLProcessingInfo,
)
from vllm.model_executor.models.qwen2_vl import (
    Qwen2VLDummyInputsBuilder,
    Qwen2VLForConditionalGeneration,
    Qwen2VLMultiModalDataParser,
    Qwen2VLMultiModalProcessor,
    Qwen2VLProcessingInfo,
    _create_qwen2vl_field_factory,
)
from vllm.model_executor.models.qwen3_vl import (
    Qwen3VLDummyInputsBuilder,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMultiModalDataParser,
    Qwen3VLMultiModalProcessor,
    Qwen3VLProcessingInfo,
)
from vllm.model_executor.models.qwen3_vl_moe import Qwen3VLMoeForConditionalGeneration, Qwen3VLMoeProcessingInfo
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.multimodal.parse import DictEmbeddingItems

NUM_TOKENS = "image_num_tokens"
POSITIONS = "image_positions"
KEPT_FIELDS = frozenset({NUM_TOKENS, POSITIONS})


def kept_fields_config(
    base: Mapping[str, MultiModalFieldConfig], hf_inputs: Mapping[str, Any]
) -> dict[str, MultiModalFieldConfig]:
    """The family's field config plus the kept-token fields; with ``image_num_tokens``, items are one element per
    kept item (``image_embeds`` [N_i, D] and ``image_positions`` [N_i, 3] each)."""
    fields = dict(base)
    if hf_inputs.get(NUM_TOKENS) is not None:
        fields["image_embeds"] = MultiModalFieldConfig.batched("image")
    fields[POSITIONS] = MultiModalFieldConfig.batched("image", keep_on_cpu=True)
    fields[NUM_TOKENS] = MultiModalFieldConfig.batched("image", keep_on_cpu=True)
    return fields


class KeptDataParser(Qwen2VLMultiModalDataParser):
    """Qwen-VL's parser; ``image_embeds`` dicts may also carry ``image_num_tokens`` and ``image_positions``."""

    embedding_fields: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        **Qwen2VLMultiModalDataParser.embedding_fields,
        "image": {
            **Qwen2VLMultiModalDataParser.embedding_fields["image"],
            NUM_TOKENS: "metadata",
            POSITIONS: "metadata",
        },
    }

    def embedding_field_sets(self, modality: str) -> tuple[set[str], set[str]]:
        """The stock (required, optional) sets, with the kept-token fields optional."""
        required, optional = super().embedding_field_sets(modality)
        return required - KEPT_FIELDS, optional | (required & KEPT_FIELDS)

    def _parse_image_data(self, data: Any) -> Any:
        if not isinstance(data, dict):
            return super()._parse_image_data(data)
        required, optional = self.embedding_field_sets("image")
        stock = _create_qwen2vl_field_factory(self._spatial_merge_size)
        return DictEmbeddingItems(
            data,
            modality="image",
            required_fields=required,
            optional_fields=optional,
            fields_factory=lambda inputs: kept_fields_config(stock(inputs), inputs),
        )


class KeptQwen2VLInfo(Qwen2VLProcessingInfo):
    def get_data_parser(self) -> KeptDataParser:
        return KeptDataParser(
            self.get_hf_config().vision_config.spatial_merge_size,
            expected_hidden_size=self._get_expected_hidden_size(),
            allow_missing_mm_embeddings=self.allow_missing_mm_embeddings,
        )


class KeptQwen2_5_VLInfo(Qwen2_5_VLProcessingInfo):
    def get_data_parser(self) -> KeptDataParser:
        return KeptDataParser(
            self.get_hf_config().vision_config.spatial_merge_size,
            video_needs_metadata=True,
            expected_hidden_size=self._get_expected_hidden_size(),
            allow_missing_mm_embeddings=self.allow_missing_mm_embeddings,
        )


class _KeptProcessorMixin:
    """Field config and prompt updates for kept-token items (everything else is the family's processor)."""

    def _get_mm_fields_config(
        self, hf_inputs: Mapping[str, Any], hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, MultiModalFieldConfig]:
        return kept_fields_config(super()._get_mm_fields_config(hf_inputs, hf_processor_mm_kwargs), hf_inputs)

    def _get_prompt_updates(self, mm_items: Any, hf_processor_mm_kwargs: Mapping[str, Any], out_mm_kwargs: Any) -> Any:
        """The family's updates; an image item with ``image_num_tokens`` N is replaced by N placeholder tokens."""
        updates: Sequence[Any] = super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)

        def kept(update: Any) -> Any:
            if update.modality != "image":
                return update
            token, stock = update.target[0], update.replacement

            def replacement(item_idx: int) -> list[int]:
                item = out_mm_kwargs["image"][item_idx]
                if NUM_TOKENS in item:
                    return [token] * int(torch.as_tensor(item[NUM_TOKENS].data).reshape(-1)[0])
                return stock(item_idx)

            return dataclasses.replace(update, replacement=replacement)

        return [kept(u) for u in updates]


class KeptQwen2VLProcessor(_KeptProcessorMixin, Qwen2VLMultiModalProcessor):
    pass


class KeptQwen2_5_VLProcessor(_KeptProcessorMixin, Qwen2_5_VLMultiModalProcessor):
    pass


class _KeptModelMixin:
    """Embeddings and M-RoPE positions of kept-token items (everything else is the family's model)."""

    def embed_multimodal(self, **kwargs: object) -> Any:
        counts = kwargs.pop(NUM_TOKENS, None)
        kwargs.pop(POSITIONS, None)
        if counts is None:
            return super().embed_multimodal(**kwargs)
        if getattr(self, "is_multimodal_pruning_enabled", False):
            raise ValueError("kept-token image items cannot be combined with video pruning (video_pruning_rate)")
        embeds = kwargs["image_embeds"]  # [n, N, D] when the items are the same size, else n x [N_i, D]
        items = list(embeds.unbind(0)) if isinstance(embeds, torch.Tensor) else list(embeds)
        sizes = torch.as_tensor(counts).reshape(-1).tolist()  # [n] kept tokens per item
        if [int(e.shape[0]) for e in items] != sizes:
            raise ValueError(f"kept image items hold {[e.shape[0] for e in items]} embeddings, expected {sizes}")
        return tuple(e.to(self.visual.dtype) for e in items)

    def _relative_positions(self, feature: Any) -> np.ndarray:
        """[3, L] positions of one item relative to where its first token would start."""
        data = feature.data
        assert data is not None
        if POSITIONS in data:
            offsets = torch.as_tensor(data[POSITIONS].data).long()  # [N, 3] (t, h, w)
            return offsets.T.contiguous().numpy().astype(np.int64)
        _, t, h, w, t_factor = next(iter(self.iter_mm_grid_thw([feature])))
        grid = np.indices((t, h, w))  # [3, t, h, w]
        if t_factor != 1.0:
            grid[0] = (grid[0] * t_factor).astype(np.int64)
        return grid.reshape(3, -1)

    def get_mrope_input_positions(self, input_tokens: list[int], mm_features: list[Any]) -> tuple[torch.Tensor, int]:
        """The family's M-RoPE layout; a kept item's tokens take their own offsets instead of a whole grid."""
        blocks: list[np.ndarray] = []  # [3, n_i] each
        st = 0
        for feature in sorted(mm_features, key=lambda f: f.mm_position.offset):
            offset = feature.mm_position.offset
            rel = self._relative_positions(feature)  # [3, L]
            text_len = offset - st
            st_idx = int(blocks[-1].max()) + 1 if blocks else 0
            blocks.append(np.broadcast_to(np.arange(text_len), (3, text_len)) + st_idx)
            blocks.append(rel + text_len + st_idx)
            st = offset + rel.shape[1]
        if st < len(input_tokens):
            st_idx = int(blocks[-1].max()) + 1 if blocks else 0
            text_len = len(input_tokens) - st
            blocks.append(np.broadcast_to(np.arange(text_len), (3, text_len)) + st_idx)
        positions = np.concatenate(blocks, axis=1).reshape(3, -1)  # [3, len(input_tokens)]
        return torch.from_numpy(positions), int(positions.max() + 1 - len(input_tokens))


@MULTIMODAL_REGISTRY.register_processor(
    KeptQwen2VLProcessor, info=KeptQwen2VLInfo, dummy_inputs=Qwen2VLDummyInputsBuilder
)
class KeptQwen2VL(_KeptModelMixin, Qwen2VLForConditionalGeneration):
    """vLLM's Qwen2-VL with kept-token image items."""


@MULTIMODAL_REGISTRY.register_processor(
    KeptQwen2_5_VLProcessor, info=KeptQwen2_5_VLInfo, dummy_inputs=Qwen2_5_VLDummyInputsBuilder
)
class KeptQwen2_5_VL(_KeptModelMixin, Qwen2_5_VLForConditionalGeneration):
    """vLLM's Qwen2.5-VL with kept-token image items."""


# -- Qwen3-VL (dense and MoE) ----------------------------------------------------------------------------------
class KeptQwen3DataParser(KeptDataParser):
    """The kept-token parser with Qwen3-VL's video fields (frame timestamps)."""

    embedding_fields: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        **KeptDataParser.embedding_fields,
        "video": Qwen3VLMultiModalDataParser.embedding_fields["video"],
    }


class _KeptQwen3InfoMixin:
    """Embeddings are rows of the embedding and its DeepStack levels: D * (1 + L) wide, not D."""

    def get_data_parser(self) -> KeptQwen3DataParser:
        return KeptQwen3DataParser(
            self.get_hf_config().vision_config.spatial_merge_size,
            video_needs_metadata=True,
            expected_hidden_size=self._get_expected_hidden_size(),
            allow_missing_mm_embeddings=self.allow_missing_mm_embeddings,
        )

    def _get_expected_hidden_size(self) -> int | None:
        width = super()._get_expected_hidden_size()
        levels = len(getattr(self.get_hf_config().vision_config, "deepstack_visual_indexes", ()) or ())
        return None if width is None else width * (1 + levels)


class KeptQwen3VLInfo(_KeptQwen3InfoMixin, Qwen3VLProcessingInfo):
    pass


class KeptQwen3VLMoeInfo(_KeptQwen3InfoMixin, Qwen3VLMoeProcessingInfo):
    pass


class KeptQwen3VLProcessor(_KeptProcessorMixin, Qwen3VLMultiModalProcessor):
    pass


class _KeptQwen3ModelMixin(_KeptModelMixin):
    """Qwen3-VL's positions for stock items (frames after their timestamps); kept items take their offsets."""

    def _relative_positions(self, feature: Any) -> np.ndarray:
        data = feature.data
        if data is not None and POSITIONS not in data and "image_grid_thw" in data:
            _, h, w = (int(v) for v in torch.as_tensor(data["image_grid_thw"].data).reshape(-1))
            m = self.config.vision_config.spatial_merge_size
            return np.indices((1, h // m, w // m)).reshape(3, -1)  # a whole image, as Qwen3-VL places it
        if data is None or POSITIONS not in data:
            raise ValueError("kept-token image items cannot be combined with videos in one Qwen3-VL prompt")
        return super()._relative_positions(feature)

    def get_mrope_input_positions(self, input_tokens: list[int], mm_features: list[Any]) -> tuple[torch.Tensor, int]:
        if not any(f.data is not None and POSITIONS in f.data for f in mm_features):
            return self._get_mrope_input_positions(
                input_tokens=input_tokens, mm_features=mm_features, config=self.config
            )
        return super().get_mrope_input_positions(input_tokens, mm_features)


@MULTIMODAL_REGISTRY.register_processor(
    KeptQwen3VLProcessor, info=KeptQwen3VLInfo, dummy_inputs=Qwen3VLDummyInputsBuilder
)
class KeptQwen3VL(_KeptQwen3ModelMixin, Qwen3VLForConditionalGeneration):
    """vLLM's Qwen3-VL with kept-token image items (DeepStack rows)."""


@MULTIMODAL_REGISTRY.register_processor(
    KeptQwen3VLProcessor, info=KeptQwen3VLMoeInfo, dummy_inputs=Qwen3VLDummyInputsBuilder
)
class KeptQwen3VLMoe(_KeptQwen3ModelMixin, Qwen3VLMoeForConditionalGeneration):
    """vLLM's Qwen3-VL-MoE with kept-token image items (DeepStack rows)."""
