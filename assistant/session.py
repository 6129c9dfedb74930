"""A session: one live stream's perception, bounded memory and dialogue, feeding a shared reaction engine."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import torch

from assistant.causal import CausalOutbox
from assistant.config import MemoryConfig, VigilConfig
from assistant.events import PerceptionUpdate
from assistant.models.base import VisionLanguageAdapter
from assistant.perception import Perception
from assistant.reaction import AddEntry, AnswerEvent, AnswerRequest, ReactionEngine
from assistant.sources import Frame
from memory.archive import Archive, make_archive
from memory.policies import make_policy
from memory.store import MemoryEntry, VisualMemory

log = logging.getLogger(__name__)


def build_archive(config: MemoryConfig, session_id: str) -> Archive | None:
    """The configured long-term archive of one session (its own directory or Redis namespace), or None."""
    if config.archive == "none":
        return None
    kwargs: dict[str, object] = {"max_entries": config.archive_max_entries}
    if config.archive == "disk":
        kwargs["directory"] = os.path.join(config.archive_dir or ".", session_id)
    elif config.archive == "redis":
        kwargs["url"] = config.redis_url
        kwargs["namespace"] = f"vigil:archive:{session_id}"
    return make_archive(config.archive, **kwargs)


@dataclass(frozen=True, slots=True)
class SessionStats:
    """Perception, memory and engine figures of a session."""

    frames: int
    steps: int
    tokens_seen: int
    tokens_kept: int
    weighted_drop_ratio: float
    memory_tokens: int
    memory_entries: int
    memory_budget: int
    archived_entries: int


class Session:
    """Per-stream state: frames in, memory changes out to the engine, questions answered on the memory."""

    def __init__(
        self,
        session_id: str,
        config: VigilConfig,
        adapter: VisionLanguageAdapter | None,
        engine: ReactionEngine,
        *,
        archive: Archive | None = None,
    ) -> None:
        self.session_id = session_id
        self.config = config
        self.adapter = adapter
        self.engine = engine
        engine_config = config.engine
        raw_frames = engine_config.kind in ("vllm", "remote") and engine_config.vllm.visual_input == "frames"
        # an engine that encodes the kept frames itself needs them instead of our visual embeddings
        self.perception = Perception.from_config(
            config, adapter, need_embeddings=not raw_frames, keep_frames=raw_frames
        )
        self.archive = archive if archive is not None else build_archive(config.memory, session_id)
        policy, context = make_policy(config.memory.policy), engine.context_budget()
        self.memory = VisualMemory(config.memory.budget_tokens, policy, self.archive, context=context)
        self.outbox: CausalOutbox | None = None
        """Where memory changes go on their way to the engine (held behind open probes); None: straight there."""

    async def start(self) -> None:
        """Open the engine side of the session."""
        await self.engine.open_session(self.session_id)

    async def close(self) -> None:
        await self.engine.close_session(self.session_id)

    def ingest(self, frame: Frame) -> PerceptionUpdate | None:
        """Process one sampled frame (blocking compute); memory changes are queued for the engine."""
        update = self.perception.push(frame)
        if update is not None:
            self.remember(update)
        return update

    def flush(self) -> PerceptionUpdate | None:
        """Process a partial last step at the end of a stream."""
        update = self.perception.flush()
        if update is not None:
            self.remember(update)
        return update

    def remember(self, update: PerceptionUpdate) -> None:
        """Store a step's kept tokens in the bounded memory and queue the changes for the engine."""
        if update.num_kept == 0:
            return
        entry = MemoryEntry(
            entry_id=-1,
            chunk_index=update.step,
            t_start=update.t_start,
            t_end=update.t_end,
            token_indices=update.kept_indices,
            positions=update.positions,
            embeddings=update.embeddings,
            features=update.features,
            frames=update.frames,
            round=self.memory.round,
        )
        changes = [AddEntry(entry), *self.memory.add(entry)]
        if self.outbox is None:
            self.engine.apply(self.session_id, changes)
        else:  # the step's last frame time decides what a probe may see
            n = len(update.frame_indices)
            self.outbox.send(changes, update.t_start + (update.t_end - update.t_start) * (n - 1) / max(n, 1))

    def recall(self, question: str) -> tuple[MemoryEntry, ...]:
        """Archived entries most relevant to a question (empty without an archive or recall)."""
        k = self.config.memory.recall
        if not k or self.archive is None or len(self.archive) == 0 or self.adapter is None:
            return ()
        ids = torch.tensor(self.adapter.tokenizer(question, add_special_tokens=False).input_ids)
        query = self.adapter.embed_text(ids).float().mean(0).cpu()  # [D]
        found = []
        try:
            hits = self.archive.search(query, k)
        except ValueError as exc:  # keys of another width (e.g. pixel features): nothing to recall
            log.debug("no recall: %s", exc)
            return ()
        for archived, _score in hits:
            entry = self.archive.get(archived.entry_id)
            if entry is not None and entry.embeddings is not None:
                found.append(entry)
        return tuple(sorted(found, key=lambda e: e.t_start))

    def ask(self, question: str, t: float, **kwargs: object) -> AsyncIterator[AnswerEvent]:
        """Stream the answer to a question asked at stream time ``t``."""
        self.memory.begin_round()
        request = AnswerRequest(question, t, recalled=self.recall(question), **kwargs)
        return self.engine.answer(self.session_id, request)

    def stats(self) -> SessionStats:
        p, m = self.perception.stats, self.memory.stats
        return SessionStats(
            frames=p.frames,
            steps=p.steps,
            tokens_seen=p.tokens,
            tokens_kept=p.kept,
            weighted_drop_ratio=p.weighted_drop_ratio,
            memory_tokens=m.tokens_held,
            memory_entries=m.entries,
            memory_budget=m.budget,
            archived_entries=len(self.archive) if self.archive is not None else 0,
        )
