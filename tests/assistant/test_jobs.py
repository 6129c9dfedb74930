"""The job queue: priorities, supersede, cancel by answer id, interrupting a running proactive answer, close."""

from __future__ import annotations

import asyncio

import pytest

from assistant.decision import InstructionMonitor
from assistant.errors import SessionClosedError
from assistant.jobs import PROACTIVE, JobQueue


def test_jobs_run_by_priority_then_in_queue_order() -> None:
    async def main() -> list[tuple[str, str]]:
        jobs = JobQueue("s1")
        for kind, text in [
            ("sync", ""),
            ("probe", "p1"),
            ("narration", "n1"),
            ("question", "q1"),
            ("instruction", "i1"),
            ("question", "q2"),
        ]:
            jobs.put(kind, text, 1.0)
        assert len(jobs) == 6 and not jobs.idle
        return [(job.kind, job.question) for job in [await jobs.take() for _ in range(6)]]

    assert asyncio.run(main()) == [
        ("question", "q1"),
        ("question", "q2"),
        ("instruction", "i1"),
        ("narration", "n1"),
        ("probe", "p1"),
        ("sync", ""),
    ]


async def _running(jobs: JobQueue, kind: str) -> asyncio.Task:
    """Mark a freshly queued job of ``kind`` as running, as the reaction loop does."""
    job = jobs.put(kind, kind, 0.0)  # type: ignore[arg-type]
    assert await jobs.take() is job
    task = asyncio.create_task(asyncio.sleep(10))
    jobs.running = (job, task)
    await asyncio.sleep(0)
    return task


def test_a_newer_narration_supersedes_queued_and_running_ones() -> None:
    async def main() -> None:
        jobs = JobQueue("s1")
        running = await _running(jobs, "narration")
        stale = jobs.put("narration", "old", 1.0)
        question = jobs.put("question", "what?", 1.0)
        fresh = jobs.put("narration", "new", 2.0, supersede=True)
        await asyncio.sleep(0)
        assert running.cancelled()
        assert [await jobs.take() for _ in range(2)] == [question, fresh] and len(jobs) == 0
        assert stale.done.cancelled()  # dropped, never answered: its future is resolved, not left pending

    asyncio.run(main())


def test_cancel_by_answer_id() -> None:
    async def main() -> None:
        jobs = JobQueue("s1")
        running = await _running(jobs, "question")
        queued = jobs.put("question", "later", 1.0)
        assert jobs.cancel(queued.answer_id) and queued.done.cancelled() and len(jobs) == 0
        assert not jobs.cancel(queued.answer_id) and not jobs.cancel("a-missing-id")
        assert jobs.cancel(jobs.running[0].answer_id)
        await asyncio.sleep(0)
        assert running.cancelled()

    asyncio.run(main())


def test_interrupt_cancels_only_the_given_kinds() -> None:
    async def main() -> None:
        jobs = JobQueue("s1")
        question = await _running(jobs, "question")
        jobs.interrupt(*PROACTIVE)
        await asyncio.sleep(0)
        assert not question.cancelled()
        question.cancel()
        narration = await _running(jobs, "narration")
        jobs.interrupt(*PROACTIVE)
        await asyncio.sleep(0)
        assert narration.cancelled()

    asyncio.run(main())


def test_has_looks_at_queued_and_running_jobs_per_monitor() -> None:
    async def main() -> None:
        jobs = JobQueue("s1")
        dog, cat = InstructionMonitor("tell me when a dog appears"), InstructionMonitor("tell me when a cat appears")
        jobs.put("probe", dog.question, 1.0, monitor=dog)
        assert jobs.has("probe") and jobs.has("probe", dog) and not jobs.has("probe", cat) and not jobs.has("sync")
        await jobs.take()
        assert not jobs.has("probe", dog)
        await _running(jobs, "sync")
        assert jobs.has("sync")

    asyncio.run(main())


def test_close_fails_queued_jobs_and_refuses_new_ones() -> None:
    async def main() -> None:
        jobs = JobQueue("s1")
        running = await _running(jobs, "question")
        queued = jobs.put("question", "later", 1.0)
        jobs.close(SessionClosedError("session s1 closed"))
        await asyncio.sleep(0)
        assert running.cancelled()
        with pytest.raises(SessionClosedError, match="s1 closed"):
            await queued.done
        assert await asyncio.wait_for(jobs.take(), 1) is None
        with pytest.raises(SessionClosedError, match="session s1 is closed"):
            jobs.put("question", "again?", 1.0)

    asyncio.run(main())
