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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from assistant.config import VigilConfig
from assistant.orchestrator import LiveSession, Orchestrator
from assistant.reaction import EngineFactory
from assistant.sources import SourceError, VideoFileSource
from evaluation.run_report import Progress, RunReport
from evaluation.stretches import SourceCursor, Stretch

log = logging.getLogger(__name__)

__all__ = [
    "AnswerLog",
    "ForwardPoll",
    "ProactiveQuery",
    "Progress",
    "RunQuery",
    "RunReport",
    "run",
    "run_forward_native",
    "run_proactive",
    "run_queries",
]

Mode = Literal["replay", "live"]


@dataclass(frozen=True, slots=True)
class RunQuery:
    """A question to ask at ``ask_time`` seconds of ``video``.

    ``source`` names the video the file shows (live mode plays each source once; default the file itself).
    ``clip_end``: ``video`` is a clip that ends at this stream time (a benchmark's pre-cut clip): played whole
    when the query is asked alone; in a shared pass the question sees the frames before ``clip_end``.
    """

    key: str
    video: Path
    ask_time: float
    prompt: str
    source: str | None = None
    clip_end: float | None = None

    @property
    def source_name(self) -> str:
        return self.source if self.source is not None else str(self.video)


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


def _file_of(queries: Sequence[RunQuery]) -> tuple[Path, float | None]:
    """The file one pass over ``queries`` plays and where the pass ends (None: the whole file, a clip)."""
    last = max(queries, key=lambda q: q.clip_end if q.clip_end is not None else q.ask_time)
    return last.video, (None if last.clip_end is not None else max(q.ask_time for q in queries))


async def _play(
    live: LiveSession,
    queries: Sequence[RunQuery],
    fps: float,
    on_answer: Callable[[RunQuery, str], None],
    max_new_tokens: int,
) -> float:
    """One pass over the queries' file, asking each query once every frame it may see is in."""
    video, until = _file_of(queries)
    end = None if until is None else until + 0.5 / fps
    ordered = sorted(queries, key=lambda q: q.clip_end if q.clip_end is not None else q.ask_time)
    stream_t = 0.0
    with SourceCursor(VideoFileSource(video, fps=fps, end=end)) as cursor:
        for i, q in enumerate(ordered):  # one at or past the end is asked at the end
            if q.clip_end is None:
                stretch = cursor.upto(q.ask_time)
            elif i == len(ordered) - 1:
                stretch = cursor.rest()  # the pass's own clip, played whole
            else:
                stretch = cursor.upto(q.clip_end, inclusive=False)
            stream_t = await _feed(live, stretch, stream_t)
            on_answer(q, await _ask(live, q, max_new_tokens))
        stream_t = await _feed(live, cursor.rest(), stream_t)
    return stream_t


async def _feed(live: LiveSession, stretch: Stretch, stream_t: float) -> float:
    """Play a stretch losslessly; the stream time of its last frame (``stream_t`` when it had none)."""
    async for t in live.play(stretch, lossless=True):
        stream_t = t
    return stream_t


def _work_units(todo: Sequence[RunQuery], mode: Mode) -> list[list[RunQuery]]:
    """Live: one pass per source video; replay: one pass per query (in source, then time order)."""
    by_source: dict[str, list[RunQuery]] = {}
    for q in todo:
        by_source.setdefault(q.source_name, []).append(q)
    if mode == "live":
        return list(by_source.values())
    return [[q] for items in by_source.values() for q in sorted(items, key=lambda q: q.ask_time)]


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
    concurrency: int = 1,
    progress: Progress | None = None,
) -> tuple[dict[str, str], RunReport]:
    """Answer every query (resuming from ``out_dir/answers.jsonl``); returns answers by key and a report.

    ``concurrency`` passes (videos in live mode, questions in replay) run at once as sessions of one engine.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_ = AnswerLog(out / "answers.jsonl")
    queries = list(queries)
    report = RunReport(mode, queries=len(queries), concurrency=concurrency)
    missing = sorted({str(q.video) for q in queries if not q.video.is_file()})
    if missing and not skip_missing:
        raise FileNotFoundError(f"{len(missing)} video(s) missing, e.g. {missing[0]} (use --skip-missing to go on)")
    report.missing_videos = missing
    todo = [q for q in queries if q.key not in log_.answers and str(q.video) not in missing]
    report.skipped_done = sum(q.key in log_.answers for q in queries)
    progress = progress or Progress()
    progress.start(len(todo))
    units = _work_units(todo, mode)
    orchestrator = Orchestrator(make_engine(config.engine), adapter, _with_frame_queue(config))

    def record(q: RunQuery, response: str) -> None:
        log_.add(q.key, response)
        report.answered += 1
        progress.advance(1)

    async def play(unit: list[RunQuery]) -> None:
        live = await orchestrator.create_session()
        try:
            played = await _play(live, unit, config.perception.fps, record, max_new_tokens)
            report.stream_seconds += played  # added after the await: other passes add theirs meanwhile
            report.prefill_tokens += orchestrator.engine.session_stats(live.session_id).prefilled_tokens
        except SourceError as exc:
            log.warning("video %s failed: %s", unit[0].video, exc)
            report.failed_videos.append(str(unit[0].video))
            progress.discount(sum(q.key not in log_.answers for q in unit))
        finally:
            await orchestrator.close_session(live.session_id)

    started = time.perf_counter()
    try:
        await _run_units(units, play, concurrency)
    finally:
        await orchestrator.shutdown()
    report.seconds = time.perf_counter() - started
    answered_now = {q.key for q in todo if q.key in log_.answers}
    report.video_seconds = _video_seconds(q for q in todo if q.key in answered_now)
    return log_.answers, report


def _video_seconds(queries: Iterable[RunQuery]) -> float:
    """Distinct video time: each source video up to its last question."""
    ends: dict[str, float] = {}
    for q in queries:
        ends[q.source_name] = max(ends.get(q.source_name, 0.0), q.ask_time)
    return sum(ends.values())


async def _run_units(units: Sequence[Any], play: Callable[[Any], Any], concurrency: int) -> None:
    """Run ``play`` over ``units`` with at most ``concurrency`` at once, in order of start."""
    pending = iter(units)

    async def worker() -> None:
        for unit in pending:  # one shared iterator: each unit is taken once
            await play(unit)

    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, len(units))):
            group.create_task(worker())


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
            await _feed(live, cursor.rest(), 0.0)
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
    items: Sequence[tuple[Path, Sequence[ForwardPoll], bool]],
    *,
    adapter: Any,
    config: VigilConfig,
    make_engine: EngineFactory,
    out_dir: str | Path,
    skip_missing: bool = False,
) -> tuple[dict[str, str], RunReport]:
    """Forward tasks in native mode: one session per item whose monitors fire by themselves; polls read them.

    An item is (file, polls, clip): with ``clip`` the file is a clip ending at the last poll, played whole.
    """
    log_ = AnswerLog(Path(out_dir) / "answers.jsonl")
    report = RunReport("native", queries=sum(len(polls) for _, polls, _ in items))
    missing = sorted({str(v) for v, _, _ in items if not v.is_file()})
    if missing and not skip_missing:
        raise FileNotFoundError(f"{len(missing)} video(s) missing, e.g. {missing[0]} (use --skip-missing to go on)")
    report.missing_videos = missing
    config = _with_frame_queue(config)
    orchestrator = Orchestrator(make_engine(config.engine), adapter, config)
    started = time.perf_counter()
    try:
        for video, polls, clip in items:
            if str(video) in missing:
                continue
            if all(p.key in log_.answers for p in polls):
                report.skipped_done += len(polls)
                continue
            answers, prefill = await _forward_item(orchestrator, video, polls, config.perception.fps, clip)
            for key, response in answers.items():
                log_.add(key, response)
            report.answered += len(answers)
            report.prefill_tokens += prefill
            report.video_seconds += max(p.ask_time for p in polls)
    finally:
        await orchestrator.shutdown()
    report.seconds = time.perf_counter() - started
    return log_.answers, report
