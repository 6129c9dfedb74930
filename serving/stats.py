"""A hosted session's memory, drop and engine statistics as clients see them."""

from __future__ import annotations

import dataclasses

from assistant.reaction import ReactionEngine
from serving.hosted import Hosted
from serving.schemas import FrameCounts, MemoryStats, MemoryView, PerceptionStats


def memory_view(h: Hosted, engine: ReactionEngine) -> MemoryView:
    """Frames, perception and memory figures of the session, and the engine's own (None if it has none yet)."""
    live = h.live
    stats = live.session.stats()
    try:
        engine_stats = dataclasses.asdict(engine.session_stats(live.session_id))
    except Exception:  # the engine may not know a session it has not seen a change of yet
        engine_stats = None
    return MemoryView(
        id=live.session_id,
        stream_t=live.stream_t,
        frames=FrameCounts(
            received=live.intake.received,
            processed=live.processed_frames,
            perceiving=int(live.perception_loop.busy),
            queued=live.queued_frames,
            queued_bytes=live.intake.queued_bytes,
            dropped=dict(live.frames_dropped),
        ),
        perception=PerceptionStats(
            frames=stats.frames,
            steps=stats.steps,
            tokens_seen=stats.tokens_seen,
            tokens_kept=stats.tokens_kept,
            weighted_drop_ratio=stats.weighted_drop_ratio,
        ),
        memory=MemoryStats(
            tokens=stats.memory_tokens,
            entries=stats.memory_entries,
            budget=stats.memory_budget,
            archived_entries=stats.archived_entries,
            policy=h.config.memory.policy,
        ),
        engine=engine_stats,
    )
