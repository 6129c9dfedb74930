"""The in-process vLLM reaction engine: ``AsyncLLM`` with automatic prefix caching over each session's context.

Every request hands vLLM the session's whole context (see ``serving.engines._context``; the steps are
``serving.engines.prefix_core``'s, this module is the transport): token ids with one image placeholder per memory
entry, the entries as multimodal items with stable ``multi_modal_uuids``, then the question. vLLM's prefix
cache hashes items by uuid, so a question prefills only what changed since the last request; ``num_cached_tokens``
of each request is reported as ``AnswerStats.cached_tokens``.

``visual_input='kept'`` (Qwen2-VL / Qwen2.5-VL) hands vLLM only the kept tokens of each entry, as ``image_embeds``
items with their (t, h, w) offsets, to the kept-token models of ``serving.engines.vllm_kept`` (registered by the
``vllm.general_plugins`` entry point; the checkpoint is pointed at them with ``hf_overrides``): vLLM then holds
what the transformers engine holds, at the same positions. ``'embeds'`` hands stock vLLM the visual embeddings
as whole grids (``image_embeds`` with their grids: exact M-RoPE positions, whole-chunk granularity). ``'frames'``
hands it the kept raw frames, encoded by vLLM's own vision tower (any VLM vLLM supports; the memory entries must carry
their frames). vLLM is imported with this module; ``build_engine`` reports a clear error when it is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from vllm import SamplingParams
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine.async_llm import AsyncLLM

from assistant.config import EngineConfig
from assistant.models.base import VisionLanguageAdapter
from assistant.reaction import AnswerRequest, EngineError
from serving.engines._context import Segment, SessionState, VisualItem
from serving.engines.prefix_core import Completion, Piece, PrefixCachedEngine, Usage
from serving.engines.vllm_plugin import hf_overrides

log = logging.getLogger(__name__)

MAX_ITEMS_PER_PROMPT = 4096
"""Multimodal items one prompt may carry (the memory's entries plus recalled ones)."""


def engine_args(adapter: VisionLanguageAdapter, config: EngineConfig, **overrides: Any) -> AsyncEngineArgs:
    """vLLM engine arguments for the adapter's checkpoint under ``config.vllm``."""
    opts = config.vllm
    text_cfg = getattr(adapter.model.config, "text_config", adapter.model.config)
    model_limit = int(getattr(text_cfg, "max_position_embeddings", 32768))
    max_len = opts.max_model_len or min(model_limit, config.kv_cap_tokens + config.max_new_tokens + 4096)
    dtype = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[adapter.dtype]
    kwargs: dict[str, Any] = {
        "model": adapter.name,
        "tokenizer": adapter.name,
        "dtype": dtype,
        "tensor_parallel_size": opts.tensor_parallel_size,
        "gpu_memory_utilization": opts.gpu_memory_utilization,
        "max_model_len": max_len,
        "max_num_seqs": opts.max_num_seqs,
        "enforce_eager": opts.enforce_eager,
        "enable_prefix_caching": True,
        "enable_mm_embeds": opts.visual_input != "frames",
        "limit_mm_per_prompt": {"image": MAX_ITEMS_PER_PROMPT, "video": 0},
        "skip_mm_profiling": opts.visual_input != "frames",
        "seed": 0,
    }
    if opts.visual_input == "kept":
        kwargs["hf_overrides"] = hf_overrides(adapter.family)
    kwargs.update(overrides)
    return AsyncEngineArgs(**kwargs)


def _to_image(frame: torch.Tensor) -> Image.Image:
    """A PIL image of one uint8 frame [1, H, W, 3]."""
    return Image.fromarray(np.ascontiguousarray(frame[0].cpu().numpy()))


class VLLMEngine(PrefixCachedEngine):
    """ReactionEngine over an in-process vLLM ``AsyncLLM`` (GPU, or CPU with a CPU build of vLLM)."""

    def __init__(
        self, adapter: VisionLanguageAdapter, config: EngineConfig | None = None, **engine_overrides: Any
    ) -> None:
        super().__init__(adapter, config or EngineConfig(kind="vllm"))
        started = time.perf_counter()
        try:
            self.llm: AsyncLLM | None = AsyncLLM.from_engine_args(engine_args(adapter, self.config, **engine_overrides))
        except Exception as exc:  # vLLM raises many kinds at start (config, memory, device)
            raise EngineError(f"vLLM could not start on {adapter.name!r}: {exc}") from exc
        self.start_s = time.perf_counter() - started
        """Seconds vLLM took to start."""
        log.info("vLLM engine started in %.1f s (%s input)", self.start_s, self.visual_input)

    async def shutdown(self) -> None:
        await super().shutdown()
        if self.llm is not None:
            llm, self.llm = self.llm, None
            llm.shutdown()
            del llm  # released now, not in the interpreter's teardown (where vLLM's finalizer fails)

    # -- transport -----------------------------------------------------------------------------------------
    async def _prefill(self, state: SessionState, segments: Sequence[Segment]) -> int:
        prompt = self._prompt(segments, None)
        params = SamplingParams(max_tokens=1, temperature=0.0, output_kind=RequestOutputKind.FINAL_ONLY)
        prefilled = 0
        async with contextlib.aclosing(self._generate(state, prompt, params)) as stream:
            async for out in stream:
                prefilled = len(out.prompt_token_ids or ()) - int(out.num_cached_tokens or 0)
        return prefilled

    async def _complete(
        self, state: SessionState, segments: Sequence[Segment], completion: Completion
    ) -> AsyncIterator[Piece | Usage]:
        prompt = self._prompt(segments, completion.question_ids)
        params = SamplingParams(
            max_tokens=completion.max_new_tokens,
            min_tokens=completion.min_new_tokens,
            temperature=completion.temperature,
            seed=completion.request.seed,
            stop_token_ids=self._stop_ids,
            output_kind=RequestOutputKind.DELTA,
            skip_special_tokens=True,
        )
        prompt_len = cached = 0
        finish = "length"
        async with contextlib.aclosing(self._generate(state, prompt, params)) as stream:
            async for out in stream:
                if out.prompt_token_ids is not None and not prompt_len:
                    prompt_len, cached = len(out.prompt_token_ids), int(out.num_cached_tokens or 0)
                delta = out.outputs[0]
                if delta.text or delta.token_ids:
                    yield Piece(delta.text, tuple(delta.token_ids))
                if out.finished:
                    finish = "length" if delta.finish_reason == "length" else "stop"
        yield Usage(prompt_len, cached, finish)

    async def _logprobs(
        self, state: SessionState, segments: Sequence[Segment], request: AnswerRequest, labels: list[int]
    ) -> dict[int, float]:
        prompt = self._prompt(segments, self.context.question_ids(request))
        params = SamplingParams(
            max_tokens=1,
            temperature=0.0,
            logprobs=len(labels),
            logprob_token_ids=labels,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        logprobs: dict[int, float] = {}
        async with contextlib.aclosing(self._generate(state, prompt, params)) as stream:
            async for out in stream:
                steps = out.outputs[0].logprobs or []
                if steps:
                    logprobs = {int(k): float(v.logprob) for k, v in steps[0].items()}
        return logprobs

    def _answered(self, state: SessionState, segments: Sequence[Segment], completion: Completion, usage: Usage) -> None:
        self._learn_frame_tokens(segments, completion.question_ids, usage.prompt_tokens)

    # -- internals -----------------------------------------------------------------------------------------
    def _prompt(self, segments: Sequence[Segment], question: list[int] | None) -> dict:
        """vLLM's prompt dict: token ids, multimodal items and their uuids."""
        ids, images = self.context.token_prompt(segments, question)
        prompt: dict[str, Any] = {"prompt_token_ids": ids}
        if images:
            prompt["multi_modal_data"] = {"image": self._mm_data(images)}
            prompt["multi_modal_uuids"] = {"image": [image.uuid for image in images]}
        return prompt

    def _mm_data(self, images: list[VisualItem]) -> Any:
        if self.visual_input == "frames":
            return [_to_image(image.frames) for image in images]
        m = self.adapter.geometry.merge_size
        grids = torch.tensor([[1, image.grid[0] * m, image.grid[1] * m] for image in images])  # [n, 3] in patches
        if self.visual_input == "kept":  # the batched fields of serving.engines.vllm_kept, one element per item
            return {
                "image_embeds": [image.embeds.to(self.adapter.dtype) for image in images],  # n x [K_i, D]
                "image_grid_thw": grids,
                "image_positions": [image.offsets for image in images],  # n x [K_i, 3] long
                "image_num_tokens": torch.tensor([[image.embeds.shape[0]] for image in images]),  # [n, 1]
            }
        embeds = torch.cat([image.embeds for image in images]).to(self.adapter.dtype)  # [sum gh*gw, D]
        return {"image_embeds": embeds, "image_grid_thw": grids}

    async def _generate(self, state: SessionState, prompt: dict, params: SamplingParams) -> AsyncIterator[Any]:
        """vLLM's outputs for one request; a consumer that stops early aborts it."""
        state.requests += 1
        request_id = f"{state.session_id}-{state.requests}-{uuid.uuid4().hex[:8]}"
        finished = False
        try:
            async for out in self.llm.generate(prompt, params, request_id=request_id):
                finished = out.finished
                yield out
        except EngineError:
            raise
        except Exception as exc:  # vLLM validation and engine failures
            raise EngineError(f"vLLM failed to serve the request: {exc}") from exc
        finally:
            if not finished:
                await asyncio.shield(self.llm.abort(request_id))

    def _learn_frame_tokens(self, segments: Sequence[Segment], question: list[int], prompt_len: int) -> None:
        """Frames mode: learn how many placeholder tokens vLLM gives one frame (for the context's token cap)."""
        if self.visual_input != "frames" or not prompt_len:
            return
        frames = sum(int(s.item.frames.shape[0]) for s in segments if s.item is not None)
        if not frames:
            return
        framing = self.layout.image_framing
        text = sum(len(s.ids) + (framing * int(s.item.frames.shape[0]) if s.item is not None else 0) for s in segments)
        per_frame = (prompt_len - text - len(question)) // frames
        if per_frame > 0 and per_frame != self.context.tokens_per_frame:
            self.context.tokens_per_frame = per_frame
            for state in self.context.sessions.values():
                for seg in state.segments:
                    if seg.item is not None:
                        seg.num_tokens = self.context.visual_tokens(seg.ids, seg.item)
