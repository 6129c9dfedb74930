"""What a session says on its own: scene-change triggers (and narration), and standing-instruction probes."""

from __future__ import annotations

from collections.abc import Iterable

from assistant.config import Proactive
from assistant.decision import NARRATION_PROMPT, InstructionMonitor, SceneChangeDetector, Trigger
from assistant.event_log import EventLog
from assistant.events import PerceptionUpdate, TriggerFired
from assistant.jobs import Job, JobQueue


class ProactivePolicy:
    """Turns perception steps and probe results into triggers and proactive jobs (causal: one step at a time)."""

    def __init__(self, mode: Proactive, instructions: Iterable[str], events: EventLog, jobs: JobQueue) -> None:
        self.mode = mode
        self.scene = SceneChangeDetector()
        self.monitors = [InstructionMonitor(text) for text in instructions]
        self.events = events
        self.jobs = jobs

    def on_step(self, update: PerceptionUpdate) -> None:
        """A new step: fire a scene change (and narrate it), and queue the probes that are due."""
        trigger = self.scene.step(update)
        if trigger is not None and self.mode != "off":
            self.fire(trigger)
            if self.mode == "narrate":
                self.jobs.put("narration", NARRATION_PROMPT, update.t_end, supersede=True)
        for monitor in self.monitors:
            if monitor.due(update.t_end, trigger is not None) and not self.jobs.has("probe", monitor):
                self.jobs.put("probe", monitor.question, update.t_end, monitor=monitor)

    def on_probe(self, job: Job, p_yes: float) -> None:
        """A probe's P(yes): fire its instruction on a rising edge and queue the answer when it asks for one."""
        assert job.monitor is not None, "a probe job carries its monitor"
        trigger = job.monitor.observe(job.t, p_yes)
        if trigger is not None:
            self.fire(trigger)
            if job.monitor.respond:
                self.jobs.put("instruction", job.monitor.prompt, job.t)

    def fire(self, trigger: Trigger) -> None:
        """Report a trigger as an event."""
        self.events.emit(
            TriggerFired, trigger.t, kind=trigger.kind, score=trigger.score, instruction=trigger.instruction
        )
