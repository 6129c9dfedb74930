"""Vision-language model adapters: load a checkpoint by Hugging Face id or local path."""

from __future__ import annotations

import os
from typing import Any

import torch

from assistant.models.base import VisionLanguageAdapter, VisionTokenIds
from assistant.models.preprocess import VisualGeometry

TINY_MODEL_NAME = "tiny"


class ModelLoadError(RuntimeError):
    """A checkpoint could not be found, read or is of an unsupported family."""


def supported_families() -> tuple[str, ...]:
    """Model families (``model_type`` values) Vigil can load."""
    from assistant.models.qwen_vl import QWEN_FAMILIES

    return QWEN_FAMILIES


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"invalid device {device!r}: {exc}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available on this machine")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` is bfloat16 on GPU and float32 on CPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(table)}")
    return table[dtype]


def load_adapter(name: str, *, device: str = "auto", dtype: str = "auto", **hub_kwargs: Any) -> VisionLanguageAdapter:
    """Load a vision-language checkpoint (a Hugging Face id, a local directory, ``tiny``, or ``tiny-<family>``
    such as ``tiny-qwen3-vl``)."""
    from transformers import AutoConfig

    if name == TINY_MODEL_NAME or name.startswith(f"{TINY_MODEL_NAME}-"):
        from assistant.models.tiny import TINY_FAMILIES, ensure_tiny_model

        family_name = name[len(TINY_MODEL_NAME) + 1 :] or None
        if family_name is not None and family_name not in TINY_FAMILIES:
            raise ModelLoadError(f"no tiny model {name!r}; choose tiny or tiny-{' / tiny-'.join(TINY_FAMILIES)}")
        name = str(ensure_tiny_model(family=family_name or TINY_FAMILIES[0]))
    try:
        config = AutoConfig.from_pretrained(name, **hub_kwargs)
    except (OSError, ValueError) as exc:
        hint = "" if os.path.isdir(name) else " (no model hub is used when offline: pass a local directory)"
        raise ModelLoadError(f"could not load model {name!r}: {exc}{hint}") from exc
    family = getattr(config, "model_type", None)
    if family not in supported_families():
        raise ModelLoadError(
            f"model {name!r} is a {family!r} checkpoint; supported families: {', '.join(supported_families())}"
        )
    from assistant.models.qwen3_vl import Qwen3VLAdapter
    from assistant.models.qwen_vl import QwenVLAdapter

    dev = resolve_device(device)
    cls = Qwen3VLAdapter if family in Qwen3VLAdapter.FAMILIES else QwenVLAdapter
    return cls.from_pretrained(name, family, device=dev, dtype=resolve_dtype(dtype, dev), **hub_kwargs)


__all__ = [
    "TINY_MODEL_NAME",
    "ModelLoadError",
    "VisionLanguageAdapter",
    "VisionTokenIds",
    "VisualGeometry",
    "load_adapter",
    "resolve_device",
    "resolve_dtype",
    "supported_families",
]
