"""The orchestrator: many live sessions on one asyncio loop, sharing one reaction engine.

A session is a ``LiveSession`` (``assistant/live_session.py``): frame intake, perception loop, job queue and
reaction loop around one ``Session`` (perception, bounded memory, dialogue). This module creates, finds and
closes them, and is the import surface of the live-session API.
"""

from __future__ import annotations

import uuid

from assistant.config import SessionOptions, VigilConfig
from assistant.errors import SessionClosedError
from assistant.event_log import EventLog
from assistant.intake import FramesPushed
from assistant.live_session import LiveSession
from assistant.models.base import VisionLanguageAdapter
from assistant.reaction import ReactionEngine
from assistant.session import Session

__all__ = ["EventLog", "FramesPushed", "LiveSession", "Orchestrator", "SessionClosedError"]


class Orchestrator:
    """Creates, finds and closes live sessions that share one engine."""

    def __init__(self, engine: ReactionEngine, adapter: VisionLanguageAdapter | None, config: VigilConfig) -> None:
        self.engine = engine
        self.adapter = adapter
        self.config = config
        self.sessions: dict[str, LiveSession] = {}

    async def create_session(
        self, options: SessionOptions | None = None, config: VigilConfig | None = None, session_id: str | None = None
    ) -> LiveSession:
        """Start a session: ``options`` applied to ``config`` (default the orchestrator's); ValueError when invalid."""
        options = options or SessionOptions()
        session_config = options.apply(config or self.config)
        sid = session_id or f"s{uuid.uuid4().hex[:16]}"
        if sid in self.sessions:
            raise ValueError(f"session {sid!r} already exists")
        live = LiveSession(Session(sid, session_config, self.adapter, self.engine), options)
        await live.start()
        self.sessions[sid] = live
        return live

    def get(self, session_id: str) -> LiveSession:
        """The live session ``session_id``; KeyError when there is none."""
        try:
            return self.sessions[session_id]
        except KeyError:
            raise KeyError(f"no session {session_id!r}") from None

    async def close_session(self, session_id: str, reason: str = "closed") -> None:
        """Close and forget a session; KeyError when there is none."""
        live = self.sessions.pop(session_id, None)
        if live is None:
            raise KeyError(f"no session {session_id!r}")
        await live.close(reason)

    async def shutdown(self) -> None:
        """Close every session, then the engine."""
        for sid in list(self.sessions):
            await self.close_session(sid, "shutdown")
        await self.engine.shutdown()
