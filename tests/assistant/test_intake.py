"""The frame intake: one clock, one time check, all-or-none batches, one bounded drop-oldest queue, counted drops."""

from __future__ import annotations

import asyncio
import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from assistant.errors import SessionClosedError
from assistant.event_log import EventLog
from assistant.intake import FrameIntake, FramesPushed
from assistant.sources import FrameTimeError, InvalidFrameError, VideoFileSource


def make_intake(capacity: int = 8, fps: float = 2.0) -> FrameIntake:
    return FrameIntake("s1", EventLog("s1", history=100), fps=fps, capacity=capacity)


def solid(value: int, size: int = 16) -> np.ndarray:
    return np.full((size, size, 3), value, np.uint8)


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def drained(intake: FrameIntake) -> list:
    """Every queued frame, oldest first."""

    async def take_all() -> list:
        return [(await intake.take()).frame for _ in range(len(intake))]

    return asyncio.run(take_all())


def dropped_events(intake: FrameIntake) -> list:
    return [e for e in intake.events.since(0) if e.type == "frame_dropped"]


def test_frames_without_a_time_get_the_one_session_clock() -> None:
    intake = make_intake(fps=2.0)
    pushed = intake.put([(solid(1), None), (solid(2), None)])
    assert 0.0 <= pushed.t[0] <= intake.clock()  # the first: the session's age
    assert pushed.t[1] == pytest.approx(pushed.t[0] + 0.5)  # frames faster than the fps: spaced at 1/fps
    assert intake.offer(solid(3))  # one frame of a stream: the same clock
    assert intake.last_t == pytest.approx(pushed.t[0] + 1.0)
    assert intake.put([(solid(4), 100.0), (solid(5), None)]).t == (100.0, 100.5)


def test_a_batch_is_queued_all_or_none() -> None:
    intake = make_intake()
    assert intake.put([(solid(1), 1.0)]) == FramesPushed(1, 0, (1.0,), 1)
    with pytest.raises(InvalidFrameError, match=r"frame 1: frames must be uint8 arrays"):
        intake.put([(solid(2), 2.0), (np.zeros((4, 4, 3), np.float32), 3.0), (solid(4), 4.0)])
    with pytest.raises(FrameTimeError, match=r"frame time 0\.500 s is before the previous one \(2\.000 s\)"):
        intake.put([(solid(2), 2.0), (solid(3), 0.5)])
    assert len(intake) == 1 and intake.last_t == 1.0  # nothing of the refused batches was queued
    # every frame of a refused batch is counted as dropped, with the batch's reason
    assert intake.dropped == {"backpressure": 0, "invalid": 5, "failed": 0}
    reasons = [e.detail for e in dropped_events(intake)]
    assert len(reasons) == 5 and all("frame 1: frames must be uint8" in r for r in reasons[:3])
    assert all("before the previous one" in r for r in reasons[3:])
    assert [f.t for f in drained(intake)] == [1.0]


@pytest.mark.parametrize("t", [float("nan"), math.inf, -math.inf, -0.5, True, "1.0"])
def test_unusable_times_are_refused(t: object) -> None:
    intake = make_intake()
    with pytest.raises(FrameTimeError, match="frame time must be a finite number"):
        intake.put([(solid(1), t)])  # type: ignore[list-item]
    assert not intake.offer(solid(1), t)  # type: ignore[arg-type]
    events = dropped_events(intake)  # the refused batch of one, then the refused stream frame
    assert len(events) == 2
    assert all(e.reason == "invalid" and "finite number in [0, " in e.detail and e.t == 0.0 for e in events)
    assert intake.dropped["invalid"] == 2 and len(intake) == 0


def test_stream_frames_in_time_order_only() -> None:
    intake = make_intake()
    assert intake.offer(solid(1), 2.0) and intake.offer(solid(2), 2.0)  # an equal time is in order
    assert not intake.offer(solid(3), 1.5)
    assert intake.offer(solid(4), np.float32(3.0))  # numpy scalars are numbers too
    (event,) = dropped_events(intake)
    assert event.reason == "invalid" and event.t == 1.5
    assert event.detail == "frame time 1.500 s is before the previous one (2.000 s)"
    assert [f.t for f in drained(intake)] == [2.0, 2.0, 3.0]


def test_full_queue_drops_the_oldest_and_counts_it() -> None:
    intake = make_intake(capacity=3)
    for k in range(5):
        assert intake.offer(solid(k), float(k))
    pushed = intake.put([(solid(5), 5.0), (solid(6), 6.0)])
    assert (pushed.accepted, pushed.dropped, pushed.t, pushed.queued) == (2, 2, (5.0, 6.0), 3)
    events = dropped_events(intake)
    assert [(e.reason, e.detail, e.t) for e in events] == [("backpressure", f"frame {k}", float(k)) for k in range(4)]
    assert intake.dropped == {"backpressure": 4, "invalid": 0, "failed": 0}
    frames = drained(intake)
    assert [f.index for f in frames] == [4, 5, 6] and [round(float(f.image.mean())) for f in frames] == [4, 5, 6]


def test_a_corrupt_frame_fails_alone() -> None:
    intake = make_intake()
    good = png(solid(120))
    assert not intake.offer(good[: len(good) // 2], 1.0)  # a truncated PNG
    assert intake.offer(good, 1.0)  # the next frame, at the same time, is accepted
    assert not intake.offer(b"", 2.0)
    (frame,) = drained(intake)
    assert frame.t == 1.0 and frame.image.shape == (16, 16, 3) and round(float(frame.image.mean())) == 120
    assert [e.detail.split(" (")[0] for e in dropped_events(intake)] == [
        "not a decodable JPEG/PNG/WEBP image",
        "empty image data; send JPEG, PNG or WebP bytes",
    ]
    assert intake.dropped["invalid"] == 2


def test_arrays_are_copied_and_normalised() -> None:
    intake = make_intake()
    buffer = solid(5)
    grey = np.full((8, 8), 77, np.uint8)
    intake.put([(buffer, 0.0), (grey, 1.0)])
    buffer[:] = 250  # a webcam reusing its buffer
    first, second = drained(intake)
    assert round(float(first.image.mean())) == 5
    assert second.image.shape == (8, 8, 3) and second.image.flags.c_contiguous and int(second.image[0, 0, 2]) == 77


def test_encoded_frames_are_decoded_off_the_loop_with_a_pixel_limit() -> None:
    async def main() -> None:
        intake = make_intake()
        pushed = await intake.put_encoded([(png(solid(10)), 0.5), (png(solid(20)), None)], max_pixels=256)
        assert pushed.t == (0.5, 1.0) and pushed.queued == 2
        with pytest.raises(InvalidFrameError, match=r"^frame 1: image of 32x32 exceeds the limit of 256 pixels"):
            await intake.put_encoded([(png(solid(30)), 2.0), (png(solid(30, 32)), 3.0)], max_pixels=256)
        with pytest.raises(InvalidFrameError, match=r"^not a decodable"):  # one frame: no index in the message
            await intake.put_encoded([(b"junk", 2.0)], max_pixels=256)
        with pytest.raises(FrameTimeError):
            await intake.put_encoded([(png(solid(30)), 0.0)], max_pixels=256)
        assert len(intake) == 2 and intake.last_t == 1.0

    asyncio.run(main())


def test_real_video_frames_pass_through_in_order(real_clips: dict[str, Path]) -> None:
    source = VideoFileSource(real_clips["bikes"], fps=4, end=3.0)
    frames = list(source)
    intake = make_intake(capacity=len(frames))
    pushed = intake.put([(f.image, f.t) for f in frames])
    assert pushed.t == tuple(f.t for f in frames) and pushed.dropped == 0
    out = drained(intake)
    assert [f.t for f in out] == [f.t for f in frames]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(out, frames, strict=True))


def test_perception_failures_are_counted() -> None:
    intake = make_intake()
    intake.put([(solid(1), 0.0)])
    (frame,) = drained(intake)
    intake.failed(frame)
    (event,) = dropped_events(intake)
    assert (event.reason, event.detail, event.t) == ("failed", "frame 0", 0.0)
    assert intake.dropped["failed"] == 1


def test_waiting_for_a_frame_and_for_room() -> None:
    async def main() -> None:
        intake = make_intake(capacity=1)
        taker = asyncio.create_task(intake.take())
        await asyncio.sleep(0.01)
        assert not taker.done()
        intake.offer(solid(1), 0.0)
        assert (await asyncio.wait_for(taker, 1)).frame.t == 0.0
        intake.offer(solid(2), 1.0)
        waiter = asyncio.create_task(intake.wait_for_room())
        await asyncio.sleep(0.01)
        assert not waiter.done()  # full
        await intake.take()
        await asyncio.wait_for(waiter, 1)  # room after a take

    asyncio.run(main())


def test_a_closed_intake_refuses_frames_and_wakes_waiters() -> None:
    async def main() -> None:
        intake = make_intake(capacity=1)
        intake.offer(solid(1), 0.0)
        room = asyncio.create_task(intake.wait_for_room())
        await asyncio.sleep(0.01)
        intake.close()
        await asyncio.wait_for(room, 1)
        assert (await intake.take()) is not None  # what was queued can still be taken
        assert await asyncio.wait_for(intake.take(), 1) is None
        for push in (lambda: intake.offer(solid(1)), lambda: intake.put([(solid(1), None)])):
            with pytest.raises(SessionClosedError, match="session s1 is closed"):
                push()
        with pytest.raises(SessionClosedError):
            await intake.put_encoded([(png(solid(1)), None)], max_pixels=1024)

    asyncio.run(main())


def _jpeg(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 90)).save(buf, format="JPEG", quality=20)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_large_images_are_decoded_at_about_the_target_area(fmt: str) -> None:
    from assistant.intake import decode_reduced

    buf = io.BytesIO()
    Image.new("RGB", (4096, 2048), (10, 200, 90)).save(buf, format=fmt)
    rgb = decode_reduced(buf.getvalue(), 4096 * 4096, 50_000)
    assert rgb.dtype == np.uint8 and rgb.shape[2] == 3 and rgb.flags.writeable
    assert 0.8 * 50_000 <= rgb.shape[0] * rgb.shape[1] <= 50_000
    assert abs(rgb.shape[1] / rgb.shape[0] - 2.0) < 0.05  # the aspect ratio is kept
    assert np.abs(rgb[5, 5].astype(int) - (10, 200, 90)).max() <= 8
    with pytest.raises(InvalidFrameError, match="exceeds the limit"):  # declared size checked before decoding
        decode_reduced(buf.getvalue(), 4096 * 2048 - 1, 50_000)
    small = decode_reduced(_jpeg(64, 48), 4096 * 4096, 50_000)
    assert small.shape == (48, 64, 3)  # already smaller: kept as it is


def test_queued_frames_are_kept_reduced_and_their_bytes_bounded() -> None:
    from assistant.intake import FrameBytes, QueueFullError

    intake = FrameIntake("s1", EventLog("s1", history=100), fps=2.0, capacity=8, decode_pixels=10_000)
    intake.put([(np.zeros((1000, 1000, 3), np.uint8), 0.0)])  # an array from a producer: reduced as well
    assert intake.queued_bytes <= 3 * 10_000
    intake.max_bytes = intake.queued_bytes + 100
    with pytest.raises(QueueFullError) as refused:
        asyncio.run(intake.put_encoded([(_jpeg(2000, 1000), 0.5)], 4096 * 4096))
    assert refused.value.scope == "session"
    intake.max_bytes = None
    intake.worker_bytes = FrameBytes(limit=1000)  # less than one reduced frame
    assert not intake.offer(_jpeg(2000, 1000), 1.0)  # a stream frame over the worker's bound is dropped
    assert intake.dropped["backpressure"] == 2 and intake.received == 3
    drained(intake)
    assert intake.queued_bytes == 0  # taken frames give their bytes back
