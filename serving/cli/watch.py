"""``vigil watch``: play a video file as a live stream through a session, asking questions at their times."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from typing import Any

from serving.cli.commands import Commands
from serving.cli.options import (
    CliError,
    add_memory_args,
    add_model_args,
    add_perception_args,
    add_speed_arg,
    build_config,
    parse_speed,
)
from serving.runtime import Runtime


def register(commands: Commands) -> None:
    """Add ``vigil watch``."""
    p = commands.add("watch", help="play a video as a live stream and answer questions at their times")
    p.add_argument("video", help="video file")
    p.add_argument(
        "--ask",
        action="append",
        default=[],
        metavar="SECONDS:QUESTION",
        help="ask QUESTION when the stream reaches SECONDS (repeatable)",
    )
    add_model_args(p)
    add_perception_args(p)
    add_memory_args(p)
    p.add_argument(
        "--proactive",
        choices=["off", "scene", "narrate"],
        default="off",
        help="report scene changes (scene) or describe them (narrate)",
    )
    p.add_argument(
        "--instruct",
        action="append",
        default=[],
        metavar="TEXT",
        help='a standing instruction, e.g. "tell me when a person enters" (repeatable)',
    )
    add_speed_arg(p)
    p.add_argument("--jsonl", action="store_true", help="one JSON event per line, then a summary line")
    p.set_defaults(func=cmd_watch)


def watch_event(event: Any) -> dict[str, Any] | None:
    """The JSON line ``vigil watch --jsonl`` prints for a session event (None: not printed)."""
    if event.type == "answer_done":
        return {
            "type": "answer",
            "kind": event.kind,
            "t": round(event.t, 3),
            "question": event.question,
            "answer": event.text,
            "ttft_s": round(event.ttft_s, 4),
            "total_s": round(event.total_s, 4),
            "cached_tokens": event.cached_tokens,
            "prompt_tokens": event.prompt_tokens,
            "generated_tokens": event.generated_tokens,
            "finish_reason": event.finish_reason,
        }
    if event.type in ("trigger", "error", "frame_dropped"):
        return event.to_dict()
    return None


def parse_ask(spec: str) -> tuple[float, str]:
    """``SECONDS:question`` as (seconds, question)."""
    head, sep, question = spec.partition(":")
    try:
        t = float(head)
    except ValueError:
        t = -1.0
    if not sep or t < 0 or not question.strip():
        raise ValueError(f"expected SECONDS:question with SECONDS >= 0, got {spec!r}")
    return t, question.strip()


class EventPrinter:
    """Prints a session's events as JSON lines or as text, and keeps the perception failures it saw."""

    def __init__(self, jsonl: bool) -> None:
        self.jsonl = jsonl
        self.failures: list[str] = []

    def __call__(self, event: Any) -> None:
        if event.type == "error" and event.code == "perception_failed":
            self.failures.append(event.message)  # frames from a file are valid: a perception failure is systemic
        line = watch_event(event)
        if line is None:
            return
        if self.jsonl:
            print(json.dumps(line), flush=True)
        elif line["type"] == "answer":
            label = "Q: " + line["question"] if line["kind"] == "question" else f"({line['kind']})"
            print(
                f"[{line['t']:7.1f}s] {label}\n           A: {line['answer'].strip()}\n"
                f"           (first token {line['ttft_s'] * 1000:.0f} ms, total {line['total_s'] * 1000:.0f} ms)",
                flush=True,
            )
        elif line["type"] == "trigger":
            print(f"[{line['t']:7.1f}s] trigger: {line['kind']} {line.get('instruction') or ''}".rstrip(), flush=True)
        else:
            print(f"[{line['t']:7.1f}s] {line['type']}: {line.get('message') or line.get('reason')}", flush=True)


def cmd_watch(args: argparse.Namespace) -> int:
    """Play ``args.video`` through one live session; print its events and a summary."""
    from pydantic import ValidationError

    from assistant.config import SessionOptions, format_validation_error
    from assistant.sources import SourceError, VideoFileSource

    speed = parse_speed(args.speed)
    try:
        questions = sorted((parse_ask(spec) for spec in args.ask), key=lambda q: q[0])
        options = SessionOptions(proactive=args.proactive, instructions=tuple(args.instruct))
    except ValidationError as exc:
        raise CliError(f"invalid options: {format_validation_error(exc)}") from None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    config = build_config(args)
    try:
        source = VideoFileSource(args.video, fps=config.perception.fps, pace=speed)
    except SourceError as exc:
        raise CliError(str(exc)) from None
    printer = EventPrinter(args.jsonl)
    with source:
        summary = asyncio.run(_watch(config, source, questions, options, printer))
    if args.jsonl:
        print(json.dumps({"summary": summary}), flush=True)
    else:
        print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return 0


async def _watch(
    config: Any, source: Any, questions: list[tuple[float, str]], options: Any, printer: EventPrinter
) -> dict[str, Any]:
    """Play ``source`` losslessly, asking each question once the stream reaches its time; returns the summary."""
    orchestrator = Runtime.load(config).orchestrator
    try:
        live = await orchestrator.create_session(options)
    except ValueError as exc:  # options the model cannot take (e.g. frames per step over its temporal patch)
        await orchestrator.shutdown()
        raise CliError(str(exc)) from None
    printing = asyncio.create_task(_print_events(live, printer))
    started = time.perf_counter()
    answers = []
    try:
        async with contextlib.aclosing(live.play(source, lossless=True)) as stamps:
            async for stamp in stamps:
                if printer.failures:
                    break
                while questions and stamp >= questions[0][0]:
                    t, question = questions.pop(0)
                    answers.append(live.ask(question, t)[1])
        await live.wait_idle()
        if printer.failures:
            raise CliError(f"perception failed: {printer.failures[0]}")
        answers += [live.ask(question, t)[1] for t, question in questions]
        await asyncio.gather(*answers, return_exceptions=True)
        await live.wait_idle()
        await orchestrator.engine.sync(live.session_id)
        summary = _summary(live, orchestrator.engine.session_stats(live.session_id))
    finally:
        await orchestrator.shutdown()
        await printing
    summary["seconds"] = round(time.perf_counter() - started, 3)
    summary["end"] = source.end.reason if source.end else None
    return summary


def _summary(live: Any, engine_stats: Any) -> dict[str, Any]:
    stats = live.session.stats()
    return {
        "frames": stats.frames,
        "steps": stats.steps,
        "tokens": stats.tokens_seen,
        "kept": stats.tokens_kept,
        "weighted_drop_ratio": round(stats.weighted_drop_ratio, 4),
        "memory_tokens": stats.memory_tokens,
        "memory_budget": stats.memory_budget,
        "archived_entries": stats.archived_entries,
        "kv_tokens": engine_stats.kv_tokens,
        "kv_bytes": engine_stats.kv_bytes,
        "frames_dropped": live.frames_dropped,
    }


async def _print_events(live: Any, show: EventPrinter) -> None:
    async for event in live.events.follow():
        show(event)
