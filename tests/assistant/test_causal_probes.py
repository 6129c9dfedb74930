"""A probe at stream time t is answered on the memory up to t and never on a later frame, also when a file plays
as fast as possible (perception far ahead of the engine), and probes keep a regular stream-time cadence."""

from __future__ import annotations

import asyncio

import pytest

from assistant.config import SessionOptions, VigilConfig
from assistant.orchestrator import Orchestrator
from assistant.sources import VideoFileSource
from evaluation.synthetic import write_clip
from serving.engines.hf import HFEngine

FPS = 2.0


class RecordingEngine(HFEngine):
    """The real transformers engine, recording the last frame time of every memory entry it was handed and, for
    each probe, which of them it had when the probe began (a probe brings in all it was handed)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.handed: list[float] = []
        self.probes: list[tuple[float, list[float]]] = []
        self.handed_during_probes = 0

    def apply(self, session_id, changes) -> None:
        for change in changes:
            entry = getattr(change, "entry", None)
            if entry is not None:
                self.handed.append(round(entry.t_end - 1 / FPS, 6))  # the step's last frame
        super().apply(session_id, changes)

    async def probe(self, session_id: str, question: str, t: float) -> float:
        self.probes.append((t, list(self.handed)))
        p_yes = await super().probe(session_id, question, t)
        self.handed_during_probes += len(self.handed) - len(self.probes[-1][1])
        return p_yes


@pytest.mark.parametrize("frames_per_step", [1, 2])
def test_probes_see_frames_up_to_their_time_only_at_max_speed(tiny_adapter, tmp_path, frames_per_step) -> None:
    clip = write_clip(tmp_path / "clip.mp4", seconds=10, cut_times=(3.0, 7.0))
    config = VigilConfig(
        perception={"fps": FPS, "frames_per_step": frames_per_step, "drop": {"mode": "pixel"}},
        memory={"budget_tokens": 2048},
        engine={"max_new_tokens": 4},
        proactive={"probe_interval_s": 1.0},
    )
    engine = RecordingEngine(tiny_adapter, config.engine)

    async def main() -> list[float]:
        orch = Orchestrator(engine, tiny_adapter, config)
        live = await orch.create_session(
            SessionOptions(proactive="narrate", instructions=("tell me when the square turns red",))
        )
        stamps = [t async for t in live.play(VideoFileSource(clip.path, fps=FPS, pace="max"), lossless=True)]
        _, answer = live.ask("what do you see?")  # a question queued while probes wait
        await asyncio.wait_for(answer, 60)
        await live.wait_idle(timeout=60)
        assert live.session.outbox.held_steps == 0 and live.session.outbox.open_probes == 0
        assert sum(e.type == "trigger" and e.kind == "scene_change" for e in live.events.since(0)) == 2
        await orch.shutdown()
        return stamps

    stamps = asyncio.run(main())
    assert stamps[-1] == 9.5 and len(stamps) == 20  # every frame played, none dropped
    # a probe at every whole second the stream passed, in order
    assert [t for t, _ in engine.probes] == [float(s) for s in range(1, 10)]
    assert engine.handed_during_probes == 0
    step_s = frames_per_step / FPS
    assert len(engine.handed) <= round(10 / step_s)  # a step whose tokens were all dropped adds no entry
    for t, seen in engine.probes:
        assert seen and max(seen) <= t, f"the probe at {t} s saw a frame at {max(seen)} s"
        # up to its own time: every entry whose last frame is at or before t
        assert seen == [x for x in engine.handed if x <= t]
