"""When to speak: small causal policies that turn perception updates into triggers.

Every policy sees only what has arrived so far (a trigger at time t uses frames up to t).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from assistant.events import PerceptionUpdate

TriggerKind = Literal["scene_change", "instruction", "narration"]


@dataclass(frozen=True, slots=True)
class Trigger:
    """A reason to say something at stream time ``t``."""

    kind: TriggerKind
    t: float
    score: float
    """How strongly it fired (valley depth for scene changes, P(yes) for instructions)."""
    instruction: str | None = None


@dataclass(slots=True)
class SceneChangeDetector:
    """Fires when a step changes far more than the steps before it: a valley in the drop ratio, or a spike in
    the mean change of its tokens (which still shows a cut under camera motion, when nearly all tokens are kept).

    Baselines are exponential moving averages over ordinary steps. A step fires when the detector is armed, the
    cooldown since the last trigger has passed, and either its kept share exceeds the baseline by
    ``sensitivity`` (and is at least ``min_kept``) or its mean change is ``change_ratio`` times the baseline (and
    at least ``min_change``). It re-arms once the step looks ordinary again.
    """

    sensitivity: float = 0.35
    min_kept: float = 0.5
    change_ratio: float = 2.5
    min_change: float = 0.1
    cooldown_s: float = 2.0
    rearm: float = 0.5
    alpha: float = 0.2
    warmup_steps: int = 2
    _baseline: float | None = field(default=None, init=False)
    _change_baseline: float | None = field(default=None, init=False)
    _armed: bool = field(default=True, init=False)
    _last_fire: float = field(default=-1e9, init=False)
    _steps: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        for name, low, high in (
            ("sensitivity", 0.0, 1.0),
            ("min_kept", 0.0, 1.0),
            ("rearm", 0.0, 1.0),
            ("alpha", 0.0, 1.0),
        ):
            value = getattr(self, name)
            if not low < value <= high:
                raise ValueError(f"{name} must be in ({low:g}, {high:g}], got {value}")
        if self.change_ratio <= 1.0 or self.min_change < 0:
            raise ValueError(
                f"change_ratio must be > 1 and min_change >= 0, got {self.change_ratio}, {self.min_change}"
            )
        if self.cooldown_s < 0 or self.warmup_steps < 0:
            raise ValueError("cooldown_s and warmup_steps must be >= 0")

    def step(self, update: PerceptionUpdate) -> Trigger | None:
        """Decide on one step."""
        self._steps += 1
        if update.reset:  # the first step keeps everything by construction: no evidence of a change
            return None
        kept = 1.0 - update.drop_ratio
        change = update.mean_change
        if self._baseline is None or self._change_baseline is None:
            self._baseline, self._change_baseline = kept, change
            return None
        excess = kept - self._baseline
        spike = change / max(self._change_baseline, 1e-6)
        valley = excess >= self.sensitivity and kept >= self.min_kept
        jump = spike >= self.change_ratio and change >= self.min_change
        fired = None
        if (
            self._armed
            and self._steps > self.warmup_steps
            and (valley or jump)
            and update.t_start - self._last_fire >= self.cooldown_s
        ):
            fired = Trigger("scene_change", update.t_start, max(excess, spike / self.change_ratio * self.sensitivity))
            self._armed = False
            self._last_fire = update.t_start
        elif (
            not self._armed
            and excess < self.sensitivity * self.rearm
            and spike < 1 + (self.change_ratio - 1) * self.rearm
        ):
            self._armed = True
        if not (valley or jump):  # outliers do not drag the baselines
            self._baseline += self.alpha * (kept - self._baseline)
            self._change_baseline += self.alpha * (change - self._change_baseline)
        return fired


@dataclass(slots=True)
class InstructionMonitor:
    """A standing instruction ("tell me when a person enters") checked with the engine's yes/no probe.

    Probes at most every ``interval_s`` of stream time, and on every scene change; fires on a rising edge
    (P(yes) >= ``on``) and re-arms only when P(yes) falls below ``off``, so one event gives one message.
    """

    instruction: str
    interval_s: float = 4.0
    on: float = 0.6
    off: float = 0.4
    probe: str | None = None
    """The yes/no question to probe with (default: built from the instruction)."""
    answer_prompt: str | None = None
    """What to ask when it fires (default: ``instruction_prompt``)."""
    respond: bool = True
    """Answer when it fires (False: only report the trigger)."""
    _last_probe: float = field(default=-1e9, init=False)
    _active: bool = field(default=False, init=False)
    history: list[tuple[float, bool]] = field(default_factory=list, init=False)
    """(stream time, active) after every probe."""

    def __post_init__(self) -> None:
        if not self.instruction.strip():
            raise ValueError("an instruction must not be empty")
        if not 0.0 <= self.off < self.on <= 1.0:
            raise ValueError(f"need 0 <= off < on <= 1, got off={self.off}, on={self.on}")
        if self.interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {self.interval_s}")

    def due(self, t: float, scene_changed: bool) -> bool:
        """Whether to probe at stream time ``t``."""
        return scene_changed or t - self._last_probe >= self.interval_s

    def observe(self, t: float, p_yes: float) -> Trigger | None:
        """Record a probe result; a Trigger on the rising edge."""
        self._last_probe = t
        fired = None
        if not self._active and p_yes >= self.on:
            self._active = True
            fired = Trigger("instruction", t, p_yes, self.instruction)
        elif self._active and p_yes < self.off:
            self._active = False
        self.history.append((t, self._active))
        return fired

    def active_at(self, t: float) -> bool:
        """Whether the instruction was holding at stream time ``t`` (by the last probe at or before it)."""
        state = False
        for when, active in self.history:
            if when > t:
                break
            state = active
        return state

    def fired_until(self, t: float) -> int:
        """Rising edges at or before stream time ``t``."""
        count, previous = 0, False
        for when, active in self.history:
            if when > t:
                break
            count += active and not previous
            previous = active
        return count

    @property
    def question(self) -> str:
        """The yes/no probe for this instruction."""
        return self.probe or f"Is this true right now: {self.instruction.strip().rstrip('?.')}?"

    @property
    def prompt(self) -> str:
        """What to ask the engine when the instruction fires."""
        return self.answer_prompt or instruction_prompt(self.instruction)


NARRATION_PROMPT = "Describe in one short sentence what just changed in the video."


def instruction_prompt(instruction: str) -> str:
    """What to ask the engine when an instruction fires."""
    return f'The user asked: "{instruction}". It is happening now. Tell the user briefly what you see.'
