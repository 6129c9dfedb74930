"""A stateless chat completion's short-lived session: its video or images played in, one question, then closed."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from serving.errors import ServiceError
from serving.openai_compat import ChatError, Conversation, Video
from serving.questions import QueuedAnswer
from serving.schemas import SessionCreate
from serving.service import VigilService
from serving.uploads import UploadError, allowed_source, save_upload

PLAY_TIMEOUT_S = 600.0
"""Longest a request's video may take to be watched (played as fast as perception goes)."""


class StatelessSession:
    """One session of ``owner`` that lives as long as one chat completion; ``close`` ends it (idempotent)."""

    def __init__(self, service: VigilService, owner: str) -> None:
        self.service = service
        self.owner = owner
        self.session_id: str | None = None

    async def ask(self, conversation: Conversation, options: dict[str, Any]) -> QueuedAnswer:
        """Watch the conversation's video or images, then queue its question (the session is closed on failure)."""
        limit = self.service.limits.max_question_chars
        question = conversation.prompt()
        if len(question) > limit:  # refused before a session is made
            raise ChatError(413, "question_too_long", f"the question with its context is limited to {limit}")
        source, cleanup = await self._video_source(conversation.video)
        try:
            # each image is a step of its own: a lone frame is not left waiting for the second of a step
            spec = SessionCreate(frames_per_step=1 if conversation.images else None, metadata={"stateless": "1"})
            view = await self.service.create(self.owner, spec)
            self.session_id = view.id
            if source is not None:
                await self._play(source, cleanup)
                cleanup = None
            elif conversation.images:
                await self._push(conversation.images)
            return await self.service.ask(self.owner, view.id, question, t=None, **options)
        except BaseException:
            if cleanup is not None:
                with contextlib.suppress(OSError):
                    os.unlink(cleanup)
            await self.close()
            raise

    async def close(self) -> None:
        """End the session (nothing happens when there is none)."""
        session_id, self.session_id = self.session_id, None
        if session_id is not None:
            with contextlib.suppress(ServiceError):
                await self.service.delete(self.owner, session_id)

    async def _video_source(self, video: Video | None) -> tuple[str | None, str | None]:
        """The video to play and the temporary file to delete after it (a data URL is written to one)."""
        if video is None:
            return None, None
        try:
            if video.data is not None:
                path = await save_upload(_once(video.data), self.service.limits.max_upload_bytes)
                return path, path
            return allowed_source(video.source or "", self.service.config.server.video_allow), None
        except UploadError as exc:
            raise ChatError(exc.status, exc.code, f"video_url: {exc}", "messages") from None

    async def _play(self, source: str, cleanup: str | None) -> None:
        """Play the video into the session as fast as perception takes it, and wait until it is all in memory."""
        assert self.session_id is not None
        await self.service.play(self.owner, self.session_id, source, speed="max", cleanup=cleanup, label="video_url")
        h = await self.service.get(self.owner, self.session_id)
        try:
            async with asyncio.timeout(PLAY_TIMEOUT_S):
                if h.playback is not None and h.playback.task is not None:
                    await asyncio.wait({h.playback.task})  # its outcome is read below, never raised here
                await h.live.wait_idle()
        except TimeoutError:
            raise ChatError(413, "video_too_long", f"the video took over {PLAY_TIMEOUT_S:g} s to watch") from None
        playback = h.playback
        task = playback.task if playback is not None else None
        if task is not None and not task.cancelled() and task.exception() is not None:
            raise ChatError(400, "unreadable_video", f"video_url: {task.exception()}", "messages")
        if playback is not None and playback.error:
            raise ChatError(400, "unreadable_video", f"video_url: {playback.error}", "messages")
        if playback is not None and playback.frames == 0:
            raise ChatError(400, "unreadable_video", "video_url: the video has no frame to watch", "messages")

    async def _push(self, images: list[bytes]) -> None:
        """Push the images as consecutive frames, a queue's worth at a time, and wait until they are perceived."""
        assert self.session_id is not None
        h = await self.service.get(self.owner, self.session_id)
        if len(images) > self.service.limits.max_frames_per_request:
            raise ChatError(
                413, "too_many_frames", f"at most {self.service.limits.max_frames_per_request} images", "messages"
            )
        step = 1.0 / h.config.perception.fps
        batch = h.config.session.frame_queue
        for start in range(0, len(images), batch):
            frames = [(image, (start + i) * step) for i, image in enumerate(images[start : start + batch])]
            await self.service.push_frames(self.owner, self.session_id, frames)
            await h.live.wait_idle(PLAY_TIMEOUT_S)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
