"""Request and response bodies of the HTTP API (validated by pydantic, published in the OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from assistant.config import MAX_INSTRUCTION_CHARS, SessionOptions
from assistant.events import AnswerFinished
from assistant.intake import MAX_STREAM_T

MIN_SPEED, MAX_SPEED = 0.05, 1000.0
"""Bounds of a playback speed factor (slower would keep a session busy for days; faster is ``max``)."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SessionCreate(SessionOptions):
    """Per-session choices on top of the server's configuration (all optional), and client labels."""

    metadata: dict[str, str] = Field(default_factory=dict, max_length=32, description="Client labels, echoed back.")


class VideoView(BaseModel):
    """A video played into a session: ``playing``, ``finished``, ``stopped`` or ``failed``."""

    state: str
    source: str
    frames: int
    duration_s: float | None = None
    end_reason: str | None = None
    error: str | None = None


class SessionView(BaseModel):
    """A session as clients see it."""

    id: str
    status: str
    worker: str
    created: float
    stream_t: float | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    video: VideoView | None = None


class SessionList(BaseModel):
    data: list[SessionView]


class FramesResult(BaseModel):
    """What became of the frames of one request."""

    accepted: int
    dropped: int = Field(description="Older queued frames dropped to make room (backpressure).")
    t: list[float] = Field(description="Stream time given to each accepted frame.")
    queued: int


class Question(_Body):
    question: str = Field(min_length=1, description="What to ask about the stream.")
    t: float | None = Field(
        None, ge=0, le=MAX_STREAM_T, allow_inf_nan=False, description="Stream time of the question (default: now)."
    )
    max_new_tokens: int | None = Field(None, ge=1, le=8192)
    min_new_tokens: int | None = Field(None, ge=0, le=8192, description="Do not end the answer before this many.")
    temperature: float | None = Field(None, ge=0, le=2)


class Instruction(BaseModel):
    """A standing instruction ("tell me when ...")."""

    instruction: str = Field(min_length=1, max_length=MAX_INSTRUCTION_CHARS)


class AnswerView(BaseModel):
    """A finished answer."""

    id: str
    question: str
    answer: str
    t: float
    finish_reason: str
    ttft_s: float
    total_s: float
    prompt_tokens: int
    cached_tokens: int
    generated_tokens: int

    @classmethod
    def of(cls, done: AnswerFinished) -> AnswerView:
        """The view of a finished answer (times rounded to 0.1 ms)."""
        return cls(
            id=done.answer_id,
            question=done.question,
            answer=done.text,
            t=round(done.t, 4),
            finish_reason=done.finish_reason,
            ttft_s=round(done.ttft_s, 4),
            total_s=round(done.total_s, 4),
            prompt_tokens=done.prompt_tokens,
            cached_tokens=done.cached_tokens,
            generated_tokens=done.generated_tokens,
        )


class FrameCounts(BaseModel):
    """Frames of a session: received = processed + perceiving + queued + the sum of dropped, at every moment
    between steps."""

    received: int
    processed: int
    perceiving: int = Field(0, description="Frames being perceived right now.")
    queued: int
    queued_bytes: int = Field(0, description="Decoded bytes of the queued frames.")
    dropped: dict[str, int]


class PerceptionStats(BaseModel):
    """What perception saw and kept."""

    frames: int
    steps: int
    tokens_seen: int
    tokens_kept: int
    weighted_drop_ratio: float


class MemoryStats(BaseModel):
    """The bounded visual memory of a session."""

    tokens: int
    entries: int
    budget: int
    archived_entries: int
    policy: str


class MemoryView(BaseModel):
    """Memory, drop and engine statistics of a session."""

    id: str
    stream_t: float
    frames: FrameCounts
    perception: PerceptionStats
    memory: MemoryStats
    engine: dict[str, Any] | None = Field(description="The engine's own statistics (None before it saw the session).")


class HealthView(BaseModel):
    """Liveness and what this worker runs."""

    status: Literal["ok", "degraded"]
    worker: str
    model: str
    engine: str
    sessions: int
    directory: Literal["redis", "local"]
    directory_ok: bool


class VideoRequest(_Body):
    source: str = Field(min_length=1, max_length=4096, description="A path or URL on the server's allow-list.")
    speed: Literal["realtime", "max"] | float = Field("realtime", description="Playback pace.")

    @field_validator("source")
    @classmethod
    def _printable(cls, source: str) -> str:
        if any(ord(c) < 32 or ord(c) == 127 for c in source):
            raise ValueError("source must not contain control characters (NUL, newlines, ...)")
        return source

    @field_validator("speed")
    @classmethod
    def _speed(cls, speed: str | float) -> str | float:
        if isinstance(speed, float) and not MIN_SPEED <= speed <= MAX_SPEED:
            raise ValueError(f"speed must be realtime, max or a factor in [{MIN_SPEED:g}, {MAX_SPEED:g}]")
        return speed


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody
