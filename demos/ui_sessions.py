"""Per-tab state of the browser app: one live session per tab, its chat transcript and its live figures.

Nothing here imports gradio: the gradio module renders what these objects keep, and the same objects serve the
plain (non-streaming) endpoints. Everything runs on the event loop of the orchestrator (the web server's loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import ValidationError

from assistant.config import (
    MAX_INSTRUCTION_CHARS,
    MAX_INSTRUCTIONS,
    SessionOptions,
    VigilConfig,
    format_validation_error,
)
from assistant.decision import InstructionMonitor
from assistant.events import SessionEvent
from assistant.orchestrator import LiveSession, Orchestrator, SessionClosedError
from assistant.sources import SourceError, open_source

log = logging.getLogger(__name__)

PROACTIVE_MODES = ("off", "scene", "narrate")
HISTORY_POINTS = 600
"""Points kept per live figure (older ones scroll out)."""
STREAM_URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "rtmps://", "http://", "https://", "srt://", "udp://")
PushResult = Literal["accepted", "skipped", "paused"]
MESSAGE_LABELS = {
    "scene": "**Scene change**",
    "trigger": "**Instruction**",
    "narration": "**Narration:**",
    "instruction": "**Instruction:**",
    "note": "_Note:_",
    "error": "**Error:**",
}


class UiError(ValueError):
    """A problem with one request from the page or a client: shown as a clear message, nothing else is harmed."""


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What a tab chooses for its session: sampling, drop threshold, memory budget, proactive mode, instructions."""

    fps: float
    drop_threshold: float | None
    """None: the drop mode's default threshold."""
    budget_tokens: int
    proactive: str = "off"
    instructions: tuple[str, ...] = ()

    @classmethod
    def defaults(cls, config: VigilConfig, proactive: str = "scene") -> SessionSettings:
        """The app's starting settings: the configured ones, with scene-change messages on."""
        return cls(config.perception.fps, config.perception.drop.threshold, config.memory.budget_tokens, proactive)

    def describe(self) -> str:
        threshold = "default" if self.drop_threshold is None else f"{self.drop_threshold:g}"
        return (
            f"{self.fps:g} fps, drop threshold {threshold}, budget {self.budget_tokens} tokens, "
            f"proactive {self.proactive}" + (f", {len(self.instructions)} instruction(s)" if self.instructions else "")
        )


def parse_instructions(text: str | None) -> tuple[str, ...]:
    """Standing instructions from a text box, one per line (UiError when there are too many or too long)."""
    lines = tuple(line.strip() for line in (text or "").splitlines() if line.strip())
    if len(lines) > MAX_INSTRUCTIONS:
        raise UiError(f"at most {MAX_INSTRUCTIONS} standing instructions, got {len(lines)}")
    for line in lines:
        if len(line) > MAX_INSTRUCTION_CHARS:
            raise UiError(f"a standing instruction may have at most {MAX_INSTRUCTION_CHARS} characters")
    return lines


def _number(name: str, value: Any, *, integer: bool = False) -> float | int:
    if isinstance(value, str):
        value = value.strip()
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UiError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise UiError(f"{name} must be a finite number, got {value!r}")
    if integer:
        if number != int(number):
            raise UiError(f"{name} must be a whole number, got {value!r}")
        return int(number)
    return number


def make_settings(
    config: VigilConfig,
    fps: Any,
    drop_threshold: Any,
    budget_tokens: Any,
    proactive: str | None = "off",
    instructions: str | tuple[str, ...] | list[str] | None = None,
) -> tuple[SessionSettings, VigilConfig]:
    """Validated settings and the session config they give (``config`` with them applied).

    Raises UiError naming every problem (a bad fps, a threshold outside its mode's range, a budget the engine's
    KV cap cannot hold, ...).
    """
    proactive = proactive or "off"
    if proactive not in PROACTIVE_MODES:
        raise UiError(f"proactive must be one of {', '.join(PROACTIVE_MODES)}, got {proactive!r}")
    if isinstance(instructions, str | None):
        instructions = parse_instructions(instructions)
    else:
        instructions = parse_instructions("\n".join(instructions))
    fps = _number("fps", fps)
    threshold = None if drop_threshold in (None, "") else _number("drop threshold", drop_threshold)
    budget = _number("token budget", budget_tokens, integer=True)
    max_fps = config.server.limits.max_fps
    if fps > max_fps:
        raise UiError(f"fps must be at most {max_fps:g} (server limit), got {fps:g}")
    try:
        session_config = SessionOptions(fps=fps, drop_threshold=threshold, budget_tokens=budget).apply(config)
    except ValidationError as exc:
        raise UiError(f"invalid settings: {format_validation_error(exc)}") from None
    settings = SessionSettings(fps, threshold, budget, proactive, instructions)
    return settings, session_config


@dataclass(slots=True)
class ChatMessage:
    """One line of a tab's chat, with the stream time it refers to."""

    role: Literal["user", "assistant"]
    t: float
    text: str
    kind: str = "answer"
    """question, answer, narration, instruction, scene, note or error."""
    answer_id: str = ""
    done: bool = True

    def render(self) -> dict[str, str]:
        """A gradio chatbot message: the stream time, a label for proactive messages, the text."""
        label = MESSAGE_LABELS.get(self.kind, "")
        text = self.text if self.text or self.done else "…"
        if not self.done and self.text:
            text += " …"
        body = " ".join(part for part in (label, text) if part)
        return {"role": self.role, "content": f"`{self.t:.1f} s` {body}"}


class UiSession:
    """One tab (or API client): its current live session, chat transcript, figures and playback."""

    def __init__(self, ui_id: str, owner: str | None) -> None:
        self.ui_id = ui_id
        self.owner = owner
        self.live: LiveSession | None = None
        self.settings: SessionSettings | None = None
        self.config: VigilConfig | None = None
        self.messages: list[ChatMessage] = []
        self.cursor = 0
        """Sequence number of the last event of the current live session applied here."""
        self.version = 0
        """Bumped on every change of the chat or the banner (a poll sends only when it moved)."""
        self.figures_version = 0
        self.sent_version = -1
        """The version a page last received (the app's bookkeeping)."""
        self.sent_figures = -1
        self.drops: deque[tuple[float, float]] = deque(maxlen=HISTORY_POINTS)
        self.memory: deque[tuple[float, int]] = deque(maxlen=HISTORY_POINTS)
        self.latency: deque[tuple[float, float, float]] = deque(maxlen=HISTORY_POINTS)
        self.lag: deque[tuple[float, float]] = deque(maxlen=HISTORY_POINTS)
        self.error: str | None = None
        """The latest engine or perception error (cleared by the next answer that finishes)."""
        self.ended: str | None = None
        """Why the session ended, once it did."""
        self.last_seen = time.monotonic()
        self._t0 = time.monotonic()
        self._last_push: float | None = None
        self._next_due: float | None = None
        self._by_answer: dict[str, ChatMessage] = {}
        self.player: asyncio.Task | None = None
        self.playing: str | None = None

    # -- bookkeeping ---------------------------------------------------------------------------------------
    def touch(self) -> None:
        self.last_seen = time.monotonic()

    def _changed(self) -> None:
        self.version += 1

    def note(self, text: str, kind: str = "note") -> None:
        """Add an app message (not from the model) at the current stream time."""
        self.messages.append(ChatMessage("assistant", self.stream_time(), text, kind))
        self._changed()

    def require_live(self) -> LiveSession:
        if self.live is None or self.live.closed:
            raise UiError(f"session {self.ui_id} has ended ({self.ended or 'closed'}); start a new one")
        return self.live

    def stream_time(self) -> float:
        """Seconds since this tab's live session started (the stream time of webcam frames)."""
        return time.monotonic() - self._t0

    def attach(self, live: LiveSession, settings: SessionSettings, config: VigilConfig) -> None:
        """Make ``live`` this tab's session (after start or a restart with new settings)."""
        self.live, self.settings, self.config = live, settings, config
        self.cursor = 0
        self._t0 = time.monotonic()
        self._last_push = None
        self._next_due = None
        self._by_answer.clear()
        self.drops.clear()
        self.memory.clear()
        self.latency.clear()
        self.lag.clear()
        self.error = None
        self.ended = None
        self.figures_version += 1
        self._changed()

    # -- events --------------------------------------------------------------------------------------------
    def sync(self) -> bool:
        """Apply every event of the live session not applied yet; True when the chat or banner changed."""
        if self.live is None:
            return False
        before = self.version
        for event in self.live.events.since(self.cursor):
            self.apply(event)
        return self.version != before

    def apply(self, event: SessionEvent) -> None:
        """Fold one session event into the transcript and figures (events already applied are ignored)."""
        if event.seq <= self.cursor:
            return
        self.cursor = event.seq
        kind = event.type
        if kind == "perception":
            self.drops.append((event.t, event.drop_ratio))
            self.memory.append((event.t, event.memory_tokens))
            self.lag.append((event.t, event.lag_s))
            self.figures_version += 1
        elif kind == "trigger":
            if event.kind == "scene_change":
                self._add(ChatMessage("assistant", event.t, f"(score {event.score:.2f})", "scene"))
            else:
                self._add(ChatMessage("assistant", event.t, f"“{event.instruction}” is happening", "trigger"))
        elif kind == "answer_start":
            label = "answer" if event.kind == "question" else event.kind
            message = ChatMessage("assistant", event.t, "", label, event.answer_id, done=False)
            self._by_answer[event.answer_id] = message
            self._add(message)
        elif kind == "answer_delta":
            message = self._by_answer.get(event.answer_id)
            if message is not None:
                message.text += event.text
                self._changed()
        elif kind == "answer_done":
            self._finish(event)
        elif kind == "error":
            where = "the engine" if event.code == "engine_error" else "perception"
            self.error = f"{where} failed at {event.t:.1f} s: {event.message}"
            for message in self._by_answer.values():
                if not message.done:
                    message.done = True
                    message.kind = "error"
                    message.text = (message.text + " " if message.text else "") + f"(failed: {event.message})"
            self._changed()
        elif kind == "session_closed":
            self.ended = event.reason
            self._changed()

    def _add(self, message: ChatMessage) -> None:
        self.messages.append(message)
        self._changed()

    def _finish(self, event: SessionEvent) -> None:
        message = self._by_answer.pop(event.answer_id, None)
        if message is None:
            return
        message.done = True
        message.text = (event.text or message.text).strip()
        if event.finish_reason == "cancelled":
            message.text = (message.text + " " if message.text else "") + "_(cancelled)_"
        else:
            if not message.text:
                message.text = "_(no answer)_"
            self.latency.append((event.t, event.ttft_s, event.total_s))
            self.figures_version += 1
            self.error = None
        self._changed()

    def chat(self) -> list[dict[str, str]]:
        """The transcript as gradio chatbot messages."""
        return [m.render() for m in self.messages]

    # -- frames, questions, instructions -------------------------------------------------------------------
    def push(self, image: np.ndarray | bytes, t: float | None = None, *, camera: bool = False) -> PushResult:
        """Queue a frame; camera frames are stamped with the tab's clock and thinned to the session's fps.

        Raises UiError when the frame is rejected (unreadable image, time going backwards): the session goes on.
        """
        live = self.require_live()
        self.touch()
        if camera and self.playing:
            return "paused"  # a file is playing into this session
        stamp = self.stream_time() if t is None else _number("t", t)
        if camera:  # thin to the session's fps on a schedule (a late frame does not delay the next one)
            period = 1.0 / self.settings.fps
            if self._next_due is not None and stamp < self._next_due - min(0.1, period / 4):
                return "skipped"
            self._next_due = (
                stamp + period if self._next_due is None else max(self._next_due + period, stamp + period / 2)
            )
        if not live.push_frame(image, stamp):
            # push_frame reported why as its last event (nothing else runs in between on this loop)
            recent = live.events.since(self.cursor)
            detail = recent[-1].detail if recent and recent[-1].type == "frame_dropped" else "rejected"
            raise UiError(f"frame rejected: {detail}")
        self._last_push = stamp
        return "accepted"

    def ask(self, question: str, max_chars: int, **options: Any) -> tuple[str, asyncio.Future]:
        """Queue a question at the current stream time; returns its answer id and future (UiError if unusable).

        ``options`` go to the engine request (e.g. ``min_new_tokens``).
        """
        live = self.require_live()
        self.touch()
        question = (question or "").strip()
        if not question:
            raise UiError("the question is empty")
        if len(question) > max_chars:
            raise UiError(f"the question has {len(question)} characters; at most {max_chars} are allowed")
        self.sync()  # messages before the question stay before it
        t = live.stream_t
        try:
            answer_id, done = live.ask(question, t, **options)
        except SessionClosedError as exc:
            raise UiError(str(exc)) from None
        done.add_done_callback(_consume)
        self.messages.append(ChatMessage("user", t, question, "question"))
        self._changed()
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
            message = self._by_answer.pop(answer_id, None)
            if message is not None and not message.done:
                message.done, message.kind = True, "error"
                message.text = f"(failed: {done.exception()})"
                self._changed()
        self.sync()
        yield True

    def add_instruction(self, text: str) -> str:
        """Watch for a standing instruction from now on."""
        live = self.require_live()
        self.touch()
        (instruction,) = parse_instructions(text) or ("",)
        if not instruction:
            raise UiError("the instruction is empty")
        if len(live.monitors) >= MAX_INSTRUCTIONS:
            raise UiError(f"at most {MAX_INSTRUCTIONS} standing instructions per session")
        live.add_instruction(InstructionMonitor(instruction))
        self.settings = SessionSettings(
            self.settings.fps,
            self.settings.drop_threshold,
            self.settings.budget_tokens,
            self.settings.proactive,
            (*self.settings.instructions, instruction),
        )
        self.note(f"Watching for: “{instruction}”")
        return instruction

    # -- playback ------------------------------------------------------------------------------------------
    async def play(self, spec: str, label: str) -> None:
        """Play a video file or stream URL into the session as live (real-time pace; camera frames pause)."""
        live = self.require_live()
        self.touch()
        await self.stop_playback()
        try:
            source = await asyncio.to_thread(open_source, spec, self.settings.fps, "realtime")
        except (SourceError, ValueError, OSError) as exc:
            raise UiError(f"cannot play {label}: {exc}") from None
        offset = self.stream_time()
        if self._last_push is not None:
            offset = max(offset, self._last_push + 1.0 / self.settings.fps)
        self.playing = label
        self.note(f"Playing {label} as live")
        self.player = asyncio.create_task(self._play(live, source, offset, label), name=f"play-{self.ui_id}")

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
                self.playing = None
            if not live.closed:
                self.note(f"{label} {outcome}")

    async def stop_playback(self) -> bool:
        """Stop a playing file or stream; True when one was playing."""
        task, self.player = self.player, None
        self.playing = None
        if task is None or task.done():
            return False
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return True

    # -- figures -------------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """JSON-ready figures of the current live session."""
        out: dict[str, Any] = {
            "session_id": self.ui_id,
            "live_session_id": self.live.session_id if self.live else None,
            "settings": None,
            "ended": self.ended,
            "error": self.error,
            "playing": self.playing,
        }
        if self.settings is not None:
            s = self.settings
            out["settings"] = {
                "fps": s.fps,
                "drop_threshold": s.drop_threshold,
                "budget_tokens": s.budget_tokens,
                "proactive": s.proactive,
                "instructions": list(s.instructions),
            }
        if self.live is None:
            return out
        live = self.live
        stats = live.session.stats()
        dropped = dict(live.frames_dropped)
        total = live.processed_frames + sum(dropped.values())
        out.update(
            {
                "stream_t": round(live.stream_t, 3),
                "processed_frames": live.processed_frames,
                "frames_dropped": dropped,
                "frame_drop_share": round(sum(dropped.values()) / total, 4) if total else 0.0,
                "steps": stats.steps,
                "tokens_seen": stats.tokens_seen,
                "tokens_kept": stats.tokens_kept,
                "drop_ratio": round(stats.weighted_drop_ratio, 4),
                "memory_tokens": stats.memory_tokens,
                "memory_budget": stats.memory_budget,
                "archived_entries": stats.archived_entries,
                "answers": len(self.latency),
                "last_ttft_s": round(self.latency[-1][1], 4) if self.latency else None,
                "last_total_s": round(self.latency[-1][2], 4) if self.latency else None,
                "last_seq": self.cursor,
            }
        )
        return out


def _consume(future: asyncio.Future) -> None:
    """Mark a future's exception as retrieved (it is reported as an event and in the chat)."""
    if not future.cancelled():
        future.exception()


@dataclass(slots=True)
class SessionRegistry:
    """The app's tabs and API clients, each with its own live session on the shared orchestrator.

    A tab's session ends when the tab closes (``close_owner``) or after ``idle_timeout_s`` without a sign of life
    (a vanished client: the page polls every second, so only a dead tab goes quiet).
    """

    orchestrator: Orchestrator
    config: VigilConfig
    idle_timeout_s: float = 300.0
    reap_every_s: float = 5.0
    sessions: dict[str, UiSession] = field(default_factory=dict)
    _reaper: asyncio.Task | None = None

    def __post_init__(self) -> None:
        if not self.idle_timeout_s > 0 or not self.reap_every_s > 0:
            raise ValueError("idle_timeout_s and reap_every_s must be positive")

    async def open(self, settings: SessionSettings, config: VigilConfig, owner: str | None = None) -> UiSession:
        """A new tab session with its own live session (UiError when the server is full or the engine fails)."""
        self.ensure_reaper()
        ui = UiSession(f"u{uuid.uuid4().hex[:16]}", owner)
        await self._start_live(ui, settings, config)
        self.sessions[ui.ui_id] = ui
        return ui

    async def restart(self, ui: UiSession, settings: SessionSettings, config: VigilConfig) -> UiSession:
        """Replace a tab's live session by one with new settings (the chat stays)."""
        self.ensure_reaper()
        await ui.stop_playback()
        if ui.live is not None and not ui.live.closed:
            await self._close_live(ui, "restarted")
        await self._start_live(ui, settings, config)
        self.sessions[ui.ui_id] = ui
        return ui

    async def _start_live(self, ui: UiSession, settings: SessionSettings, config: VigilConfig) -> None:
        limit = self.config.server.limits.max_sessions
        if len(self.orchestrator.sessions) >= limit:
            raise UiError(f"the server is full ({limit} open sessions); try again later")
        options = SessionOptions(proactive=settings.proactive, instructions=settings.instructions)
        try:
            live = await self.orchestrator.create_session(options, config=config)
        except Exception as exc:
            log.warning("could not start a session: %s", exc)
            raise UiError(f"the engine could not start a session: {exc}") from None
        ui.attach(live, settings, config)
        ui.note(f"Session started: {settings.describe()}")
        ui.touch()

    def get(self, ui_id: str | None) -> UiSession:
        ui = self.sessions.get(ui_id or "")
        if ui is None:
            raise UiError(f"no session {ui_id!r} (it ended or expired); start a new one")
        ui.touch()
        return ui

    async def _close_live(self, ui: UiSession, reason: str) -> None:
        live = ui.live
        if live is None or live.closed:
            return
        with contextlib.suppress(KeyError):
            await self.orchestrator.close_session(live.session_id, reason)
        if not live.closed:  # not (or no longer) known to the orchestrator
            await live.close(reason)
        ui.sync()

    async def close(self, ui_id: str, reason: str = "closed") -> bool:
        """End a tab's session; False when there was none."""
        ui = self.sessions.pop(ui_id, None)
        if ui is None:
            return False
        await ui.stop_playback()
        await self._close_live(ui, reason)
        return True

    async def close_owner(self, owner: str, reason: str = "tab closed") -> int:
        """End every session a browser tab (gradio session hash) opened; returns how many."""
        ids = [ui_id for ui_id, ui in self.sessions.items() if ui.owner == owner]
        for ui_id in ids:
            await self.close(ui_id, reason)
        return len(ids)

    async def reap(self, now: float | None = None) -> list[str]:
        """End the sessions of clients not seen for ``idle_timeout_s``."""
        now = time.monotonic() if now is None else now
        stale = [ui_id for ui_id, ui in self.sessions.items() if now - ui.last_seen > self.idle_timeout_s]
        for ui_id in stale:
            await self.close(ui_id, "idle timeout")
        return stale

    def ensure_reaper(self) -> None:
        """Start the idle reaper on the running loop (once; again if that loop changed)."""
        loop = asyncio.get_running_loop()
        task = self._reaper
        if task is not None and not task.done() and task.get_loop() is loop:
            return
        self._reaper = loop.create_task(self._reap_forever(), name="vigil-ui-reaper")

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop the sessions run on (known once the first session opened)."""
        return self._reaper.get_loop() if self._reaper is not None else None

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reap_every_s)
            try:
                await self.reap()
            except Exception:  # the reaper must outlive one bad close
                log.exception("closing idle sessions failed")

    async def close_all(self, reason: str = "shutdown") -> None:
        """End every session and the reaper."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reaper
            self._reaper = None
        for ui_id in list(self.sessions):
            await self.close(ui_id, reason)
