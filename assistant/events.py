"""Typed records that cross stage boundaries (perception -> memory / decision / reaction)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

STAGES = ("preprocess", "encode", "drop")


@dataclass(frozen=True, slots=True)
class PerceptionUpdate:
    """One processed temporal step: which of its visual tokens were kept, where they sit, and what it cost."""

    step: int
    """Temporal step index since the stream started (0, 1, 2, ...)."""
    t_start: float
    """Stream time of the step's first frame, in seconds."""
    t_end: float
    """Stream time just after the step's last frame (t_start + frames / fps)."""
    frame_indices: tuple[int, ...]
    """Indices (in the sampled sequence) of the frames that make up this step."""
    grid: tuple[int, int]
    """Token grid (rows, cols) of one step."""
    kept_indices: torch.Tensor
    """[K] long: kept tokens, as row-major indices into the step's grid."""
    positions: torch.Tensor
    """[3, K] long: original M-RoPE (t, h, w) positions of the kept tokens (relative to the video start)."""
    drop_ratio: float
    """Share of this step's tokens that were dropped."""
    mean_change: float
    """Mean change of the step's tokens against the reference (pixel difference or 1 - cosine)."""
    changed_fraction: float
    """Share of tokens whose change crossed the drop threshold."""
    reset: bool
    """The drop reference was (re)initialised: everything kept."""
    embeddings: torch.Tensor | None = None
    """[K, D] visual tokens of the kept positions, when the encoder ran."""
    features: torch.Tensor | None = None
    """[K, C] per-token vectors compared by the drop (pixels or embeddings), for memory policies."""
    frames: torch.Tensor | None = None
    """[T, H, W, 3] uint8 resized frames of the step, kept for engines that encode raw frames themselves."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent per stage (see ``STAGES``)."""

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def num_kept(self) -> int:
        return int(self.kept_indices.numel())

    def summary(self) -> dict[str, object]:
        """JSON-ready per-step record."""
        return {
            "frame": self.step,
            "t": round(self.t_start, 3),
            "t_end": round(self.t_end, 3),
            "frames": list(self.frame_indices),
            "tokens": self.num_tokens,
            "kept": self.num_kept,
            "drop_ratio": round(self.drop_ratio, 4),
            "mean_change": round(self.mean_change, 4),
            "changed_fraction": round(self.changed_fraction, 4),
            "ms": {k: round(v * 1000, 2) for k, v in self.timings.items()},
        }


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """Base of everything a session reports: a per-session sequence number (gap-free) and the stream time."""

    seq: int
    session_id: str
    t: float

    type = "event"

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"type": self.type}
        for cls in reversed(type(self).__mro__):
            for name in getattr(cls, "__slots__", ()):
                value = getattr(self, name)
                out[name] = round(value, 4) if isinstance(value, float) else value
        return out


@dataclass(frozen=True, slots=True)
class FrameAccepted(SessionEvent):
    index: int = 0
    type = "frame_accepted"


@dataclass(frozen=True, slots=True)
class FrameDropped(SessionEvent):
    reason: str = "backpressure"
    """``backpressure`` (queue full, oldest dropped), ``invalid`` (unusable frame) or ``failed`` (perception
    raised on it; an ``error`` event says why)."""
    detail: str = ""
    type = "frame_dropped"


@dataclass(frozen=True, slots=True)
class PerceptionStep(SessionEvent):
    step: int = 0
    frames: int = 0
    tokens: int = 0
    kept: int = 0
    drop_ratio: float = 0.0
    memory_tokens: int = 0
    lag_s: float = 0.0
    """Wall seconds between the step's last frame arriving and the step being stored."""
    type = "perception"


@dataclass(frozen=True, slots=True)
class TriggerFired(SessionEvent):
    kind: str = "scene_change"
    score: float = 0.0
    instruction: str | None = None
    type = "trigger"


@dataclass(frozen=True, slots=True)
class AnswerStarted(SessionEvent):
    answer_id: str = ""
    kind: str = "question"
    question: str = ""
    type = "answer_start"


@dataclass(frozen=True, slots=True)
class AnswerDeltaEvent(SessionEvent):
    answer_id: str = ""
    text: str = ""
    type = "answer_delta"


@dataclass(frozen=True, slots=True)
class AnswerFinished(SessionEvent):
    answer_id: str = ""
    kind: str = "question"
    question: str = ""
    text: str = ""
    finish_reason: str = "stop"
    ttft_s: float = 0.0
    total_s: float = 0.0
    cached_tokens: int = 0
    prompt_tokens: int = 0
    synced_tokens: int = 0
    generated_tokens: int = 0
    type = "answer_done"


@dataclass(frozen=True, slots=True)
class ErrorEvent(SessionEvent):
    code: str = "error"
    message: str = ""
    answer_id: str = ""
    """The answer that failed, for ``engine_error``."""
    type = "error"


@dataclass(frozen=True, slots=True)
class SessionClosed(SessionEvent):
    reason: str = "closed"
    type = "session_closed"
