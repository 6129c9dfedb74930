"""One tab (or plain-endpoint client) of the browser app: its service session, seen through its transcript.

A tab's session is a session of the service (``serving.service.VigilService``): it is in the session directory,
in ``/v1/sessions`` of its owner, in the metrics and under the limits. Frames, questions and instructions go
through the service; what the tab shows comes from the session's events. Nothing here imports gradio, and
everything runs on the event loop of the service (the web server's loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from assistant.config import VigilConfig
from assistant.orchestrator import LiveSession
from assistant.sources import SourceError, open_source
from demos.errors import UiError
from demos.overlay import drop_line, kept_overlay
from demos.settings import SessionSettings, number, parse_instructions
from demos.tab_stats import LiveFigures, TabStats
from demos.transcript import Transcript
from serving.auth import ANONYMOUS
from serving.schemas import FramesResult
from serving.service import Hosted, ServiceError

if TYPE_CHECKING:
    from serving.service import VigilService

log = logging.getLogger(__name__)

PushResult = Literal["accepted", "skipped", "paused"]
REFUSED_FRAME_CODES = ("invalid_frame", "invalid_time")
SEEN_FRAMES = 16
"""Recent frames a tab keeps (with their stream times) to draw what its newest step kept over."""


@dataclasses.dataclass(frozen=True, slots=True)
class Looks:
    """What the newest step in memory kept, drawn over its frame."""

    image: np.ndarray
    """[h, w, 3] uint8."""
    caption: str
    t: float


class RecordedSource:
    """A frame source whose frames are also noted (stream time, image) as they are read, for the overlay."""

    def __init__(self, source: Any, note: Any, offset: float) -> None:
        self.source, self.note, self.offset = source, note, offset

    @property
    def end(self) -> Any:
        return self.source.end

    def __iter__(self) -> Iterator[Any]:
        for frame in self.source:
            self.note(self.offset + frame.t, frame.image)
            yield frame

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> RecordedSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class UiSession(Transcript):
    """One tab (or API client): its current service session, chat transcript, figures and playback."""

    def __init__(
        self, ui_id: str, tab: str | None, owner: str = ANONYMOUS, service: VigilService | None = None
    ) -> None:
        super().__init__()
        self.ui_id = ui_id
        self.tab = tab
        """The gradio session hash of the tab or client that opened it (its sessions end when it goes)."""
        self.owner = owner
        """The service owner: the API key the user logged in with, or the anonymous owner."""
        self.service = service
        self.live: LiveSession | None = None
        self.settings: SessionSettings | None = None
        self.config: VigilConfig | None = None
        self.player: asyncio.Task | None = None
        self.playing: str | None = None
        self._last_push: float | None = None
        self._next_due: float | None = None
        self.seen: deque[tuple[float, np.ndarray]] = deque(maxlen=SEEN_FRAMES)
        """Recent frames (stream time, [H, W, 3] uint8) from the camera or the played file."""
        self.play_offset = 0.0
        """Stream time of the played file's first frame."""
        self.watching: str | None = None
        """The uploaded file being played (the page shows it in step with the stream)."""
        self.sent_looks: float | None = None
        """Stream time of the overlay the page shows (redrawn when a newer step is in memory)."""
        self._from_file = False
        """The newest frames came from a played file (its time is the stream's time), not the camera."""

    # -- the session -------------------------------------------------------------------------------------
    def stream_time(self) -> float:
        """The stream time messages are given: the session clock (seconds since it started, what webcam frames are
        stamped with), or while a file plays and after, the time of the newest frame the file gave."""
        if self.live is None:
            return 0.0
        if self._from_file:
            last = self.live.last_frame_t
            return self.play_offset if last is None else max(self.play_offset, last)
        return self.live.clock()

    def require_live(self) -> LiveSession:
        """The running live session (UiError once it has ended)."""
        if self.live is None or self.live.closed:
            raise UiError(f"session {self.ui_id} has ended ({self.ended or 'closed'}); start a new one")
        return self.live

    def attach(self, hosted: Hosted, settings: SessionSettings) -> None:
        """Make the service session ``hosted`` this tab's session (after start or a restart with new settings)."""
        self.live, self.settings, self.config = hosted.live, settings, hosted.config
        self._last_push = None
        self._next_due = None
        self.seen.clear()
        self.sent_looks = None
        self._from_file = False
        self.start_over()

    async def hosted(self) -> Hosted:
        """The tab's session as the service holds it (UiError when it ended or the service refuses)."""
        live = self.require_live()
        try:
            return await self.service.get(self.owner, live.session_id)
        except ServiceError as exc:
            raise UiError(exc.message) from None

    async def keep_alive(self) -> None:
        """Note that the tab is still there (the app's reaper spares its session)."""
        self.touch()

    def sync(self) -> bool:
        """Apply every event of the live session not applied yet; True when the chat or banner changed."""
        if self.live is None:
            return False
        return self.apply_all(self.live.events.since(self.cursor))

    # -- frames ------------------------------------------------------------------------------------------
    async def push(self, image: np.ndarray | bytes, t: Any = None, *, camera: bool = False) -> PushResult:
        """Queue a frame: encoded images through the service, camera arrays stamped with the session clock.

        Camera frames are thinned to the session's fps and paused while a file plays. Raises UiError when the
        frame is refused (unreadable image, time going backwards, rate limit): the session goes on.
        """
        self.require_live()
        self.touch()
        if camera:
            return await self._push_camera(image)
        return await self._push_encoded(bytes(image), None if t is None else number("t", t))

    async def _push_camera(self, image: np.ndarray) -> PushResult:
        if self.playing:
            return "paused"  # a file is playing into this session
        live = (await self.hosted()).live
        stamp = live.clock()
        period = 1.0 / self.settings.fps  # thinned on a schedule: a late frame does not delay the next one
        if self._next_due is not None and stamp < self._next_due - min(0.1, period / 4):
            return "skipped"
        self._next_due = stamp + period if self._next_due is None else max(self._next_due + period, stamp + period / 2)
        pushed = await self._push([(image, None)])
        self._last_push = pushed.t[-1]
        self._from_file = False
        self.seen.append((pushed.t[-1], image))
        return "accepted"

    async def _push_encoded(self, data: bytes, t: float | None) -> PushResult:
        if t is not None and t < 0:
            raise UiError(f"frame rejected: frame time must be >= 0, got {t:g}")
        pushed = await self._push([(data, t)])
        self._last_push = pushed.t[-1]
        return "accepted"

    async def _push(self, frames: list[tuple[bytes | np.ndarray, float | None]]) -> FramesResult:
        """Frames through the service (limits, rate, metrics; a refused frame is counted by the session)."""
        live = self.require_live()
        try:
            return await self.service.push_frames(self.owner, live.session_id, frames)
        except ServiceError as exc:
            prefix = "frame rejected: " if exc.code in REFUSED_FRAME_CODES else ""
            raise UiError(prefix + exc.message) from None

    # -- questions and instructions ----------------------------------------------------------------------
    async def ask(self, question: str, **options: Any) -> tuple[str, asyncio.Future]:
        """Queue a question at the current stream time; returns its answer id and future (UiError if unusable).

        ``options`` go to the engine request (e.g. ``min_new_tokens``).
        """
        live = self.require_live()
        self.touch()
        question = (question or "").strip()
        if not question:
            raise UiError("the question is empty")
        self.sync()  # messages before the question stay before it
        t = live.stream_t
        try:
            _, answer_id, done, _ = await self.service.ask(self.owner, live.session_id, question, t, **options)
        except ServiceError as exc:
            raise UiError(exc.message) from None
        done.add_done_callback(_consume)
        self.add_question(question, t)
        return answer_id, done

    async def follow_answer(self, answer_id: str, done: asyncio.Future, timeout: float) -> AsyncIterator[bool]:
        """Yield while the answer grows (True when the chat changed); ends when it is finished, failed or gone."""
        live = self.require_live()
        events = live.events.follow(after=self.cursor)
        deadline = time.monotonic() + timeout
        last = 0.0
        try:
            while not done.done():
                try:  # no timeout scope spans a yield: the wait for each event has its own limit
                    event = await asyncio.wait_for(anext(events), max(0.0, deadline - time.monotonic()))
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    self.note(f"no answer within {timeout:.0f} s", "error")
                    break
                before = self.version
                self.apply(event)
                now = time.monotonic()
                if not done.done() and self.version != before and now - last >= 0.05:
                    last = now
                    yield True
        finally:
            await events.aclose()
        if done.done() and not done.cancelled() and done.exception() is not None:
            self.fail_answer(answer_id, done.exception())
        self.sync()
        yield True

    async def add_instruction(self, text: str) -> str:
        """Watch for a standing instruction from now on."""
        live = self.require_live()
        self.touch()
        (instruction,) = parse_instructions(text) or ("",)
        if not instruction:
            raise UiError("the instruction is empty")
        try:
            await self.service.add_instruction(self.owner, live.session_id, instruction)
        except ServiceError as exc:
            raise UiError(exc.message) from None
        self.settings = self.settings.with_instruction(instruction)
        self.note(f"Watching for: “{instruction}”")
        return instruction

    # -- playback ----------------------------------------------------------------------------------------
    async def play(self, spec: str, label: str, *, shown: str | None = None) -> None:
        """Play a video file or stream URL into the session as live (real-time pace; camera frames pause).

        The stream clock of a session that has had no frame starts at Play: the file's time is the stream's time.
        ``shown`` is the file the page plays along (``watching``).
        """
        live = (await self.hosted()).live
        self.touch()
        await self.stop_playback()
        try:
            source = await asyncio.to_thread(open_source, spec, self.settings.fps, "realtime")
        except (SourceError, ValueError, OSError) as exc:
            raise UiError(f"cannot play {label}: {exc}") from None
        offset = 0.0 if live.last_frame_t is None else live.clock()
        if live.last_frame_t is not None:
            offset = max(offset, live.last_frame_t + 1.0 / self.settings.fps)
        self.playing, self.watching, self.play_offset = label, shown, offset
        self._from_file = True
        self.note(f"Playing {label} as live")
        recorded = RecordedSource(source, lambda t, image: self.seen.append((t, image)), offset)
        self.player = asyncio.create_task(self._play(live, recorded, offset, label), name=f"play-{self.ui_id}")

    async def _play(self, live: LiveSession, source: Any, offset: float, label: str) -> None:
        outcome = "ended"
        try:
            async with contextlib.aclosing(live.play(source, offset)) as pushed:
                async for stamp in pushed:
                    self._last_push = stamp
            if live.closed:
                return
            end = getattr(source, "end", None)
            if end is not None and end.reason != "eof":
                outcome = f"ended ({end.reason}: {end.message})" if getattr(end, "message", "") else end.reason
        except asyncio.CancelledError:
            outcome = "stopped"
            raise
        except Exception as exc:  # a broken source fails alone
            log.warning("playback of %s failed: %s", label, exc)
            outcome = f"failed: {exc}"
            self.error = f"playback of {label} failed: {exc}"
        finally:
            if self.player is asyncio.current_task():
                self.player = None
                self.playing = self.watching = None
            if not live.closed:
                self.note(f"{label} {outcome}")

    async def stop_playback(self) -> bool:
        """Stop a playing file or stream; True when one was playing."""
        task, self.player = self.player, None
        self.playing = self.watching = None
        if task is None or task.done():
            return False
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return True

    # -- figures -----------------------------------------------------------------------------------------
    def watch_position(self) -> float | None:
        """Where the played file is, in its own seconds (None when no uploaded file plays)."""
        if self.watching is None or self.live is None:
            return None
        return max(0.0, self.live.stream_t - self.play_offset)

    def looks(self) -> Looks | None:
        """The newest step in memory, its kept tokens drawn over the frame it saw (None before one)."""
        if self.live is None or not self.seen:
            return None
        session = self.live.session
        grid, entries = session.perception.grid, session.memory.entries
        if grid is None or not entries:
            return None
        entry = max(entries, key=lambda e: e.t_end)
        seen = list(self.seen)
        during = [f for f in seen if entry.t_start - 1e-6 <= f[0] < entry.t_end + 1e-6]
        before = [f for f in seen if f[0] <= entry.t_end + 1e-6]
        t, frame = (during or before or seen)[-1]
        kept = entry.token_indices.numpy()  # [K]
        tokens = grid[0] * grid[1]
        caption = drop_line(len(set(kept.tolist())), tokens, entry.t_start)
        return Looks(kept_overlay(frame, grid, kept), caption, t)

    def stats(self) -> TabStats:
        """The figures of the current live session."""
        head = TabStats(
            self.ui_id, self.live.session_id if self.live else None, self.settings, self.ended, self.error, self.playing
        )
        if self.live is None:
            return head
        live = self.live
        stats = live.session.stats()
        dropped = dict(live.frames_dropped)
        total = live.processed_frames + sum(dropped.values())
        figures = LiveFigures(
            stream_t=round(live.stream_t, 3),
            processed_frames=live.processed_frames,
            frames_dropped=dropped,
            frame_drop_share=round(sum(dropped.values()) / total, 4) if total else 0.0,
            steps=stats.steps,
            tokens_seen=stats.tokens_seen,
            tokens_kept=stats.tokens_kept,
            drop_ratio=round(stats.weighted_drop_ratio, 4),
            memory_tokens=stats.memory_tokens,
            memory_budget=stats.memory_budget,
            archived_entries=stats.archived_entries,
            answers=len(self.latency),
            last_ttft_s=round(self.latency[-1][1], 4) if self.latency else None,
            last_total_s=round(self.latency[-1][2], 4) if self.latency else None,
            last_seq=self.cursor,
        )
        return dataclasses.replace(head, live=figures)


def _consume(future: asyncio.Future) -> None:
    """Mark a future's exception as retrieved (it is reported as an event and in the chat)."""
    if not future.cancelled():
        future.exception()
