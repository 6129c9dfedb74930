"""The event log: gap-free sequence numbers, resume after any seq (since, follow, wait), a bounded history."""

from __future__ import annotations

import asyncio

import pytest

from assistant.event_log import EventLog
from assistant.events import AnswerFinished, FrameAccepted, FrameDropped, SessionClosed


def filled(n: int, history: int = 100) -> EventLog:
    log = EventLog("s1", history)
    for i in range(n):
        log.emit(FrameAccepted, i * 0.5, index=i)
    return log


def test_sequence_numbers_start_at_one_without_gaps() -> None:
    log = EventLog("s1", 100)
    assert log.last_seq == 0 and log.since(0) == []
    first = log.emit(FrameAccepted, 0.0, index=0)
    second = log.emit(FrameDropped, 0.5, reason="invalid", detail="empty image data")
    third = log.emit(AnswerFinished, 0.5, answer_id="a1", text="a cat", finish_reason="length")
    assert [e.seq for e in (first, second, third)] == [1, 2, 3] and log.last_seq == 3
    assert {e.session_id for e in log.since(0)} == {"s1"}
    assert second.to_dict() == {
        "type": "frame_dropped",
        "seq": 2,
        "session_id": "s1",
        "t": 0.5,
        "reason": "invalid",
        "detail": "empty image data",
    }
    assert third.to_dict()["finish_reason"] == "length"


@pytest.mark.parametrize("after", [0, 1, 4, 9, 10, 25])
def test_since_resumes_after_any_seq(after: int) -> None:
    log = filled(10)
    assert [e.seq for e in log.since(after)] == list(range(after + 1, 11))


def test_history_is_bounded_and_resume_starts_at_the_oldest_kept() -> None:
    log = filled(50, history=8)
    assert [e.seq for e in log.since(0)] == list(range(43, 51))
    assert [e.seq for e in log.since(20)] == list(range(43, 51))  # an evicted seq: from the oldest kept
    assert [e.seq for e in log.since(46)] == [47, 48, 49, 50] and log.last_seq == 50


def test_follow_replays_then_streams_live_events_until_close() -> None:
    async def main() -> list[int]:
        log = filled(5)

        async def collect() -> list[int]:
            return [e.seq async for e in log.follow(after=3)]

        follower = asyncio.create_task(collect())
        await asyncio.sleep(0.01)
        for i in range(5, 8):
            log.emit(FrameAccepted, i * 0.5, index=i)
            await asyncio.sleep(0)
        log.emit(SessionClosed, 4.0, reason="closed")
        log.close()
        return await asyncio.wait_for(follower, 1)

    assert asyncio.run(main()) == [4, 5, 6, 7, 8, 9]


def test_follow_after_the_end_of_a_closed_log_ends_at_once() -> None:
    async def main() -> tuple[list[int], list[int]]:
        log = filled(3)
        log.close()
        return [e.seq async for e in log.follow(after=3)], [e.seq async for e in log.follow()]

    assert asyncio.run(main()) == ([], [1, 2, 3])


def test_wait_returns_new_events_or_nothing_after_the_timeout() -> None:
    async def main() -> None:
        log = filled(2)
        assert [e.seq for e in await log.wait(after=0, timeout=1)] == [1, 2]  # already there: no wait
        assert await log.wait(after=2, timeout=0.05) == []
        waiter = asyncio.create_task(log.wait(after=2, timeout=5))
        await asyncio.sleep(0.01)
        log.emit(FrameAccepted, 1.0, index=2)
        assert [e.seq for e in await asyncio.wait_for(waiter, 1)] == [3]
        log.close()
        assert await asyncio.wait_for(log.wait(after=3, timeout=5), 1) == []  # closed: no wait

    asyncio.run(main())
