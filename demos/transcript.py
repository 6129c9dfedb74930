"""What a tab shows of its session: the chat transcript and the live figures, folded from session events.

Nothing here imports gradio or touches a session: the page renders what a Transcript keeps, and the plain
endpoints return the same figures.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from assistant.events import SessionEvent

HISTORY_POINTS = 600
"""Points kept per live figure (older ones scroll out)."""
MESSAGE_LABELS = {
    "scene": "**Scene change**",
    "trigger": "**Instruction**",
    "narration": "**Narration:**",
    "instruction": "**Instruction:**",
    "note": "_Note:_",
    "error": "**Error:**",
}


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


class Transcript:
    """A tab's chat and figures: events are applied once each, in order; versions tell a poll what changed."""

    def __init__(self) -> None:
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
        self._by_answer: dict[str, ChatMessage] = {}

    def stream_time(self) -> float:
        """The stream time app messages are stamped with (0 without a session)."""
        return 0.0

    def touch(self) -> None:
        """Note a sign of life of the tab or client."""
        self.last_seen = time.monotonic()

    def _changed(self) -> None:
        self.version += 1

    def note(self, text: str, kind: str = "note") -> None:
        """Add an app message (not from the model) at the current stream time."""
        self.messages.append(ChatMessage("assistant", self.stream_time(), text, kind))
        self._changed()

    def start_over(self) -> None:
        """Start over for a new live session: figures and event cursor reset, the chat stays."""
        self.cursor = 0
        self._by_answer.clear()
        for series in (self.drops, self.memory, self.latency, self.lag):
            series.clear()
        self.error = None
        self.ended = None
        self.figures_version += 1
        self._changed()

    def chat(self) -> list[dict[str, str]]:
        """The transcript as gradio chatbot messages."""
        return [m.render() for m in self.messages]

    def apply_all(self, events: Iterable[SessionEvent]) -> bool:
        """Apply events in order; True when the chat or banner changed."""
        before = self.version
        for event in events:
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
            self._fail(event)
        elif kind == "session_closed":
            self.ended = event.reason
            self._changed()

    def add_question(self, question: str, t: float) -> None:
        """Show a question the user asked at stream time ``t``."""
        self._add(ChatMessage("user", t, question, "question"))

    def fail_answer(self, answer_id: str, error: BaseException) -> None:
        """Mark an answer that is still open as failed (its engine call raised)."""
        message = self._by_answer.pop(answer_id, None)
        if message is not None and not message.done:
            message.done, message.kind = True, "error"
            message.text = f"(failed: {error})"
            self._changed()

    def _add(self, message: ChatMessage) -> None:
        self.messages.append(message)
        self._changed()

    def _fail(self, event: SessionEvent) -> None:
        where = "the engine" if event.code == "engine_error" else "perception"
        self.error = f"{where} failed at {event.t:.1f} s: {event.message}"
        for message in self._by_answer.values():
            if not message.done:
                message.done = True
                message.kind = "error"
                message.text = (message.text + " " if message.text else "") + f"(failed: {event.message})"
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
