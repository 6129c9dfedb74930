"""The reaction loop of a live session: queued jobs -> the shared engine -> answer events, one job at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from assistant.event_log import EventLog
from assistant.events import AnswerDeltaEvent, AnswerFinished, AnswerStarted, ErrorEvent
from assistant.jobs import Job, JobQueue
from assistant.reaction import AnswerDelta, AnswerDone
from assistant.session import Session

log = logging.getLogger(__name__)


class ReactionLoop:
    """Runs the session's jobs by priority; a job can be cancelled while it runs without stopping the loop."""

    def __init__(
        self, session: Session, jobs: JobQueue, events: EventLog, on_probe: Callable[[Job, float], None]
    ) -> None:
        """``on_probe`` gets each probe job with its P(yes) before the job's future resolves."""
        self.session = session
        self.jobs = jobs
        self.events = events
        self.on_probe = on_probe

    async def run(self) -> None:
        """Run jobs until the queue closes."""
        while (job := await self.jobs.take()) is not None:
            task = asyncio.create_task(self._run(job), name=f"{job.kind}-{job.answer_id}")
            self.jobs.running = (job, task)
            try:
                await asyncio.shield(task)  # cancelling the job does not cancel the loop
            except asyncio.CancelledError:
                if self.jobs.closed:
                    task.cancel()
                    await asyncio.wait({task})  # the answer unwinds before the session closes
                    raise
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            finally:
                self.jobs.running = None
                if task.cancelled() and not job.done.done():  # cancelled before it began: nobody waits forever
                    self._cancelled(job)

    async def _run(self, job: Job) -> None:
        engine, sid = self.session.engine, self.session.session_id
        try:
            if job.kind == "sync":  # prefill new memory while idle: the next question pays only for itself
                job.done.set_result(await engine.sync(sid))
            elif job.kind == "probe":
                p_yes = await engine.probe(sid, job.question, job.t)
                self.on_probe(job, p_yes)
                job.done.set_result(p_yes)
            else:
                await self._answer(job)
        except asyncio.CancelledError:
            self._cancelled(job)
            raise
        except Exception as exc:
            log.warning("answer %s failed: %s", job.answer_id, exc)
            log.debug("reaction failure", exc_info=True)
            self.events.emit(ErrorEvent, job.t, code="engine_error", message=str(exc), answer_id=job.answer_id)
            job.fail(exc)

    def _cancelled(self, job: Job) -> None:
        """Report a cancelled answer (``answer_done``, reason cancelled) and cancel its future."""
        if job.kind not in ("sync", "probe"):
            self.events.emit(
                AnswerFinished,
                job.t,
                answer_id=job.answer_id,
                kind=job.kind,
                question=job.question,
                finish_reason="cancelled",
                text=job.text,
                generated_tokens=job.generated,
            )
        if not job.done.done():
            job.done.cancel()

    async def _answer(self, job: Job) -> None:
        self.events.emit(AnswerStarted, job.t, answer_id=job.answer_id, kind=job.kind, question=job.question)
        options = {"remember": job.kind == "question", **job.options}
        stream = self.session.ask(job.question, job.t, kind=job.kind, **options)
        try:
            async for event in stream:
                if isinstance(event, AnswerDelta):
                    job.text += event.text
                    job.generated += max(1, len(event.token_ids))
                    self.events.emit(AnswerDeltaEvent, job.t, answer_id=job.answer_id, text=event.text)
                elif isinstance(event, AnswerDone):
                    s = event.stats
                    done = self.events.emit(
                        AnswerFinished,
                        job.t,
                        answer_id=job.answer_id,
                        kind=job.kind,
                        question=job.question,
                        text=event.text,
                        finish_reason=s.finish_reason,
                        ttft_s=s.ttft_s,
                        total_s=s.total_s,
                        cached_tokens=s.cached_tokens,
                        prompt_tokens=s.prompt_tokens,
                        synced_tokens=s.synced_tokens,
                        generated_tokens=s.generated_tokens,
                    )
                    job.done.set_result(done)
        finally:
            await stream.aclose()
