"""The transformers reaction engine: each session's visual memory lives in a segment-addressed KV cache.

Layout of a session's context (one user turn that grows with the stream):

    [system: chat header]  [<t s> <vision_start> visual tokens <vision_end>] ...  [history: "[t s] Q: .. A: .."] ...
    + per request, rolled back afterwards: [recalled entries] [question suffix] [generated tokens]

Every segment is prefilled once. A visual segment's tokens keep their original (h, w) grid positions around a
temporal position taken from a running cursor, so dropping or evicting tokens never shifts other positions.
When the cursor nears the model's position limit, the context is consolidated (re-prefilled with compact
positions). All model work runs on one worker thread; sessions interleave at token granularity.

The engine mirrors the visual memory and never evicts on its own: the memory's ``ContextBudget`` (from
``context_budget``) keeps the visual segments within the KV cap, and an entry that still does not fit is rejected
with an ``EngineError``. The prompt texts and special tokens come from the adapter's ``PromptLayout``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from assistant.config import EngineConfig
from assistant.jobs import PRIORITY
from assistant.models.base import VisionLanguageAdapter
from assistant.models.qwen3_vl import split_visual
from assistant.reaction import (
    AddEntry,
    AnswerDelta,
    AnswerDone,
    AnswerEvent,
    AnswerRequest,
    AnswerStats,
    EngineError,
    EngineSessionStats,
    MemoryChange,
    UnknownSessionError,
    memory_context_tokens,
)
from memory.kv_cache import SegmentKVCache
from memory.store import ContextBudget, Evict, MemoryEntry, Pool, Prune
from serving.engines.scheduler import PriorityExecutor

log = logging.getLogger(__name__)

_DeepStack = tuple[torch.Tensor, torch.Tensor]
"""DeepStack input of a forward: [n] bool mask of the visual tokens, and [L, K, D] features at them."""


class _HeapTrimmer:
    """Hands freed heap memory back to the OS after the KV cache changed (glibc keeps it otherwise, and the
    reallocations of a growing and shrinking cache make RSS creep up for an hour before it levels off)."""

    def __init__(self) -> None:
        try:
            import ctypes

            self._trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc
            self._trim = None

    def __call__(self) -> None:
        if self._trim is not None:
            self._trim(0)


@dataclass(slots=True)
class _Record:
    """What is needed to (re)prefill one segment: token ids, visual embeddings, and how to lay out positions."""

    kind: str
    ids: torch.Tensor  # [n] long
    visual: torch.Tensor | None = None  # [n] bool: positions filled by `embeddings`
    embeddings: torch.Tensor | None = None  # [K, D * (1 + L)]: DeepStack levels after the embedding (Qwen3-VL)
    rows: torch.Tensor | None = None  # [K] long grid rows of the visual tokens
    cols: torch.Tensor | None = None  # [K] long grid cols
    positions: torch.Tensor | None = None  # [3, n] long, set when laid out

    def layout(self, cursor: int) -> tuple[torch.Tensor, int]:
        """Positions [3, n] starting at ``cursor`` and the next free cursor."""
        n = self.ids.numel()
        if self.visual is None:
            pos = torch.arange(cursor, cursor + n).expand(3, n).clone()
            return pos, cursor + n
        pos = torch.empty(3, n, dtype=torch.long)
        vis = self.visual
        first = int(vis.nonzero()[0])
        pos[:, :first] = torch.arange(cursor, cursor + first).expand(3, first)
        base = cursor + first
        pos[0, vis] = base
        pos[1, vis] = base + self.rows
        pos[2, vis] = base + self.cols
        extent = int(torch.maximum(self.rows.max(), self.cols.max())) + 1
        tail = n - first - int(vis.sum())
        pos[:, n - tail :] = torch.arange(base + extent, base + extent + tail).expand(3, tail)
        return pos, base + extent + tail

    def num_tokens(self) -> int:
        return int(self.ids.numel())


@dataclass(slots=True)
class _SessionContext:
    """Engine-side state of one session; touched only on the worker thread (except ``pending``)."""

    kv: SegmentKVCache
    records: dict[str, _Record] = field(default_factory=dict)  # segment id -> record, in cache order
    cursor: int = 0
    history: deque[str] = field(default_factory=deque)
    pending: list[MemoryChange] = field(default_factory=list)
    pending_lock: threading.Lock = field(default_factory=threading.Lock)
    request_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    consolidations: int = 0
    prefilled_tokens: int = 0
    next_text_id: int = 0
    temp_cursor: int = 0


class HFEngine:
    """ReactionEngine over a transformers vision-language model (CPU or one GPU)."""

    def __init__(self, adapter: VisionLanguageAdapter, config: EngineConfig | None = None) -> None:
        self.adapter = adapter
        self.config = config or EngineConfig()
        self.model = adapter.model
        self.tokenizer = adapter.tokenizer
        self._sessions: dict[str, _SessionContext] = {}
        self._executor = PriorityExecutor("vigil-hf")  # questions first across sessions
        self._trim_heap = _HeapTrimmer()
        gen = getattr(self.model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None) or self.tokenizer.eos_token_id
        self._stop_ids = set(eos if isinstance(eos, list) else [eos])
        self._stop_tensor = torch.tensor(sorted(self._stop_ids), dtype=torch.long)
        text_cfg = self.model.config.text_config
        limit = int(getattr(text_cfg, "max_position_embeddings", 32768))
        self.position_limit = self.config.position_limit or int(limit * 0.9)
        self.layout = adapter.layout
        self._yes_no = (torch.tensor(self.layout.yes_ids), torch.tensor(self.layout.no_ids))
        self._header = torch.tensor(self.layout.header_ids(self.config.system_prompt), dtype=torch.long)

    # -- protocol ------------------------------------------------------------------------------------------
    async def open_session(self, session_id: str) -> None:
        if session_id in self._sessions:
            raise ValueError(f"session {session_id!r} is already open in the engine")
        await self._run(self._open, session_id, priority=PRIORITY["question"])

    async def close_session(self, session_id: str) -> None:
        ctx = self._sessions.pop(session_id, None)
        if ctx is not None:
            async with ctx.request_lock:
                await self._run(ctx.kv.clear)

    def apply(self, session_id: str, changes: Sequence[MemoryChange]) -> None:
        ctx = self._ctx(session_id)
        with ctx.pending_lock:
            ctx.pending.extend(changes)

    async def sync(self, session_id: str) -> int:
        ctx = self._ctx(session_id)
        async with ctx.request_lock:
            return await self._run(self._sync, ctx, priority=PRIORITY["sync"])

    async def answer(self, session_id: str, request: AnswerRequest) -> AsyncIterator[AnswerEvent]:
        ctx = self._ctx(session_id)
        async with ctx.request_lock:
            started = time.perf_counter()
            run = functools.partial(self._run, priority=PRIORITY.get(request.kind, 0))
            synced = await run(self._prepare, ctx)
            cached = ctx.kv.length
            checkpoint = ctx.kv.fork()
            max_new = request.max_new_tokens or self.config.max_new_tokens
            temperature = self.config.temperature if request.temperature is None else request.temperature
            generator = None if request.seed is None else torch.Generator().manual_seed(request.seed)
            ids: list[int] = []
            streamed: list[int] = []  # the ids already carried by a delta
            emitted = ""
            finish = "length"
            ttft = 0.0
            try:
                logits, prompt_tokens = await run(self._begin, ctx, request)
                for _ in range(max_new):
                    if len(ids) < request.min_new_tokens:
                        logits = logits.index_fill(0, self._stop_tensor, float("-inf"))
                    token = self._sample(logits, temperature, generator)
                    if token in self._stop_ids:
                        finish = "stop"
                        break
                    ids.append(token)
                    if not ttft:
                        ttft = time.perf_counter() - started
                    text = self.tokenizer.decode(ids, skip_special_tokens=True)
                    if not text.endswith("\ufffd") and len(text) > len(emitted):
                        # every generated id rides on a delta, also those that added no text of their own
                        yield AnswerDelta(text[len(emitted) :], tuple(ids[len(streamed) :]))
                        emitted, streamed = text, list(ids)
                    if len(ids) == max_new:
                        break
                    logits = await run(self._decode, ctx, token)
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                if len(text) > len(emitted) or len(ids) > len(streamed):
                    yield AnswerDelta(text[len(emitted) :], tuple(ids[len(streamed) :]))
                stats = AnswerStats(
                    synced_tokens=synced,
                    prompt_tokens=prompt_tokens,
                    cached_tokens=cached,
                    generated_tokens=len(ids),
                    retrieved_entries=len(request.recalled),
                    ttft_s=ttft or time.perf_counter() - started,
                    total_s=time.perf_counter() - started,
                    finish_reason=finish,
                )
                await run(self._finish, ctx, checkpoint, request, text)
                checkpoint = None
                yield AnswerDone(text, stats)
            except torch.OutOfMemoryError as exc:
                raise EngineError(f"out of memory while answering: {exc}") from exc
            finally:
                if checkpoint is not None:  # cancelled or failed: restore the context
                    await asyncio.shield(run(ctx.kv.rollback, checkpoint))

    async def probe(self, session_id: str, question: str, t: float) -> float:
        ctx = self._ctx(session_id)
        async with ctx.request_lock:
            return await self._run(self._probe, ctx, question, t, priority=PRIORITY["probe"])

    def context_budget(self) -> ContextBudget:
        """Each entry costs its timestamp and vision start/end beyond its kept tokens; the memory may fill the KV
        cap less the header, the text window, a question and its answer."""
        layout = self.layout

        def overhead(entry: MemoryEntry) -> int:
            return len(layout.stamp_ids(entry.t_start)) + layout.video_framing

        return ContextBudget(memory_context_tokens(self.config, self._header.numel()), overhead)

    def session_stats(self, session_id: str) -> EngineSessionStats:
        ctx = self._ctx(session_id)
        return EngineSessionStats(
            kv_tokens=ctx.kv.length,
            kv_bytes=ctx.kv.nbytes,
            kv_cap=ctx.kv.cap_tokens,
            segments=len(ctx.kv.segments),
            pending_changes=len(ctx.pending),
            consolidations=ctx.consolidations,
            engine_evictions=0,
            prefilled_tokens=ctx.prefilled_tokens,
        )

    async def shutdown(self) -> None:
        for sid in list(self._sessions):
            await self.close_session(sid)
        self._executor.shutdown(wait=True)

    # -- worker-thread internals ---------------------------------------------------------------------------
    async def _run(self, fn: Any, *args: Any, priority: int = 0) -> Any:
        return await self._executor.run(priority, fn, *args)

    def _ctx(self, session_id: str) -> _SessionContext:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise UnknownSessionError(f"no session {session_id!r} in the engine") from None

    def _open(self, session_id: str) -> None:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config.text_config)
        ctx = _SessionContext(kv=SegmentKVCache(cache, self.config.kv_cap_tokens))
        self._sessions[session_id] = ctx
        self._append(ctx, "system", _Record("system", self._header.clone()))

    def _ids(self, text: str) -> torch.Tensor:
        return torch.tensor(self.layout.ids(text), dtype=torch.long)

    def _embed(self, record: _Record) -> tuple[torch.Tensor, _DeepStack | None]:
        """Input embeddings [n, D] of a record, and its DeepStack features at the visual tokens (Qwen3-VL)."""
        embeds = self.adapter.embed_text(record.ids)  # [n, D]
        if record.visual is None:
            return embeds, None
        main, levels = split_visual(record.embeddings, embeds.shape[1])  # [K, D], [L, K, D] | None
        embeds = embeds.clone()
        embeds[record.visual.to(embeds.device)] = main.to(embeds.device, embeds.dtype)
        return embeds, None if levels is None else (record.visual, levels)

    def _embed_all(self, records: Sequence[_Record]) -> tuple[torch.Tensor, _DeepStack | None]:
        """Embeddings [n, D] of records in a row, with their DeepStack features joined."""
        parts = [self._embed(r) for r in records]
        embeds = torch.cat([e for e, _ in parts])  # [n, D]
        stacks = [d for _, d in parts]
        if all(d is None for d in stacks):
            return embeds, None
        no_levels = [torch.zeros(r.num_tokens(), dtype=torch.bool) for r in records]
        mask = torch.cat([d[0] if d is not None else z for d, z in zip(stacks, no_levels, strict=True)])  # [n]
        levels = torch.cat([d[1] for d in stacks if d is not None], dim=1)  # [L, sum K, D]
        return embeds, (mask, levels)

    @torch.inference_mode()
    def _forward(
        self, ctx: _SessionContext, embeds: torch.Tensor, positions: torch.Tensor, deepstack: _DeepStack | None = None
    ) -> torch.Tensor:
        # embeds: [n, D]; positions: [3, n]; deepstack: ([n] bool mask, [L, K, D]) -> logits of the last token [V]
        lm = self.model.model.language_model
        ctx.prefilled_tokens += embeds.shape[0]
        extra: dict[str, Any] = {}
        if deepstack is not None:  # added to the first L layers' hidden states at the visual tokens
            mask, levels = deepstack
            extra["visual_pos_masks"] = mask.unsqueeze(0).to(embeds.device)  # [1, n]
            extra["deepstack_visual_embeds"] = list(levels.to(embeds.device, embeds.dtype).unbind(0))  # L x [K, D]
        out = lm(
            inputs_embeds=embeds.unsqueeze(0),
            position_ids=positions.unsqueeze(1).to(embeds.device),
            past_key_values=ctx.kv.cache,
            use_cache=True,
            **extra,
        )
        return self.model.lm_head(out.last_hidden_state[:, -1]).float()[0]

    def _append(self, ctx: _SessionContext, segment_id: str, record: _Record) -> torch.Tensor:
        record.positions, ctx.cursor = record.layout(ctx.cursor)
        with ctx.kv.append(segment_id, record.kind, record.num_tokens()):
            logits = self._forward(ctx, *self._with_positions(record))
        ctx.records[segment_id] = record
        return logits

    def _with_positions(self, record: _Record) -> tuple[torch.Tensor, torch.Tensor, _DeepStack | None]:
        embeds, deepstack = self._embed(record)
        return embeds, record.positions, deepstack

    def _visual_record(self, entry: MemoryEntry) -> _Record:
        if entry.embeddings is None:
            raise EngineError(
                "the transformers engine needs visual embeddings: perception must run the encoder "
                "(need_embeddings=True)"
            )
        k = entry.num_tokens
        token_ids, first = self.layout.video_segment_ids(entry.t_start, k)
        ids = torch.tensor(token_ids, dtype=torch.long)  # [n]
        visual = torch.zeros(ids.numel(), dtype=torch.bool)  # [n]
        visual[first : first + k] = True
        return _Record("visual", ids, visual, entry.embeddings, entry.positions[1].clone(), entry.positions[2].clone())

    def _take_pending(self, ctx: _SessionContext) -> list[MemoryChange]:
        with ctx.pending_lock:
            changes, ctx.pending = ctx.pending, []
        return changes

    def _sync(self, ctx: _SessionContext) -> int:
        """Apply queued memory changes: evictions and prunes on the cache, new entries prefilled in order.

        An entry that does not fit the KV cap is not prefilled; the others are, then an EngineError names it.
        """
        to_add: dict[str, MemoryEntry] = {}
        changes = self._take_pending(ctx)
        for change in changes:
            if isinstance(change, AddEntry):
                to_add[f"e{change.entry.entry_id}"] = change.entry
            elif isinstance(change, Evict):
                self._drop(ctx, [f"e{i}" for i in change.entry_ids], to_add)
            elif isinstance(change, Prune):
                sid = f"e{change.entry_id}"
                if sid in to_add:
                    to_add[sid] = to_add[sid].select(change.keep)
                elif sid in ctx.records:
                    ctx.kv.prune(sid, change.keep + self._visual_offset(ctx.records[sid]))
                    self._prune_record(ctx.records[sid], change.keep)
            elif isinstance(change, Pool):
                self._drop(ctx, [f"e{i}" for i in change.source_ids], to_add)
                to_add[f"e{change.entry.entry_id}"] = change.entry
        prefilled = 0
        rejected: list[str] = []
        history = sum(ctx.records[s].num_tokens() for s in ctx.history)
        window_left = max(0, self.config.text_window_tokens - history)  # the text window may still grow by this
        for sid, entry in to_add.items():
            if entry.num_tokens == 0:
                continue
            record = self._visual_record(entry)
            if record.num_tokens() + window_left > ctx.kv.room():
                rejected.append(f"{sid} ({record.num_tokens()} tokens)")
                continue
            self._maybe_consolidate(ctx, record.num_tokens())
            self._append(ctx, sid, record)
            prefilled += record.num_tokens()
        if changes and self.adapter.device.type == "cpu":
            self._trim_heap()
        if rejected:
            raise EngineError(
                f"memory entries {', '.join(rejected)} do not fit the KV cap of {ctx.kv.cap_tokens} tokens "
                f"({ctx.kv.length} held, {window_left} kept for the text window); the engine "
                "does not evict on its own: build the memory with the engine's context_budget()"
            )
        return prefilled

    def _drop(self, ctx: _SessionContext, segment_ids: list[str], to_add: dict[str, MemoryEntry]) -> None:
        present = [s for s in segment_ids if s in ctx.records]
        for s in segment_ids:
            to_add.pop(s, None)
        if present:
            ctx.kv.evict(present)
            for s in present:
                del ctx.records[s]

    @staticmethod
    def _visual_offset(record: _Record) -> int:
        return int(record.visual.nonzero()[0])

    @classmethod
    def _prune_record(cls, record: _Record, keep: torch.Tensor) -> None:
        first = cls._visual_offset(record)
        k = int(record.visual.sum())
        keep_mask = torch.ones(record.ids.numel(), dtype=torch.bool)
        local = torch.zeros(k, dtype=torch.bool)
        local[keep] = True
        keep_mask[first : first + k] = local
        record.ids = record.ids[keep_mask]
        record.visual = record.visual[keep_mask]
        record.positions = record.positions[:, keep_mask]
        record.embeddings, record.rows, record.cols = (
            record.embeddings[keep],
            record.rows[keep],
            record.cols[keep],
        )

    def _maybe_consolidate(self, ctx: _SessionContext, needed: int) -> None:
        """Keep the position limit: re-prefill the context with compact positions (renumbers, evicts nothing)."""
        if ctx.cursor + needed + 2048 > self.position_limit:
            self._rebuild(ctx, renumber=True)
            ctx.consolidations += 1

    def _rebuild(self, ctx: _SessionContext, renumber: bool) -> None:
        """Re-prefill the whole context in one pass (compact fresh positions when ``renumber``)."""
        records = list(ctx.records.items())
        ctx.kv.clear()
        ctx.records.clear()
        if renumber:
            ctx.cursor = 0
            for _, record in records:
                record.positions, ctx.cursor = record.layout(ctx.cursor)
        embeds, deepstack = self._embed_all([r for _, r in records])
        positions = torch.cat([r.positions for _, r in records], dim=1)
        total = embeds.shape[0]
        with ctx.kv.append("__rebuild__", "rebuild", total):
            self._forward(ctx, embeds, positions, deepstack)
        ctx.kv.split_last([(sid, r.kind, r.num_tokens()) for sid, r in records])
        ctx.records.update(records)

    def _prepare(self, ctx: _SessionContext) -> int:
        synced = self._sync(ctx)
        if not self.config.reuse_kv:  # baseline: re-read the whole visible context for every request
            self._rebuild(ctx, renumber=False)
        return synced

    def _suffix(self, request: AnswerRequest) -> _Record:
        ids = self.layout.question_ids(request.t, request.question)
        return _Record("question", torch.tensor(ids, dtype=torch.long))

    def _begin(self, ctx: _SessionContext, request: AnswerRequest) -> tuple[torch.Tensor, int]:
        """Prefill recalled entries and the question on top of the cache (rolled back after the answer)."""
        ctx.temp_cursor = ctx.cursor
        prompt = 0
        for entry in request.recalled:
            prompt += self._forward_temporary(ctx, self._visual_record(entry))[1]
        logits, n = self._forward_temporary(ctx, self._suffix(request))
        return logits, prompt + n

    def _forward_temporary(self, ctx: _SessionContext, record: _Record) -> tuple[torch.Tensor, int]:
        """Prefill a record that will be rolled back, at the temporary cursor; returns logits and its size."""
        n = record.num_tokens()
        if n > ctx.kv.room():
            raise EngineError(f"the request needs {n} more tokens; only {ctx.kv.room()} fit under the KV cap")
        record.positions, ctx.temp_cursor = record.layout(ctx.temp_cursor)
        return self._forward(ctx, *self._with_positions(record)), n

    def _decode(self, ctx: _SessionContext, token: int) -> torch.Tensor:
        if ctx.kv.room() < 1:
            raise EngineError("the KV cap was reached while generating")
        positions = torch.full((3, 1), ctx.temp_cursor, dtype=torch.long)
        ctx.temp_cursor += 1
        return self._forward(ctx, self.adapter.embed_text(torch.tensor([token])), positions)

    def _finish(self, ctx: _SessionContext, checkpoint: Any, request: AnswerRequest, text: str) -> None:
        """Roll the request back; remember the exchange in the bounded text window (oldest turns leave first)."""
        ctx.kv.rollback(checkpoint)
        window = self.config.text_window_tokens
        if not request.remember or window == 0:
            return
        ids = self.layout.turn_ids(request.t, request.question, text, window)
        record = _Record("text", torch.tensor(ids, dtype=torch.long))
        while ctx.history and (
            sum(ctx.records[s].num_tokens() for s in ctx.history) + record.num_tokens() > window
            or record.num_tokens() > ctx.kv.room()
        ):
            old = ctx.history.popleft()
            ctx.kv.evict([old])
            del ctx.records[old]
        if record.num_tokens() > ctx.kv.room():  # only when the memory was built without the engine's budget
            log.warning("the exchange at %.1f s does not fit the KV cap; it is not remembered", request.t)
            return
        sid = f"t{ctx.next_text_id}"
        ctx.next_text_id += 1
        self._maybe_consolidate(ctx, record.num_tokens())
        self._append(ctx, sid, record)
        ctx.history.append(sid)

    def _probe(self, ctx: _SessionContext, question: str, t: float) -> float:
        self._prepare(ctx)
        checkpoint = ctx.kv.fork()
        try:
            request = AnswerRequest(self.layout.probe_question(question), t, kind="probe", remember=False)
            logits, _ = self._begin(ctx, request)
        finally:
            ctx.kv.rollback(checkpoint)
        yes, no = self._yes_no
        pair = torch.stack([logits[yes].logsumexp(0), logits[no].logsumexp(0)])
        return float(torch.softmax(pair, dim=0)[0])

    @staticmethod
    def _sample(logits: torch.Tensor, temperature: float, generator: torch.Generator | None = None) -> int:
        # logits: [V]
        if temperature <= 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits.float().cpu() / temperature, dim=-1)  # [V]
        return int(torch.multinomial(probs, 1, generator=generator))
