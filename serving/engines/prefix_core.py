"""The prefix-cached engine core shared by the vLLM and remote engines: the steps of sync, answer and probe.

Both engines hand a prefix-caching server the session's whole context (``serving.engines._context``) on every
request; they differ only in how a request travels. A subclass is a transport: it implements

- ``_prefill``: prefill the context (a one-token request); returns the tokens the server computed,
- ``_complete``: stream a completion as ``Piece``s, then one ``Usage``,
- ``_logprobs``: the log-probabilities of the given first tokens for one generated token,

and may hook ``_opened``, ``_closed`` and ``_answered``. Everything else (absorbing memory changes, compaction,
the request segments, marking sent segments, the text window, stats) is written once here.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from assistant.config import EngineConfig
from assistant.models.base import VisionLanguageAdapter
from assistant.reaction import (
    AnswerDelta,
    AnswerDone,
    AnswerEvent,
    AnswerRequest,
    AnswerStats,
    EngineError,
    EngineSessionStats,
    MemoryChange,
    memory_context_tokens,
)
from memory.store import ContextBudget
from serving.engines._context import Segment, SegmentContext, SessionState


@dataclass(frozen=True, slots=True)
class Piece:
    """A streamed piece of a completion: text and the ids it came from (either may be empty)."""

    text: str
    token_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    """The end of a completion: what the server prefilled and generated."""

    prompt_tokens: int
    cached_tokens: int
    finish: Literal["stop", "length"]
    generated_tokens: int | None = None
    """Tokens generated as the server counts them (None: count the streamed ids)."""


@dataclass(frozen=True, slots=True)
class Completion:
    """What a transport needs to send one answer request."""

    request: AnswerRequest
    question_ids: list[int]
    max_new_tokens: int
    min_new_tokens: int
    temperature: float


class PrefixCachedEngine:
    """A ReactionEngine over a server with automatic prefix caching; subclasses supply the transport."""

    def __init__(self, adapter: VisionLanguageAdapter, config: EngineConfig) -> None:
        self.adapter = adapter
        self.config = config
        self.visual_input = config.vllm.visual_input
        self.context = SegmentContext(adapter, config, self.visual_input)
        self.layout = adapter.layout
        gen = getattr(adapter.model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None) or adapter.tokenizer.eos_token_id
        self._stop_ids = sorted(set(eos if isinstance(eos, list) else [eos]))
        self._bytes_per_token = kv_bytes_per_token(adapter.model.config, adapter.dtype)

    # -- transport -----------------------------------------------------------------------------------------
    async def _prefill(self, state: SessionState, segments: Sequence[Segment]) -> int:
        """Have the server prefill ``segments``; returns the tokens it computed (not taken from its cache)."""
        raise NotImplementedError

    def _complete(
        self, state: SessionState, segments: Sequence[Segment], completion: Completion
    ) -> AsyncIterator[Piece | Usage]:
        """Stream the answer to ``segments`` + the question: pieces, then one Usage."""
        raise NotImplementedError

    async def _logprobs(
        self, state: SessionState, segments: Sequence[Segment], request: AnswerRequest, labels: list[int]
    ) -> dict[int, float]:
        """Log-probabilities of the ``labels`` token ids as the first generated token."""
        raise NotImplementedError

    async def _opened(self, session_id: str) -> None:
        """A session was opened (transports place it)."""

    def _closed(self, state: SessionState) -> None:
        """A session was closed (transports free what they hold for it)."""

    def _answered(self, state: SessionState, segments: Sequence[Segment], completion: Completion, usage: Usage) -> None:
        """An answer finished (transports learn from its usage or free encoded items)."""

    # -- protocol ------------------------------------------------------------------------------------------
    async def open_session(self, session_id: str) -> None:
        self.context.open(session_id)
        await self._opened(session_id)

    async def close_session(self, session_id: str) -> None:
        state = self.context.sessions.get(session_id)
        if state is None:
            return
        async with state.request_lock:
            self.context.sessions.pop(session_id, None)
            self._closed(state)

    def apply(self, session_id: str, changes: Sequence[MemoryChange]) -> None:
        self.context.queue(session_id, changes)

    def context_budget(self) -> ContextBudget:
        """Each entry costs its item (kept tokens, whole grid or frames), timestamp and framing; the memory may
        fill the KV cap less the header, the text window, a question and its answer."""
        tokens = memory_context_tokens(self.config, len(self.context.header_ids))
        return ContextBudget(tokens, self.context.entry_overhead())

    async def sync(self, session_id: str) -> int:
        """Bring queued changes into the context and have the server prefill it; returns tokens prefilled."""
        state = self.context.get(session_id)
        async with state.request_lock:
            self.context.absorb(state)
            if state.signature() == state.warm_signature:
                return 0
            segments = self.context.request_segments(state, None)
            prefilled = await self._prefill(state, segments)
            self.context.mark_sent(segments)
            state.warm_signature = state.signature()
            state.prefilled_tokens += prefilled
            return prefilled

    async def answer(self, session_id: str, request: AnswerRequest) -> AsyncIterator[AnswerEvent]:
        state = self.context.get(session_id)
        async with state.request_lock:
            started = time.perf_counter()
            completion = self._completion(state, request)
            segments = self.context.request_segments(state, request)
            text, token_ids, ttft = "", [], 0.0
            usage = Usage(0, 0, "length")
            async with contextlib.aclosing(self._complete(state, segments, completion)) as stream:
                async for out in stream:
                    if isinstance(out, Usage):
                        usage = out
                        continue
                    if not ttft:
                        ttft = time.perf_counter() - started
                    text += out.text
                    token_ids += out.token_ids
                    yield AnswerDelta(out.text, out.token_ids)
            if token_ids:  # the whole answer decoded at once (a streaming detokenizer holds back a partial char)
                whole = self.adapter.tokenizer.decode(token_ids, skip_special_tokens=True)
                if whole.startswith(text) and len(whole) > len(text):
                    yield AnswerDelta(whole[len(text) :], ())
                text = whole
            stats = self._finish(state, segments, completion, usage, len(token_ids))
            self.context.remember(state, request, text)
            total = time.perf_counter() - started
            yield AnswerDone(text, AnswerStats(**stats, ttft_s=ttft or total, total_s=total))

    async def probe(self, session_id: str, question: str, t: float) -> float:
        """P(yes) from the server's log-probabilities of the yes/no first tokens (one generated token)."""
        state = self.context.get(session_id)
        async with state.request_lock:
            self.context.absorb(state)
            request = AnswerRequest(self.layout.probe_question(question), t, kind="probe", remember=False)
            segments = self.context.request_segments(state, request)
            labels = [*self.layout.yes_ids, *self.layout.no_ids]
            logprobs = await self._logprobs(state, segments, request, labels)
            self.context.mark_sent(segments[: len(state.segments)])
            return p_yes(logprobs, self.layout.yes_ids, self.layout.no_ids)

    def session_stats(self, session_id: str) -> EngineSessionStats:
        return self.context.stats(self.context.get(session_id), self._bytes_per_token)

    async def shutdown(self) -> None:
        for sid in list(self.context.sessions):
            await self.close_session(sid)

    # -- steps ---------------------------------------------------------------------------------------------
    def _completion(self, state: SessionState, request: AnswerRequest) -> Completion:
        """Absorb queued changes and compact for the question; the request as the transport sends it."""
        self.context.absorb(state)
        question = self.context.question_ids(request)
        max_new = request.max_new_tokens or self.config.max_new_tokens
        self.context.maybe_compact(state, reserve=len(question) + max_new)
        temperature = self.config.temperature if request.temperature is None else request.temperature
        return Completion(request, question, max_new, min(request.min_new_tokens, max_new), temperature)

    def _finish(
        self, state: SessionState, segments: Sequence[Segment], completion: Completion, usage: Usage, streamed: int
    ) -> dict[str, object]:
        """Mark what was sent, count what the server computed; the answer's stats (without timings)."""
        self.context.mark_sent(segments[: len(state.segments)])
        state.warm_signature = ()
        generated = usage.generated_tokens if usage.generated_tokens is not None else streamed
        recalled = sum(s.num_tokens for s in segments[len(state.segments) :])
        prompt_tokens = len(completion.question_ids) + recalled
        computed = max(0, usage.prompt_tokens - usage.cached_tokens)
        state.prefilled_tokens += computed + generated
        self._answered(state, segments, completion, usage)
        return {
            "synced_tokens": max(0, computed - prompt_tokens),
            "prompt_tokens": prompt_tokens,
            "cached_tokens": usage.cached_tokens,
            "generated_tokens": generated,
            "retrieved_entries": len(completion.request.recalled),
            "finish_reason": usage.finish,
        }


def kv_bytes_per_token(model_config: Any, dtype: torch.dtype) -> int:
    """Bytes of keys and values one token takes in the language model's cache."""
    text = getattr(model_config, "text_config", model_config)
    heads = int(getattr(text, "num_key_value_heads", None) or text.num_attention_heads)
    head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads)
    return 2 * int(text.num_hidden_layers) * heads * head_dim * torch.tensor([], dtype=dtype).element_size()


def p_yes(logprobs: dict[int, float], yes: Sequence[int], no: Sequence[int]) -> float:
    """P(yes) from the log-probabilities of the yes and no first tokens."""
    missing = [t for t in (*yes, *no) if t not in logprobs]
    if missing:
        raise EngineError(f"the server returned no log-probability for token ids {missing}")
    pair = torch.tensor(
        [
            torch.logsumexp(torch.tensor([logprobs[t] for t in yes], dtype=torch.float64), 0),
            torch.logsumexp(torch.tensor([logprobs[t] for t in no], dtype=torch.float64), 0),
        ]
    )
    return float(torch.softmax(pair, dim=0)[0])
