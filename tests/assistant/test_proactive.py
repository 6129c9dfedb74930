"""What a session says on its own: scene-change triggers per mode, narration, and standing-instruction probes."""

from __future__ import annotations

import asyncio

import pytest
import torch

from assistant.decision import NARRATION_PROMPT, InstructionMonitor
from assistant.event_log import EventLog
from assistant.events import PerceptionUpdate
from assistant.jobs import JobQueue
from assistant.proactive import ProactivePolicy


def update(step: int, drop_ratio: float, mean_change: float) -> PerceptionUpdate:
    """A step of a 4 x 4 grid at 1 s a step; the first one resets the drop reference."""
    kept = torch.arange(round(16 * (1 - drop_ratio)))
    return PerceptionUpdate(
        step=step,
        t_start=float(step),
        t_end=step + 1.0,
        frame_indices=(step,),
        grid=(4, 4),
        kept_indices=kept,
        positions=torch.zeros(3, kept.numel(), dtype=torch.long),
        drop_ratio=drop_ratio,
        mean_change=mean_change,
        changed_fraction=1 - drop_ratio,
        reset=step == 0,
    )


STREAM = [update(0, 0.0, 1.0)] + [update(k, 0.875, 0.02) for k in range(1, 5)] + [update(5, 0.0, 0.5)]
"""Four ordinary steps after the first, then a cut at 5 s."""


def run_stream(mode: str, instructions: tuple[str, ...] = ()) -> tuple[ProactivePolicy, list, list]:
    async def main() -> tuple[ProactivePolicy, list, list]:
        events, jobs = EventLog("s1", 100), JobQueue("s1")
        policy = ProactivePolicy(mode, instructions, events, jobs)  # type: ignore[arg-type]
        for step in STREAM:
            policy.on_step(step)
        queued = [await jobs.take() for _ in range(len(jobs))]
        return policy, events.since(0), queued

    return asyncio.run(main())


@pytest.mark.parametrize(("mode", "narrations"), [("off", 0), ("scene", 0), ("narrate", 1)])
def test_scene_changes_by_mode(mode: str, narrations: int) -> None:
    _, events, jobs = run_stream(mode)
    triggers = [(e.kind, e.t) for e in events if e.type == "trigger"]
    assert triggers == ([] if mode == "off" else [("scene_change", 5.0)])
    assert [(j.question, j.t) for j in jobs if j.kind == "narration"] == [(NARRATION_PROMPT, 6.0)] * narrations


def test_probes_are_queued_when_due_and_once_per_monitor() -> None:
    policy, _, jobs = run_stream("off", ("tell me when a dog appears",))
    (monitor,) = policy.monitors
    probes = [j for j in jobs if j.kind == "probe"]
    # due at the first step; the queued probe is not repeated; never observed, so it stays one job
    assert [(j.t, j.monitor) for j in probes] == [(1.0, monitor)]
    assert probes[0].question == "Is this true right now: tell me when a dog appears?"


def test_a_probe_fires_on_the_rising_edge_and_asks_for_an_answer_once() -> None:
    async def main() -> tuple[list, list]:
        events, jobs = EventLog("s1", 100), JobQueue("s1")
        policy = ProactivePolicy("off", (), events, jobs)
        talk = InstructionMonitor("tell me when a dog appears")
        quiet = InstructionMonitor("tell me when a cat appears", respond=False)
        policy.monitors = [talk, quiet]
        for t, p_yes in [(1.0, 0.2), (2.0, 0.9), (3.0, 0.95), (4.0, 0.1), (5.0, 0.7)]:
            policy.on_probe(jobs.put("probe", talk.question, t, monitor=talk), p_yes)
        policy.on_probe(jobs.put("probe", quiet.question, 6.0, monitor=quiet), 0.99)
        return events.since(0), [job for job in [await jobs.take() for _ in range(len(jobs))]]

    events, jobs = asyncio.run(main())
    assert [(e.kind, e.t, e.instruction) for e in events] == [
        ("instruction", 2.0, "tell me when a dog appears"),
        ("instruction", 5.0, "tell me when a dog appears"),  # re-armed below ``off`` at 4 s
        ("instruction", 6.0, "tell me when a cat appears"),  # reported, not answered
    ]
    answers = [(j.t, j.question) for j in jobs if j.kind == "instruction"]
    assert answers == [(t, InstructionMonitor("tell me when a dog appears").prompt) for t in (2.0, 5.0)]
