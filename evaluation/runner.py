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
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from assistant.config import VigilConfig
from assistant.orchestrator import LiveSession, Orchestrator
from assistant.reaction import EngineFactory, ReactionEngine
from assistant.sources import SourceError, VideoFileSource
from evaluation.run_report import Progress, RunReport
from evaluation.stretches import SourceCursor, Stretch

log = logging.getLogger(__name__)

__all__ = [
    "AnswerLog",
    "Progress",
    "RunQuery",
    "RunReport",
    "orchestrator_for",
    "run",
    "run_queries",
    "run_units",
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
    """Answers by query key, appended to a JSON-lines file as they arrive (the resume point).

    A record may carry more than the response (``extras``: a proactive answer's stream time).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.answers: dict[str, Any] = {}
        self.extras: dict[str, dict[str, Any]] = {}
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
                key = str(record["key"])
                self.answers[key] = record["response"]
                self.extras[key] = {k: v for k, v in record.items() if k not in ("key", "response")}
            except (json.JSONDecodeError, KeyError, TypeError):
                log.warning("%s:%d: unreadable line ignored", path, n)

    def add(self, key: str, response: str | None, **extras: Any) -> None:
        """Record an answer (and its extras) and append it to the file."""
        self.answers[key] = response
        self.extras[key] = extras
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"key": key, "response": response, **extras}, ensure_ascii=False) + "\n")


def answered_keys(out_dir: str | Path) -> set[str]:
    """Keys already answered in ``out_dir/answers.jsonl`` (empty when there is none)."""
    return set(AnswerLog(Path(out_dir) / "answers.jsonl").answers)


def raise_engine_error(live: LiveSession) -> None:
    """Raise the first engine failure a session reported (a monitor's probe fails without stopping the stream)."""
    from assistant.reaction import EngineError

    failed = next((e for e in live.events.since(0) if e.type == "error" and e.code == "engine_error"), None)
    if failed is not None:
        raise EngineError(failed.message)


def missing_videos(videos: Iterable[Path], skip_missing: bool) -> list[str]:
    """The videos that are not files; FileNotFoundError unless ``skip_missing``."""
    missing = sorted({str(v) for v in videos if not v.is_file()})
    if missing and not skip_missing:
        raise FileNotFoundError(f"{len(missing)} video(s) missing, e.g. {missing[0]} (use --skip-missing to go on)")
    return missing


@contextlib.asynccontextmanager
async def orchestrator_for(
    adapter: Any, config: VigilConfig, make_engine: EngineFactory | None, engine: ReactionEngine | None
) -> AsyncIterator[Orchestrator]:
    """An orchestrator over ``engine`` (left running: its owner shuts it down), or over a new engine it owns."""
    if engine is None:
        if make_engine is None:
            raise ValueError("either make_engine or engine is needed")
        engine = make_engine(config.engine)
        owned = True
    else:
        owned = False
    orchestrator = Orchestrator(engine, adapter, with_frame_queue(config))
    try:
        yield orchestrator
    finally:
        if owned:
            await orchestrator.shutdown()
        else:
            for sid in list(orchestrator.sessions):
                await orchestrator.close_session(sid, "shutdown")


def with_frame_queue(config: VigilConfig, frames: int = 64) -> VigilConfig:
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
            stream_t = await feed(live, stretch, stream_t)
            on_answer(q, await _ask(live, q, max_new_tokens))
        stream_t = await feed(live, cursor.rest(), stream_t)
    return stream_t


async def feed(live: LiveSession, stretch: Stretch, stream_t: float) -> float:
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
    make_engine: EngineFactory | None = None,
    mode: Mode,
    out_dir: str | Path,
    skip_missing: bool = False,
    max_new_tokens: int = 32,
    concurrency: int = 1,
    progress: Progress | None = None,
    engine: ReactionEngine | None = None,
) -> tuple[dict[str, Any], RunReport]:
    """Answer every query (resuming from ``out_dir/answers.jsonl``); returns answers by key and a report.

    ``concurrency`` passes (videos in live mode, questions in replay) run at once as sessions of one engine:
    ``engine`` (left running), or one built with ``make_engine`` when there is something to answer.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_ = AnswerLog(out / "answers.jsonl")
    queries = list(queries)
    report = RunReport(mode, queries=len(queries), concurrency=concurrency)
    report.missing_videos = missing = missing_videos((q.video for q in queries), skip_missing)
    todo = [q for q in queries if q.key not in log_.answers and str(q.video) not in missing]
    report.skipped_done = sum(q.key in log_.answers for q in queries)
    progress = progress or Progress()
    progress.start(len(todo))

    def record(q: RunQuery, response: str) -> None:
        log_.add(q.key, response)
        report.answered += 1
        progress.advance(1)

    started = time.perf_counter()
    if todo:
        async with orchestrator_for(adapter, config, make_engine, engine) as orchestrator:
            started = time.perf_counter()  # an engine built here is not the run's cost

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

            await run_units(_work_units(todo, mode), play, concurrency)
    report.seconds = time.perf_counter() - started
    report.video_seconds = _video_seconds(q for q in todo if q.key in log_.answers)
    return log_.answers, report


def _video_seconds(queries: Iterable[RunQuery]) -> float:
    """Distinct video time: each source video up to its last question."""
    ends: dict[str, float] = {}
    for q in queries:
        ends[q.source_name] = max(ends.get(q.source_name, 0.0), q.ask_time)
    return sum(ends.values())


async def run_units(units: Sequence[Any], play: Callable[[Any], Any], concurrency: int) -> None:
    """Run ``play`` over ``units`` with at most ``concurrency`` at once, in order of start (the first error of a
    pass is raised, the others cancelled)."""
    pending = iter(units)

    async def worker() -> None:
        for unit in pending:  # one shared iterator: each unit is taken once
            await play(unit)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, len(units))):
                group.create_task(worker())
    except ExceptionGroup as failed:  # the first failure stops the run; the other passes were cancelled
        raise failed.exceptions[0] from None


def run(queries: Iterable[RunQuery], **kwargs: Any) -> tuple[dict[str, str], RunReport]:
    """Synchronous wrapper of ``run_queries``."""
    return asyncio.run(run_queries(queries, **kwargs))
