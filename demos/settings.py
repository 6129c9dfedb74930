"""What a tab chooses for its session, validated with the one set of bounds of ``assistant.config``."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, get_args

from pydantic import ValidationError

from assistant.config import (
    MAX_INSTRUCTION_CHARS,
    MAX_INSTRUCTIONS,
    Proactive,
    SessionOptions,
    VigilConfig,
    format_validation_error,
)
from demos.errors import UiError
from serving.schemas import SessionCreate

PROACTIVE_MODES: tuple[str, ...] = get_args(Proactive)


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What a tab chooses for its session: sampling, drop threshold, memory budget, proactive mode, instructions."""

    fps: float
    drop_threshold: float | None
    """None: the drop mode's default threshold."""
    budget_tokens: int
    proactive: str = "off"
    instructions: tuple[str, ...] = ()
    frames_per_step: int | None = None
    """None: the model's temporal patch (2 for Qwen-VL)."""

    @classmethod
    def defaults(cls, config: VigilConfig, proactive: str = "scene") -> SessionSettings:
        """The app's starting settings: the configured ones, with scene-change messages on."""
        return cls(
            config.perception.fps,
            config.perception.drop.threshold,
            config.memory.budget_tokens,
            proactive,
            frames_per_step=config.perception.frames_per_step,
        )

    def spec(self) -> SessionCreate:
        """The service's request for a session with these settings."""
        return SessionCreate(
            fps=self.fps,
            drop_threshold=self.drop_threshold,
            budget_tokens=self.budget_tokens,
            proactive=self.proactive,
            instructions=self.instructions,
            frames_per_step=self.frames_per_step,
        )

    def with_instruction(self, instruction: str) -> SessionSettings:
        """These settings with one more standing instruction."""
        return dataclasses.replace(self, instructions=(*self.instructions, instruction))

    def describe(self) -> str:
        """One line for the chat: what the session runs with."""
        threshold = "default" if self.drop_threshold is None else f"{self.drop_threshold:g}"
        step = "" if self.frames_per_step is None else f", {self.frames_per_step} frame(s) per step"
        return (
            f"{self.fps:g} fps{step}, drop threshold {threshold}, budget {self.budget_tokens} tokens, "
            f"proactive {self.proactive}" + (f", {len(self.instructions)} instruction(s)" if self.instructions else "")
        )

    def view(self) -> dict[str, Any]:
        """JSON-ready settings (what the plain endpoints return)."""
        return {
            "fps": self.fps,
            "drop_threshold": self.drop_threshold,
            "budget_tokens": self.budget_tokens,
            "proactive": self.proactive,
            "instructions": list(self.instructions),
            "frames_per_step": self.frames_per_step,
        }


def parse_instructions(text: str | None) -> tuple[str, ...]:
    """Standing instructions from a text box, one per line (UiError when there are too many or too long)."""
    lines = tuple(line.strip() for line in (text or "").splitlines() if line.strip())
    if len(lines) > MAX_INSTRUCTIONS:
        raise UiError(f"at most {MAX_INSTRUCTIONS} standing instructions, got {len(lines)}")
    for line in lines:
        if len(line) > MAX_INSTRUCTION_CHARS:
            raise UiError(f"a standing instruction may have at most {MAX_INSTRUCTION_CHARS} characters")
    return lines


def number(name: str, value: Any, *, integer: bool = False) -> float | int:
    """A finite number from a form field or a client (UiError naming ``name`` otherwise)."""
    if isinstance(value, str):
        value = value.strip()
    try:
        parsed = float(value)
    except (TypeError, ValueError):
        raise UiError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(parsed):
        raise UiError(f"{name} must be a finite number, got {value!r}")
    if integer:
        if parsed != int(parsed):
            raise UiError(f"{name} must be a whole number, got {value!r}")
        return int(parsed)
    return parsed


def make_settings(
    config: VigilConfig,
    fps: Any,
    drop_threshold: Any,
    budget_tokens: Any,
    proactive: str | None = "off",
    instructions: str | tuple[str, ...] | list[str] | None = None,
    frames_per_step: Any = None,
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
    fps = number("fps", fps)
    threshold = None if _empty(drop_threshold) else number("drop threshold", drop_threshold)
    step = None if _empty(frames_per_step) else number("frames per step", frames_per_step, integer=True)
    budget = number("token budget", budget_tokens, integer=True)
    max_fps = config.server.limits.max_fps
    if fps > max_fps:
        raise UiError(f"fps must be at most {max_fps:g} (server limit), got {fps:g}")
    # validated once, as the whole config they give: a problem names its place there (``perception.fps: ...``)
    options = SessionOptions.model_construct(
        fps=fps, drop_threshold=threshold, budget_tokens=budget, frames_per_step=step
    )
    try:
        session_config = options.apply(config)
    except ValidationError as exc:
        raise UiError(f"invalid settings: {format_validation_error(exc)}") from None
    settings = SessionSettings(fps, threshold, budget, proactive, instructions, step)
    return settings, session_config


def _empty(value: Any) -> bool:
    """A form field left empty (or set to "default"): the configured value applies."""
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "default"))
