"""Run a benchmark's questions against videos through live sessions, in replay or live mode.

- *replay*: every question gets a fresh session that watches the video up to the question's time (the
  protocol of the published numbers; memory is rebuilt for every question).
- *live*: each video is played once through one session and every question is asked when the stream reaches
  its time, reusing the memory (questions are not kept in the dialogue, so they do not influence each other).

Answers are appended to ``answers.jsonl`` as they come, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from assistant.config import VigilConfig
from assistant.orchestrator import LiveSession, Orchestrator
from assistant.reaction import EngineFactory
from assistant.sources import SourceError, VideoFileSource
from evaluation.stretches import SourceCursor, Stretch

log = logging.getLogger(__name__)

Mode = Literal["replay", "live"]


@dataclass(frozen=True, slots=True)
class RunQuery:
    """A question to ask at ``ask_time`` seconds of ``video``."""

    key: str
    video: Path
    ask_time: float
    prompt: str


@dataclass(slots=True)
class RunReport:
    """What a run did and what it cost."""

    mode: str
    queries: int = 0
    answered: int = 0
    skipped_done: int = 0
    missing_videos: list[str] = field(default_factory=list)
    failed_videos: list[str] = field(default_factory=list)
    prefill_tokens: int = 0
    stream_seconds: float = 0.0
    """Stream time played (replay plays each video once per question)."""
    video_seconds: float = 0.0
    """Distinct video time the questions needed (each video up to its last question)."""
    seconds: float = 0.0

    @property
    def seconds_per_video_minute(self) -> float:
        """Wall seconds per minute of benchmark video."""
        return self.seconds / (self.video_seconds / 60) if self.video_seconds else 0.0


class AnswerLog:
    """Answers by query key, appended to a JSON-lines file as they arrive (the resume point)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.answers: dict[str, str] = {}
        if not path.exists():
            return
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        if text and not text.endswith("\n"):  # the last write was interrupted: drop the partial line
            log.warning("%s: dropping an incomplete last line (an interrupted write)", path)
            lines = lines[:-1]
            path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        for n, line in enumerate(lines, start=1):
            try:
                record = json.loads(line)
                self.answers[str(record["key"])] = record["response"]
            except (json.JSONDecodeError, KeyError, TypeError):
                log.warning("%s:%d: unreadable line ignored", path, n)

    def add(self, key: str, response: str) -> None:
        self.answers[key] = response
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"key": key, "response": response}, ensure_ascii=False) + "\n")


def _with_frame_queue(config: VigilConfig, frames: int = 64) -> VigilConfig:
    """``config`` with a deeper frame queue: benchmark videos are played losslessly, faster than real time."""
    return config.model_copy(update={"session": config.session.model_copy(update={"frame_queue": frames})})


async def _ask(live: LiveSession, query: RunQuery, max_new_tokens: int) -> str:
    await live.wait_idle()
    _, done = live.ask(query.prompt, query.ask_time, max_new_tokens=max_new_tokens, remember=False)
    return (await done).text


async def _play(
    live: LiveSession,
    video: Path,
    fps: float,
    until: float,
    queries: Sequence[RunQuery],
    on_answer: Callable[[RunQuery, str], None],
    max_new_tokens: int,
) -> float:
    """Feed the video up to ``until`` s, asking each query once every frame up to its time is in."""
    stream_t = 0.0
    with SourceCursor(VideoFileSource(video, fps=fps, end=until + 0.5 / fps)) as cursor:
        for q in sorted(queries, key=lambda q: q.ask_time):  # one at or past the end is asked at the end
            stream_t = await _feed(live, cursor.upto(q.ask_time), stream_t)
            on_answer(q, await _ask(live, q, max_new_tokens))
        stream_t = await _feed(live, cursor.rest(), stream_t)
    return stream_t


async def _feed(live: LiveSession, stretch: Stretch, stream_t: float) -> float:
    """Play a stretch losslessly; the stream time of its last frame (``stream_t`` when it had none)."""
    async for t in live.play(stretch, lossless=True):
        stream_t = t
    return stream_t


async def run_queries(
    queries: Iterable[RunQuery],
    *,
    adapter: Any,
    config: VigilConfig,
    make_engine: EngineFactory,
    mode: Mode,
    out_dir: str | Path,
    skip_missing: bool = False,
    max_new_tokens: int = 32,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, str], RunReport]:
    """Answer every query (resuming from ``out_dir/answers.jsonl``); returns answers by key and a report."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_ = AnswerLog(out / "answers.jsonl")
    queries = list(queries)
    report = RunReport(mode, queries=len(queries))
    by_video: dict[Path, list[RunQuery]] = {}
    for q in queries:
        by_video.setdefault(q.video, []).append(q)
    missing = sorted(str(v) for v in by_video if not v.is_file())
    if missing and not skip_missing:
        raise FileNotFoundError(f"{len(missing)} video(s) missing, e.g. {missing[0]} (use --skip-missing to go on)")
    report.missing_videos = missing
    config = _with_frame_queue(config)
    orchestrator = Orchestrator(make_engine(config.engine), adapter, config)
    started = time.perf_counter()

    def record(q: RunQuery, response: str) -> None:
        log_.add(q.key, response)
        report.answered += 1
        if progress is not None:
            progress(1)

    try:
        for video, items in by_video.items():
            todo = [q for q in items if q.key not in log_.answers]
            report.skipped_done += len(items) - len(todo)
            if progress is not None and len(items) > len(todo):
                progress(len(items) - len(todo))
            if not todo or str(video) in missing:
                continue
            report.video_seconds += max(q.ask_time for q in todo)
            groups = [todo] if mode == "live" else [[q] for q in sorted(todo, key=lambda q: q.ask_time)]
            try:
                for group in groups:
                    until = max(q.ask_time for q in group)
                    live = await orchestrator.create_session()
                    try:
                        report.stream_seconds += await _play(
                            live, video, config.perception.fps, until, group, record, max_new_tokens
                        )
                        report.prefill_tokens += orchestrator.engine.session_stats(live.session_id).prefilled_tokens
                    finally:
                        await orchestrator.close_session(live.session_id)
            except SourceError as exc:
                log.warning("video %s failed: %s", video, exc)
                report.failed_videos.append(str(video))
    finally:
        await orchestrator.shutdown()
    report.seconds = time.perf_counter() - started
    return log_.answers, report


def run(queries: Iterable[RunQuery], **kwargs: Any) -> tuple[dict[str, str], RunReport]:
    """Synchronous wrapper of ``run_queries``."""
    return asyncio.run(run_queries(queries, **kwargs))


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
            await _feed(live, cursor.upto(q.ask_time, inclusive=False), 0.0)
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
        events = live.events.since(0)
        fired = next((e for e in events if e.type == "trigger" and e.kind == "instruction"), None)
        answer = next((e for e in events if e.type == "answer_done" and e.kind == "instruction"), None)
        prefill = orchestrator.engine.session_stats(live.session_id).prefilled_tokens
        return (answer.text if answer else None), (fired.t if fired else None), prefill
    finally:
        await orchestrator.close_session(live.session_id)


async def run_proactive(
    queries: Iterable[ProactiveQuery],
    *,
    adapter: Any,
    config: VigilConfig,
    make_engine: EngineFactory,
    skip_missing: bool = False,
    max_new_tokens: int = 32,
) -> tuple[dict[str, tuple[str | None, float | None]], RunReport]:
    """Native proactive mode: one session per instruction, answers when its decision module fires."""
    queries = list(queries)
    report = RunReport("native", queries=len(queries))
    missing = sorted({str(q.video) for q in queries if not q.video.is_file()})
    if missing and not skip_missing:
        raise FileNotFoundError(f"{len(missing)} video(s) missing, e.g. {missing[0]} (use --skip-missing to go on)")
    report.missing_videos = missing
    config = _with_frame_queue(config)
    orchestrator = Orchestrator(make_engine(config.engine), adapter, config)
    results: dict[str, tuple[str | None, float | None]] = {}
    started = time.perf_counter()
    try:
        for q in queries:
            if str(q.video) in missing:
                continue
            response, t, prefill = await _proactive_one(orchestrator, q, config.perception.fps, max_new_tokens)
            results[q.key] = (response, t)
            report.answered += 1
            report.prefill_tokens += prefill
            report.video_seconds += q.until
    finally:
        await orchestrator.shutdown()
    report.seconds = time.perf_counter() - started
    return results, report


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
    orchestrator: Orchestrator, video: Path, polls: Sequence[ForwardPoll], fps: float
) -> tuple[dict[str, str], int]:
    from assistant.decision import InstructionMonitor

    live = await orchestrator.create_session()
    try:
        monitors = {p.probe: InstructionMonitor(p.probe, interval_s=1.0, probe=p.probe, respond=False) for p in polls}
        for monitor in monitors.values():
            live.add_instruction(monitor)
        await _play(live, video, fps, max(p.ask_time for p in polls), (), lambda q, r: None, 1)
        await live.wait_idle()
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


async def run_forward_native(
    items: Sequence[tuple[Path, Sequence[ForwardPoll]]],
    *,
    adapter: Any,
    config: VigilConfig,
    make_engine: EngineFactory,
    out_dir: str | Path,
    skip_missing: bool = False,
) -> tuple[dict[str, str], RunReport]:
    """Forward tasks in native mode: one session per item whose monitors fire by themselves; polls read them."""
    log_ = AnswerLog(Path(out_dir) / "answers.jsonl")
    report = RunReport("native", queries=sum(len(polls) for _, polls in items))
    missing = sorted({str(v) for v, _ in items if not v.is_file()})
    if missing and not skip_missing:
        raise FileNotFoundError(f"{len(missing)} video(s) missing, e.g. {missing[0]} (use --skip-missing to go on)")
    report.missing_videos = missing
    config = _with_frame_queue(config)
    orchestrator = Orchestrator(make_engine(config.engine), adapter, config)
    started = time.perf_counter()
    try:
        for video, polls in items:
            if str(video) in missing:
                continue
            if all(p.key in log_.answers for p in polls):
                report.skipped_done += len(polls)
                continue
            answers, prefill = await _forward_item(orchestrator, video, polls, config.perception.fps)
            for key, response in answers.items():
                log_.add(key, response)
            report.answered += len(answers)
            report.prefill_tokens += prefill
            report.video_seconds += max(p.ask_time for p in polls)
    finally:
        await orchestrator.shutdown()
    report.seconds = time.perf_counter() - started
    return log_.answers, report
