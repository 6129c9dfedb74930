"""What a session says on its own: scene-change triggers per mode, narration, and standing-instruction probes."""

from __future__ import annotations

import asyncio

import pytest
import torch

from assistant.causal import CausalOutbox
from assistant.config import ProactiveConfig
from assistant.decision import NARRATION_PROMPT, InstructionMonitor
from assistant.event_log import EventLog
from assistant.events import PerceptionUpdate
from assistant.jobs import JobQueue
from assistant.perception import FrameSignal
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
COLOUR = [None, 0.05, 0.06, 0.04, 0.05, 0.7]
"""Each step's frame: its colour change against the frame before (the cut at 5 s)."""


def run_stream(mode: str, instructions: tuple[str, ...] = ()) -> tuple[ProactivePolicy, list, list]:
    async def main() -> tuple[ProactivePolicy, list, list]:
        events, jobs = EventLog("s1", 100), JobQueue("s1")
        policy = ProactivePolicy(mode, instructions, events, jobs)  # type: ignore[arg-type]
        for step, colour in zip(STREAM, COLOUR, strict=True):
            await policy.before_frame(step.t_start)
            policy.on_frame(FrameSignal(step.step, step.t_start, colour))
            policy.on_step(step)
        queued = [await jobs.take() for _ in range(len(jobs))]
        return policy, events.since(0), queued

    return asyncio.run(main())


@pytest.mark.parametrize(("mode", "narrations"), [("off", 0), ("scene", 0), ("narrate", 1)])
def test_scene_changes_by_mode(mode: str, narrations: int) -> None:
    _, events, jobs = run_stream(mode)
    triggers = [(e.kind, e.t) for e in events if e.type == "trigger"]
    assert triggers == ([] if mode == "off" else [("scene_change", 5.0)])  # once: the drop-ratio cue is cooled down
    assert [(j.question, j.t) for j in jobs if j.kind == "narration"] == [(NARRATION_PROMPT, 6.0)] * narrations


def test_probes_run_on_a_regular_stream_time_cadence() -> None:
    """A probe at every multiple of the interval, queued by the first frame after it, with the session's wording."""

    async def main() -> None:
        events, jobs = EventLog("s1", 100), JobQueue("s1")
        prompts = {"probe": "Do you see it: {instruction}?"}
        config = ProactiveConfig(probe_interval_s=2.0)
        policy = ProactivePolicy("off", ("a dog appears",), events, jobs, config=config, prompts=prompts)
        for t in (0.0, 0.7, 1.4, 2.1, 2.8, 3.5, 4.2, 6.9, 7.6):  # irregular frames, and a gap
            await policy.before_frame(t)
        probes = [await jobs.take() for _ in range(len(jobs))]
        assert [(j.kind, j.t) for j in probes] == [("probe", 2.0), ("probe", 4.0), ("probe", 6.0)]
        assert probes[0].question == "Do you see it: a dog appears?"
        (monitor,) = policy.monitors
        assert monitor.pending == 3 and monitor.next_slot == 8.0
        for job in probes:
            job.done.set_result(0.1)
        await asyncio.sleep(0)
        assert monitor.pending == 0

    asyncio.run(main())


def test_a_full_probe_backlog_skips_live_and_waits_when_lossless() -> None:
    async def main() -> None:
        events, jobs = EventLog("s1", 100), JobQueue("s1")
        config = ProactiveConfig(probe_interval_s=1.0, max_pending_probes=2)
        policy = ProactivePolicy("off", ("a dog appears",), events, jobs, config=config)
        await policy.before_frame(0.5)
        await policy.before_frame(5.5)  # slots 1..5, nobody answers: 2 wait, 3 are skipped and counted
        (monitor,) = policy.monitors
        assert (len(jobs), monitor.pending, monitor.skipped) == (2, 2, 3)
        policy.lossless = True
        waiting = asyncio.create_task(policy.before_frame(7.5))  # slots 6 and 7 must wait for room
        await asyncio.sleep(0.05)
        assert not waiting.done() and len(jobs) == 2
        for _ in range(4):  # the reaction loop answers probes one by one
            job = await jobs.take()
            job.done.set_result(0.0)
            await asyncio.sleep(0.01)
        await asyncio.wait_for(waiting, 5)
        assert monitor.skipped == 3 and monitor.pending == 0 and monitor.next_slot == 8.0

    asyncio.run(main())


def test_outbox_holds_changes_after_an_open_probe_in_order() -> None:
    delivered: list[str] = []
    box = CausalOutbox(lambda changes: delivered.extend(changes))
    box.send(["a"], 0.5)
    box.hold(1.0)
    box.hold(2.0)
    box.send(["b"], 1.0)  # at the probe's own time: seen by it
    box.send(["c"], 1.5)
    box.send(["d"], 2.5)
    assert delivered == ["a", "b"] and box.held_steps == 2
    box.release(1.0)
    assert delivered == ["a", "b", "c"]  # "d" waits for the probe at 2 s
    box.release(2.0)
    assert delivered == ["a", "b", "c", "d"] and box.held_steps == 0 and box.open_probes == 0


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
