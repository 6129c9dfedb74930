"""When to speak: small causal policies that turn perception updates into triggers.

Every policy sees only what has arrived so far (a trigger at time t uses frames up to t).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from assistant.config import PROMPT_DEFAULTS, SceneConfig
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


class SceneChangeDetector:
    """Finds scene changes causally from two cues, with a cooldown between triggers.

    1. Per frame (``frame``), before frames merge into temporal steps: the colour-histogram change of each sampled
       frame against the one before. A frame fires when its change is at least ``frame_threshold`` and
       ``frame_ratio`` times the median change of the recent frames that did not fire. Colour histograms hardly
       move under camera or object motion, so neither the step size nor a panning camera blinds this cue.
    2. Per step (``step``), the drop-ratio cue: a kept share far above its running baseline (a valley of the drop
       ratio), or a spike of the mean token change; it re-arms once a step looks ordinary again. It fires only
       when the step's largest colour change is at least ``drop_cue_frame_change`` (a cut between similarly
       coloured scenes still moves the histogram that much; motion that keeps many tokens does not).

    A trigger at stream time t uses frames up to t only.
    """

    def __init__(self, config: SceneConfig | None = None) -> None:
        self.config = config or SceneConfig()
        self._recent: deque[float] = deque(maxlen=self.config.baseline_frames)
        self._last_fire = -math.inf
        self._step_change = 0.0  # largest colour change since the last step
        self._baseline: float | None = None
        self._change_baseline: float | None = None
        self._armed = True
        self._steps = 0

    def frame(self, t: float, change: float | None) -> Trigger | None:
        """Decide on one sampled frame at stream time ``t`` with its colour change (None: the stream's first)."""
        if change is None:
            return None
        c = self.config
        self._step_change = max(self._step_change, change)
        baseline = statistics.median(self._recent) if self._recent else 0.0
        if change >= c.frame_threshold and change >= c.frame_ratio * baseline and t - self._last_fire >= c.cooldown_s:
            self._last_fire = t
            return Trigger("scene_change", t, change)  # a cut does not raise the baseline; steady motion does
        self._recent.append(change)
        return None

    def step(self, update: PerceptionUpdate) -> Trigger | None:
        """Decide on one step with the drop-ratio cue."""
        c = self.config
        self._steps += 1
        colour, self._step_change = self._step_change, 0.0
        if update.reset:  # the first step keeps everything by construction: no evidence of a change
            return None
        kept = 1.0 - update.drop_ratio
        change = update.mean_change
        if self._baseline is None or self._change_baseline is None:
            self._baseline, self._change_baseline = kept, change
            return None
        excess = kept - self._baseline
        spike = change / max(self._change_baseline, 1e-6)
        valley = excess >= c.sensitivity and kept >= c.min_kept
        jump = spike >= c.change_ratio and change >= c.min_change
        fired = None
        if self._armed and (valley or jump):
            self._armed = False
            if (
                c.drop_cue
                and colour >= c.drop_cue_frame_change
                and self._steps > c.warmup_steps
                and (last := _last_frame_t(update)) - self._last_fire >= c.cooldown_s
            ):
                fired = Trigger("scene_change", last, max(excess, spike / c.change_ratio * c.sensitivity))
                self._last_fire = last
        elif not self._armed and excess < c.sensitivity * c.rearm and spike < 1 + (c.change_ratio - 1) * c.rearm:
            self._armed = True
        if not (valley or jump):  # outliers do not drag the baselines
            self._baseline += c.alpha * (kept - self._baseline)
            self._change_baseline += c.alpha * (change - self._change_baseline)
        return fired


def _last_frame_t(update: PerceptionUpdate) -> float:
    """Stream time of a step's last frame (what a step-level decision may see)."""
    n = max(1, len(update.frame_indices))
    return update.t_start + (update.t_end - update.t_start) * (n - 1) / n


@dataclass(slots=True)
class InstructionMonitor:
    """A standing instruction ("tell me when a person enters") checked with the engine's yes/no probe.

    Probed on a regular stream-time cadence (every multiple of ``interval_s``, default the config's
    ``proactive.probe_interval_s``), each probe on the memory up to its own time; fires on a rising edge
    (P(yes) >= ``on``) and re-arms only when P(yes) falls below ``off``, so one event gives one message.
    """

    instruction: str
    interval_s: float | None = None
    on: float = 0.6
    off: float = 0.4
    probe: str | None = None
    """The yes/no question to probe with (default: the session's probe prompt with the instruction)."""
    answer_prompt: str | None = None
    """What to ask when it fires (default: the session's instruction prompt)."""
    respond: bool = True
    """Answer when it fires (False: only report the trigger)."""
    next_slot: float | None = field(default=None, init=False)
    """Stream time of the next probe (set by the policy when it first sees the monitor)."""
    pending: int = field(default=0, init=False)
    """Probes queued or running."""
    skipped: int = field(default=0, init=False)
    """Probe times skipped because ``proactive.max_pending_probes`` were waiting (a live stream only)."""
    _active: bool = field(default=False, init=False)
    history: list[tuple[float, bool]] = field(default_factory=list, init=False)
    """(stream time, active) after every probe."""

    def __post_init__(self) -> None:
        if not self.instruction.strip():
            raise ValueError("an instruction must not be empty")
        if not 0.0 <= self.off < self.on <= 1.0:
            raise ValueError(f"need 0 <= off < on <= 1, got off={self.off}, on={self.on}")
        if self.interval_s is not None and not self.interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {self.interval_s}")

    def observe(self, t: float, p_yes: float) -> Trigger | None:
        """Record a probe result; a Trigger on the rising edge."""
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

    def question_for(self, template: str) -> str:
        """The yes/no probe: ``probe`` if given, else ``template`` with the instruction."""
        return self.probe or template.format(instruction=self.instruction.strip().rstrip("?."))

    def prompt_for(self, template: str) -> str:
        """What to ask when it fires: ``answer_prompt`` if given, else ``template`` with the instruction."""
        return self.answer_prompt or template.format(instruction=self.instruction.strip())

    @property
    def question(self) -> str:
        """The yes/no probe with the default wording."""
        return self.question_for(PROMPT_DEFAULTS["default"]["probe"])

    @property
    def prompt(self) -> str:
        """What to ask when it fires, with the default wording."""
        return self.prompt_for(PROMPT_DEFAULTS["default"]["instruction"])


NARRATION_PROMPT = PROMPT_DEFAULTS["default"]["narration"]


def instruction_prompt(instruction: str) -> str:
    """What to ask the engine when an instruction fires (default wording)."""
    return PROMPT_DEFAULTS["default"]["instruction"].format(instruction=instruction)
