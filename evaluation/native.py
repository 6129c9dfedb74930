"""Native runs: the decision module decides by itself when to answer (StreamingBench's Proactive Output, and
OVO-Bench's forward tasks read from standing monitors), resumably from ``answers.jsonl`` and several at once.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from assistant.config import VigilConfig
from assistant.orchestrator import Orchestrator
from assistant.reaction import EngineFactory, ReactionEngine
from assistant.sources import SourceError, VideoFileSource
from evaluation.run_report import Progress, RunReport
from evaluation.runner import AnswerLog, feed, missing_videos, orchestrator_for, raise_engine_error, run_units
from evaluation.stretches import SourceCursor

log = logging.getLogger(__name__)

__all__ = ["ForwardPoll", "ProactiveQuery", "run_forward_native", "run_proactive"]


@dataclass(frozen=True, slots=True)
class ProactiveQuery:
    """A standing instruction given at ``ask_time``; the session must decide by itself when to answer."""

    key: str
    video: Path
    ask_time: float
    until: float
    instruction: str
    probe: str
    answer_prompt: str


async def _proactive_one(
    orchestrator: Orchestrator, q: ProactiveQuery, fps: float, max_new_tokens: int
) -> tuple[str | None, float | None, int]:
    """Play ``q.video`` to ``q.until``; the first instruction trigger after ``ask_time`` and its answer."""
    from assistant.decision import InstructionMonitor

    live = await orchestrator.create_session()
    try:
        with SourceCursor(VideoFileSource(q.video, fps=fps, end=q.until + 0.5 / fps)) as cursor:
            await feed(live, cursor.upto(q.ask_time, inclusive=False), 0.0)
            if cursor.next_t is not None:  # the video reaches ask_time: give the instruction there
                await live.wait_idle()
                live.add_instruction(
                    InstructionMonitor(q.instruction, interval_s=1.0, probe=q.probe, answer_prompt=q.answer_prompt)
                )
                async with contextlib.aclosing(live.play(cursor.rest(), lossless=True)) as stamps:
                    async for _ in stamps:
                        if any(e.type == "answer_done" and e.kind == "instruction" for e in live.events.since(0)):
                            break
        await live.wait_idle()
        raise_engine_error(live)
        events = live.events.since(0)
        fired = next((e for e in events if e.type == "trigger" and e.kind == "instruction"), None)
        answer = next((e for e in events if e.type == "answer_done" and e.kind == "instruction"), None)
        prefill = orchestrator.engine.session_stats(live.session_id).prefilled_tokens
        return (answer.text if answer else None), (fired.t if fired else None), prefill
    finally:
        await orchestrator.close_session(live.session_id)


@dataclass(frozen=True, slots=True)
class ForwardPoll:
    """One scored poll of a forward task, answered from the decision module's own record."""

    key: str
    ask_time: float
    probe: str
    """The yes/no probe a standing monitor watches with."""
    read: Literal["count", "active", "fired"]
    """count: rising edges so far; active: holding now (Yes/No); fired: fired at least once so far (Yes/No)."""


async def _forward_item(
    orchestrator: Orchestrator, video: Path, polls: Sequence[ForwardPoll], fps: float, clip: bool
) -> tuple[dict[str, str], int]:
    from assistant.decision import InstructionMonitor

    live = await orchestrator.create_session()
    try:
        monitors = {p.probe: InstructionMonitor(p.probe, interval_s=1.0, probe=p.probe, respond=False) for p in polls}
        for monitor in monitors.values():
            live.add_instruction(monitor)
        end = None if clip else max(p.ask_time for p in polls) + 0.5 / fps  # a clip ends at its last poll
        with SourceCursor(VideoFileSource(video, fps=fps, end=end)) as cursor:
            await feed(live, cursor.rest(), 0.0)
        await live.wait_idle()
        raise_engine_error(live)
        answers = {}
        for p in polls:
            m = monitors[p.probe]
            if p.read == "count":
                answers[p.key] = str(m.fired_until(p.ask_time))
            elif p.read == "active":
                answers[p.key] = "Yes" if m.active_at(p.ask_time) else "No"
            else:
                answers[p.key] = "Yes" if m.fired_until(p.ask_time) else "No"
        return answers, orchestrator.engine.session_stats(live.session_id).prefilled_tokens
    finally:
        await orchestrator.close_session(live.session_id)


async def run_proactive(
    queries: Iterable[ProactiveQuery],
    *,
    adapter: Any,
    config: VigilConfig,
    out_dir: str | Path,
    make_engine: EngineFactory | None = None,
    engine: ReactionEngine | None = None,
    skip_missing: bool = False,
    max_new_tokens: int = 32,
    concurrency: int = 1,
    progress: Progress | None = None,
) -> tuple[dict[str, tuple[str | None, float | None]], RunReport]:
    """One session per instruction, answering when its decision module fires; returns (answer, stream second).

    Results are kept in ``out_dir/answers.jsonl`` (a rerun resumes); ``concurrency`` sessions play at once.
    """
    queries = list(queries)
    log_ = AnswerLog(Path(out_dir) / "answers.jsonl")
    report = RunReport("native", queries=len(queries), concurrency=concurrency)
    report.missing_videos = missing = missing_videos((q.video for q in queries), skip_missing)
    todo = [q for q in queries if q.key not in log_.answers and str(q.video) not in missing]
    report.skipped_done = sum(q.key in log_.answers for q in queries)
    progress = progress or Progress()
    progress.start(len(todo))
    started = time.perf_counter()
    if todo:
        async with orchestrator_for(adapter, config, make_engine, engine) as orchestrator:
            started = time.perf_counter()  # an engine built here is not the run's cost

            async def play(q: ProactiveQuery) -> None:
                try:
                    response, t, prefill = await _proactive_one(orchestrator, q, config.perception.fps, max_new_tokens)
                except SourceError as exc:
                    log.warning("video %s failed: %s", q.video, exc)
                    report.failed_videos.append(str(q.video))
                    progress.discount(1)
                    return
                log_.add(q.key, response, time=t)
                report.answered += 1
                report.prefill_tokens += prefill
                report.video_seconds += q.until
                progress.advance(1)

            await run_units(todo, play, concurrency)
    report.seconds = time.perf_counter() - started
    results = {q.key: (log_.answers[q.key], log_.extras[q.key].get("time")) for q in queries if q.key in log_.answers}
    return results, report


async def run_forward_native(
    items: Sequence[tuple[Path, Sequence[ForwardPoll], bool]],
    *,
    adapter: Any,
    config: VigilConfig,
    out_dir: str | Path,
    make_engine: EngineFactory | None = None,
    engine: ReactionEngine | None = None,
    skip_missing: bool = False,
    concurrency: int = 1,
    progress: Progress | None = None,
) -> tuple[dict[str, str], RunReport]:
    """One session per item whose monitors fire by themselves; its polls read them (resumable, ``concurrency``
    items at once).

    An item is (file, polls, clip): with ``clip`` the file is a clip ending at the last poll, played whole.
    """
    log_ = AnswerLog(Path(out_dir) / "answers.jsonl")
    report = RunReport("native", queries=sum(len(polls) for _, polls, _ in items), concurrency=concurrency)
    report.missing_videos = missing = missing_videos((v for v, _, _ in items), skip_missing)
    todo = [
        (video, polls, clip)
        for video, polls, clip in items
        if str(video) not in missing and not all(p.key in log_.answers for p in polls)
    ]
    report.skipped_done = sum(p.key in log_.answers for _, polls, _ in items for p in polls)
    progress = progress or Progress()
    progress.start(sum(p.key not in log_.answers for _, polls, _ in todo for p in polls))
    started = time.perf_counter()
    if todo:
        async with orchestrator_for(adapter, config, make_engine, engine) as orchestrator:
            started = time.perf_counter()  # an engine built here is not the run's cost

            async def play(item: tuple[Path, Sequence[ForwardPoll], bool]) -> None:
                video, polls, clip = item
                left = sum(p.key not in log_.answers for p in polls)
                try:
                    answers, prefill = await _forward_item(orchestrator, video, polls, config.perception.fps, clip)
                except SourceError as exc:
                    log.warning("video %s failed: %s", video, exc)
                    report.failed_videos.append(str(video))
                    progress.discount(left)
                    return
                for key, response in answers.items():
                    if key not in log_.answers:
                        log_.add(key, response)
                        report.answered += 1
                report.prefill_tokens += prefill
                report.video_seconds += max(p.ask_time for p in polls)
                progress.advance(left)

            await run_units(todo, play, concurrency)
    report.seconds = time.perf_counter() - started
    return log_.answers, report
