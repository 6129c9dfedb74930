"""What a session says on its own: scene-change triggers (and narration), and standing-instruction probes.

Probes run on a regular stream-time cadence: a probe at every multiple of the interval, queued once the first
frame after that time arrives and before it is perceived, and answered on the memory up to its time (the
session's ``CausalOutbox`` holds later memory back until the probe is done).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from functools import partial

from assistant.causal import CausalOutbox
from assistant.config import PROMPT_DEFAULTS, Proactive, ProactiveConfig
from assistant.decision import InstructionMonitor, SceneChangeDetector, Trigger
from assistant.event_log import EventLog
from assistant.events import PerceptionUpdate, TriggerFired
from assistant.jobs import Job, JobQueue
from assistant.perception import FrameSignal


class ProactivePolicy:
    """Turns frames, perception steps and probe results into triggers and proactive jobs (causal, in order)."""

    def __init__(
        self,
        mode: Proactive,
        instructions: Iterable[str],
        events: EventLog,
        jobs: JobQueue,
        *,
        config: ProactiveConfig | None = None,
        prompts: dict[str, str] | None = None,
        outbox: CausalOutbox | None = None,
    ) -> None:
        """``prompts``: probe, narration and instruction wording (default: ``PROMPT_DEFAULTS['default']``);
        ``outbox``: the session's memory changes, held behind open probes (None: probes are not made causal)."""
        self.mode = mode
        self.config = config or ProactiveConfig()
        self.prompts = {**PROMPT_DEFAULTS["default"], **(prompts or {})}
        self.scene = SceneChangeDetector(self.config.scene)
        self.monitors = [InstructionMonitor(text) for text in instructions]
        self.events = events
        self.jobs = jobs
        self.outbox = outbox
        self.lossless = False
        """A file is played losslessly: wait for a full probe backlog instead of skipping probe times."""
        self._scene_since_step = False
        self._open: dict[int, list[Job]] = {}  # id(monitor) -> its queued or running probes

    # -- frames and steps ----------------------------------------------------------------------------------
    async def before_frame(self, t: float) -> None:
        """A frame at stream time ``t`` is about to be perceived: queue the probes of every earlier probe time."""
        for monitor in list(self.monitors):
            interval = monitor.interval_s or self.config.probe_interval_s
            if monitor.next_slot is None:
                monitor.next_slot = max(1, math.ceil(t / interval - 1e-9)) * interval
            while monitor.next_slot < t:
                slot = monitor.next_slot
                monitor.next_slot = (round(slot / interval) + 1) * interval
                if monitor.pending >= self.config.max_pending_probes:
                    if not self.lossless:
                        monitor.skipped += 1
                        continue
                    while monitor.pending >= self.config.max_pending_probes and not self.jobs.closed:
                        await asyncio.wait({self._open[id(monitor)][0].done})
                self._queue_probe(monitor, slot)

    def on_frame(self, signal: FrameSignal) -> None:
        """A perceived frame: fire a scene change from its colour change."""
        trigger = self.scene.frame(signal.t, signal.colour_change)
        if trigger is not None and self.mode != "off":
            self.fire(trigger)
            self._scene_since_step = True

    def on_step(self, update: PerceptionUpdate) -> None:
        """A new step: fire a scene change from its drop ratio, and narrate a change it holds."""
        trigger = self.scene.step(update)
        if trigger is not None and self.mode != "off":
            self.fire(trigger)
            self._scene_since_step = True
        if self._scene_since_step and self.mode == "narrate":
            self.jobs.put("narration", self.prompts["narration"], update.t_end, supersede=True)
        self._scene_since_step = False

    # -- probes --------------------------------------------------------------------------------------------
    def _queue_probe(self, monitor: InstructionMonitor, slot: float) -> None:
        if self.outbox is not None:
            self.outbox.hold(slot)
        job = self.jobs.put("probe", monitor.question_for(self.prompts["probe"]), slot, monitor=monitor)
        monitor.pending += 1
        self._open.setdefault(id(monitor), []).append(job)
        job.done.add_done_callback(partial(self._probe_done, monitor, job))

    def _probe_done(self, monitor: InstructionMonitor, job: Job, _future: asyncio.Future) -> None:
        """However a probe ended (answered, failed, cancelled), later memory may reach the engine."""
        monitor.pending -= 1
        self._open[id(monitor)].remove(job)
        if self.outbox is not None:
            self.outbox.release(job.t)

    def on_probe(self, job: Job, p_yes: float) -> None:
        """A probe's P(yes): fire its instruction on a rising edge and queue the answer when it asks for one."""
        assert job.monitor is not None, "a probe job carries its monitor"
        trigger = job.monitor.observe(job.t, p_yes)
        if trigger is not None:
            self.fire(trigger)
            if job.monitor.respond:
                self.jobs.put("instruction", job.monitor.prompt_for(self.prompts["instruction"]), job.t)

    def fire(self, trigger: Trigger) -> None:
        """Report a trigger as an event."""
        self.events.emit(
            TriggerFired, trigger.t, kind=trigger.kind, score=trigger.score, instruction=trigger.instruction
        )
