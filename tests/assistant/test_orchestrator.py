"""Sessions watch and talk at once: ordering, backpressure, cancellation, isolation, proactive output."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from assistant.config import SessionOptions, VigilConfig
from assistant.orchestrator import Orchestrator, SessionClosedError
from assistant.sources import VideoFileSource
from evaluation.synthetic import write_clip
from serving.engines.hf import HFEngine
from tests.support import await_until


class SlowEngine(HFEngine):
    """The real engine, slowed to 20 ms per generated token and never stopping early: a long generation."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._stop_ids = set()

    def _decode(self, ctx, token):
        time.sleep(0.02)
        return super()._decode(ctx, token)


def _config(max_new_tokens: int = 8, **sections: object) -> VigilConfig:
    return VigilConfig(
        perception={"fps": 2.0, "drop": {"mode": "pixel"}},
        memory={"budget_tokens": 2048},
        engine={"max_new_tokens": max_new_tokens},
        **sections,
    )


def _frame(i: int) -> np.ndarray:
    rng = np.random.default_rng(i // 6)  # a new scene every 6 frames
    return rng.integers(0, 256, (112, 112, 3), np.uint8)


async def _settle(live, frames: int, timeout: float = 30.0) -> None:
    await await_until(lambda: live.processed_frames >= frames, timeout, what=f"{frames} frames processed")


def run(coro):
    return asyncio.run(coro)


def test_events_are_ordered_and_gap_free(tiny_adapter) -> None:
    async def main() -> None:
        orch = Orchestrator(HFEngine(tiny_adapter, _config().engine), tiny_adapter, _config())
        live = await orch.create_session()
        for i in range(8):
            assert live.push_frame(_frame(i), t=i * 0.5)
        await _settle(live, 8)
        _, done = live.ask("what is there?")
        finished = await done
        assert finished.text is not None and finished.cached_tokens > 0
        await orch.shutdown()
        events = live.events.since(0)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        kinds = [e.type for e in events]
        assert kinds.count("frame_accepted") == 8 and kinds.count("perception") == 4
        assert kinds.index("answer_start") < kinds.index("answer_done") and kinds[-1] == "session_closed"
        resumed = [e.seq async for e in live.events.follow(after=events[3].seq)]
        assert resumed == [e.seq for e in events[4:]]

    run(main())


def test_long_generation_does_not_stall_perception(tiny_adapter) -> None:
    async def main() -> None:
        config = _config(max_new_tokens=60)
        orch = Orchestrator(SlowEngine(tiny_adapter, config.engine), tiny_adapter, config)
        live = await orch.create_session()
        for i in range(4):
            live.push_frame(_frame(i), t=i * 0.5)
        await _settle(live, 4)
        _, done = live.ask("tell me a long story")
        counts = []
        for i in range(4, 24):
            live.push_frame(_frame(i), t=i * 0.5)
            await asyncio.sleep(0.05)
            if not done.done():
                counts.append(live.processed_frames)
        finished = await done
        assert finished.generated_tokens == 60
        assert len(counts) >= 5 and counts[-1] > counts[0]  # frames kept being processed while it generated
        await orch.shutdown()

    run(main())


def test_backpressure_drops_oldest_and_counts(tiny_adapter) -> None:
    async def main() -> None:
        orch = Orchestrator(HFEngine(tiny_adapter, _config().engine), tiny_adapter, _config())
        live = await orch.create_session(config=_config(session={"frame_queue": 3}))
        for i in range(10):  # pushed in one go: the perception task has not run yet
            live.push_frame(_frame(i), t=i * 0.5)
        assert live.push_frame(b"not an image", t=6.0) is False
        assert live.push_frame(_frame(10)) is True  # no time given: the next frame time at the session's fps
        assert live.push_frame(_frame(11), t=1.0) is False  # time going backwards
        await _settle(live, 3)
        dropped = [e for e in live.events.since(0) if e.type == "frame_dropped"]
        assert [e.reason for e in dropped] == ["backpressure"] * 7 + ["invalid", "backpressure", "invalid"]
        assert [e.detail for e in dropped[:7]] == [f"frame {i}" for i in range(7)]
        assert live.frames_dropped == {"backpressure": 8, "invalid": 2, "failed": 0}
        assert live.processed_frames + 8 == 11
        assert [e.t for e in live.events.since(0) if e.type == "frame_accepted"][-1] == 5.0
        await orch.shutdown()

    run(main())


@pytest.mark.slow
def test_cancelled_answer_stops_and_frees_the_engine(tiny_adapter) -> None:
    async def main() -> None:
        config = _config(max_new_tokens=200)
        engine = SlowEngine(tiny_adapter, config.engine)
        orch = Orchestrator(engine, tiny_adapter, config)
        live = await orch.create_session()
        for i in range(4):
            live.push_frame(_frame(i), t=i * 0.5)
        await _settle(live, 4)
        answer_id, done = live.ask("describe everything")
        while not any(e.type == "answer_delta" for e in live.events.since(0)):
            await asyncio.sleep(0.01)
        assert live.cancel(answer_id)
        with pytest.raises(asyncio.CancelledError):
            await done
        finished = [e for e in live.events.since(0) if e.type == "answer_done"]
        assert finished[-1].finish_reason == "cancelled"
        engine._stop_ids = set(HFEngine(tiny_adapter, config.engine)._stop_ids)
        _, again = live.ask("and now?")
        result = await asyncio.wait_for(again, 60)
        assert result.finish_reason in ("stop", "length")
        assert not live.cancel("a-missing-id")
        await orch.shutdown()

    run(main())


def test_one_failing_session_does_not_disturb_another(tiny_adapter) -> None:
    async def main() -> None:
        engine = HFEngine(tiny_adapter, _config().engine)
        orch = Orchestrator(engine, tiny_adapter, _config())
        bad, good = await orch.create_session(), await orch.create_session()
        for i in range(4):
            bad.push_frame(_frame(i), t=i * 0.5)
            good.push_frame(_frame(i), t=i * 0.5)
        await _settle(bad, 4)
        await _settle(good, 4)
        await engine.close_session(bad.session_id)  # its engine state is gone underneath it
        _, failing = bad.ask("anything?")
        with pytest.raises(KeyError):
            await failing
        assert any(e.type == "error" for e in bad.events.since(0))
        _, fine = good.ask("anything?")
        assert (await fine).finish_reason in ("stop", "length")
        assert not any(e.type == "error" for e in good.events.since(0))
        await orch.close_session(bad.session_id)
        with pytest.raises(SessionClosedError):
            bad.push_frame(_frame(0))
        with pytest.raises(KeyError, match="no session"):
            orch.get(bad.session_id)
        await orch.shutdown()

    run(main())


def test_narration_speaks_up_at_scene_cuts(tiny_adapter, tmp_path) -> None:
    clip = write_clip(tmp_path / "cuts.mp4", seconds=12, cut_times=(4.0, 8.0))

    async def main() -> None:
        config = VigilConfig(
            perception={"fps": 2.0, "frames_per_step": 1, "drop": {"mode": "pixel"}},
            memory={"budget_tokens": 2048},
            engine={"max_new_tokens": 4},
        )
        orch = Orchestrator(HFEngine(tiny_adapter, config.engine), tiny_adapter, config)
        live = await orch.create_session(SessionOptions(proactive="narrate"))
        for n, frame in enumerate(VideoFileSource(clip.path, fps=2), start=1):
            live.push_frame(frame.image, t=frame.t)
            await _settle(live, n)
        for _ in range(200):
            if sum(e.type == "answer_done" for e in live.events.since(0)) >= 1:
                break
            await asyncio.sleep(0.05)
        await orch.shutdown()
        events = live.events.since(0)
        triggers = [e.t for e in events if e.type == "trigger"]
        assert triggers == [4.0, 8.0]
        narrations = [e for e in events if e.type == "answer_done" and e.kind == "narration"]
        assert narrations and all(e.t >= 4.0 for e in narrations)

    run(main())


def test_standing_instruction_probes_and_answers_once(tiny_adapter) -> None:
    from assistant.decision import InstructionMonitor

    async def main() -> None:
        config = _config()
        orch = Orchestrator(HFEngine(tiny_adapter, config.engine), tiny_adapter, config)
        live = await orch.create_session(SessionOptions(instructions=("tell me when a red car appears",)))
        assert [m.instruction for m in live.monitors] == ["tell me when a red car appears"]
        # a threshold any P(yes) from the random model passes: the rising edge fires exactly once
        live.monitors = [InstructionMonitor("tell me when a red car appears", interval_s=1.0, on=1e-6, off=0.0)]
        for i in range(12):
            live.push_frame(_frame(i), t=i * 0.5)
        await _settle(live, 12)
        await live.wait_idle(timeout=60)
        await orch.shutdown()
        events = live.events.since(0)
        triggers = [e for e in events if e.type == "trigger"]
        assert len(triggers) == 1 and triggers[0].kind == "instruction"
        assert triggers[0].instruction == "tell me when a red car appears"
        answers = [e for e in events if e.type == "answer_done" and e.kind == "instruction"]
        assert len(answers) == 1 and answers[0].t >= triggers[0].t

    run(main())


def test_a_frame_perception_fails_on_is_counted_not_lost(tiny_adapter) -> None:
    async def main() -> None:
        config = VigilConfig(perception={"fps": 2.0, "drop": {"mode": "pixel"}}, memory={"budget_tokens": 16})
        orch = Orchestrator(HFEngine(tiny_adapter, config.engine), tiny_adapter, config)
        live = await orch.create_session()
        rng = np.random.default_rng(0)
        for i in range(4):  # new content every frame: 64 kept tokens a step, over the budget of 16
            live.push_frame(rng.integers(0, 256, (224, 224, 3), np.uint8), t=i * 0.5)
        await live.wait_idle(timeout=60)
        await orch.shutdown()
        events = live.events.since(0)
        failed = [e for e in events if e.type == "frame_dropped" and e.reason == "failed"]
        # both frames of each failed step: the first was perceived, but its step never reached the memory
        assert live.frames_dropped["failed"] == len(failed) == 4
        assert live.processed_frames == 0
        assert sum(e.type == "error" and e.code == "perception_failed" for e in events) == 2

    run(main())


@pytest.mark.parametrize("lossless", [True, False])
def test_playing_a_real_clip_loses_no_frame_silently(tiny_adapter, real_clips, lossless: bool) -> None:
    async def main() -> None:
        config = _config()
        orch = Orchestrator(HFEngine(tiny_adapter, config.engine), tiny_adapter, config)
        live = await orch.create_session(config=_config(session={"frame_queue": 1}))
        source = VideoFileSource(real_clips["bikes"], fps=2, end=4.0)
        stamps = [t async for t in live.play(source, offset=10.0, lossless=lossless)]
        await live.wait_idle(timeout=60)
        assert stamps == pytest.approx([10.0 + t for t in (0.0, 0.52, 1.0, 1.52, 2.0, 2.52, 3.0, 3.52)])
        assert source.end is not None and source.end.reason == "eof"
        dropped = live.frames_dropped["backpressure"]
        assert live.processed_frames + dropped == len(stamps)  # every frame processed or counted
        assert dropped == 0 if lossless else dropped == sum(e.type == "frame_dropped" for e in live.events.since(0))
        assert live.stream_t == pytest.approx(13.52) and live.last_frame_t == pytest.approx(13.52)
        await orch.shutdown()

    run(main())


def test_a_batch_of_frames_is_queued_all_or_none(tiny_adapter) -> None:
    import io

    from PIL import Image

    from assistant.sources import FrameTimeError, InvalidFrameError

    buf = io.BytesIO()
    Image.fromarray(_frame(5)).save(buf, format="PNG")

    async def main() -> None:
        config = _config()
        orch = Orchestrator(HFEngine(tiny_adapter, config.engine), tiny_adapter, config)
        live = await orch.create_session()
        pushed = live.push_frames([(_frame(0), None), (_frame(1), None)])
        assert pushed.accepted == 2 and pushed.t[0] <= live.clock() and pushed.t[1] == pytest.approx(pushed.t[0] + 0.5)
        with pytest.raises(FrameTimeError, match="before the previous one"):
            live.push_frames([(_frame(2), pushed.t[1] + 1), (_frame(3), 0.0)])
        with pytest.raises(InvalidFrameError, match="frame 1: "):
            await live.push_encoded([(buf.getvalue(), None), (b"\xff\xd8 not a jpeg", None)], max_pixels=1 << 20)
        await live.wait_idle(timeout=60)
        assert live.processed_frames == 2 and live.last_frame_t == pushed.t[1]
        # nothing of the refused batches was queued; each of their frames is counted as dropped (invalid)
        assert live.frames_dropped == {"backpressure": 0, "invalid": 4, "failed": 0}
        await orch.shutdown()
        with pytest.raises(SessionClosedError):
            live.push_frames([(_frame(4), None)])

    run(main())
