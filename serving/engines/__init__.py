"""Reaction engines: transformers (``hf``), in-process vLLM (``vllm``) and OpenAI-compatible replicas (``remote``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from assistant.config import EngineConfig
    from assistant.models.base import VisionLanguageAdapter
    from assistant.reaction import ReactionEngine


class EngineUnavailableError(RuntimeError):
    """The configured engine cannot be built here (e.g. vLLM is not installed)."""


def build_engine(config: EngineConfig, adapter: VisionLanguageAdapter) -> ReactionEngine:
    """The reaction engine ``config.kind`` names, sharing ``adapter`` (heavy packages imported only when chosen)."""
    if config.kind == "hf":
        from serving.engines.hf import HFEngine

        return HFEngine(adapter, config)
    if config.kind == "vllm":
        try:
            from serving.engines.vllm import VLLMEngine
        except ImportError as exc:
            raise EngineUnavailableError(
                f"the vllm engine needs vLLM installed (pip install 'vigil[vllm]'): {exc}"
            ) from None
        return VLLMEngine(adapter, config)
    if config.kind == "remote":
        from serving.engines.remote import RemoteEngine

        return RemoteEngine(adapter, config)
    raise EngineUnavailableError(f"unknown engine {config.kind!r}")
