"""The ``eval`` command: benchmark statistics and official scoring (OVO-Bench, StreamingBench).

    vigil eval ovo stats --anno FILE
    vigil eval ovo score FILE_OR_DIR ... [--strict] [--json OUT]
    vigil eval streamingbench stats --anno FILE ... [--kind KIND]
    vigil eval streamingbench score FILE ... [--model NAME] [--strict] [--json OUT]
    vigil eval ovo|streamingbench run --anno FILE ... --videos DIR --out DIR [--mode replay|live]

Problems with the input (missing file, not JSON, wrong format) print one line to stderr and return 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from evaluation import ovo_bench, streamingbench
from evaluation.bench_format import BenchmarkFormatError

if TYPE_CHECKING:
    from serving.cli.commands import Commands

Handler = Callable[[argparse.Namespace], int]


_NUMBER = re.compile(r"-?\d+(\.\d+)?(e-?\d+)?")


def _is_number(value: Any) -> bool:
    if value is None or isinstance(value, int | float):
        return True
    return isinstance(value, str) and (value == "" or _NUMBER.fullmatch(value) is not None)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Aligned columns: text left, numbers right; None prints as an empty cell."""
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    numeric = [all(_is_number(row[i]) for row in rows) for i in range(len(headers))]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _guarded(fn: Handler) -> Handler:
    """Turn input problems into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (BenchmarkFormatError, OSError, ValueError) as exc:
            message = " ".join(str(exc).split())
            print(f"vigil eval: error: {message}", file=sys.stderr)
            return 2

    return run


def _write_json(path: str, payload: dict[str, Any]) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)


def _pct(value: float | None) -> str:
    """Percent with two decimals, as the official OVO-Bench scorer prints."""
    return "" if value is None else f"{value:.2f}"


# ----------------------------------------------------------------------------------------------------
# OVO-Bench
# ----------------------------------------------------------------------------------------------------


@_guarded
def _ovo_stats(args: argparse.Namespace) -> int:
    items = ovo_bench.load_annotations(args.anno)
    st = ovo_bench.stats(items)
    rows: list[list[Any]] = []
    for cat in ovo_bench.CATEGORIES:
        for task, count in st.tasks.items():
            if ovo_bench.TASK_CATEGORY[task] == cat:
                rows.append([cat, task, count.items, count.queries])
        if cat in st.categories:
            rows.append([cat, "all", st.categories[cat].items, st.categories[cat].queries])
    rows.append(["total", "", st.total.items, st.total.queries])
    print(f"OVO-Bench annotation {args.anno}: {st.videos} videos, latest ask time {st.max_ask_time} s")
    print(format_table(["category", "task", "items", "queries"], rows))
    return 0


@_guarded
def _ovo_score(args: argparse.Namespace) -> int:
    results = ovo_bench.load_result_paths(args.paths)
    variant = "strict" if args.strict else "official"
    score = ovo_bench.score_results(results, variant=variant)
    label = "official scorer" if variant == "official" else "strict parse (not the official numbers)"
    print(f"OVO-Bench, {label}: {len(results.sources)} file(s), {results.query_count} scored queries")
    rows: list[list[Any]] = []
    for cat in ovo_bench.CATEGORIES:
        for t in score.category_tasks(cat):
            rows.append([cat, t.task, t.correct, t.total, _pct(t.accuracy)])
        if cat in score.categories:
            rows.append([cat, "avg", None, None, _pct(score.categories[cat])])
    print(format_table(["category", "task", "correct", "total", "acc"], rows))
    print(f"Total Avg. (mean of category scores): {_pct(score.total)}")
    print(f"Mean of all tasks (older paper total): {_pct(score.total_all_tasks)}")
    if args.json:
        _write_json(args.json, {**score.as_dict(), "sources": list(results.sources)})
    return 0


# ----------------------------------------------------------------------------------------------------
# StreamingBench
# ----------------------------------------------------------------------------------------------------


@_guarded
def _sb_stats(args: argparse.Namespace) -> int:
    questions: list[streamingbench.StreamingQuestion] = []
    for path in args.anno:
        questions.extend(streamingbench.load_questions(path, args.kind))
    st = streamingbench.stats(questions)
    by_type: dict[tuple[str, str], int] = {}
    for q in questions:
        by_type[(q.kind, q.task_type)] = by_type.get((q.kind, q.task_type), 0) + 1
    rows: list[list[Any]] = [[kind, task_type, n] for (kind, task_type), n in by_type.items()]
    rows.append(["total", "", st.questions])
    print(
        f"StreamingBench: {st.questions} questions in {st.segments} segments, {st.videos} videos, "
        f"latest ask time {st.max_ask_time} s"
    )
    print(format_table(["kind", "task type", "questions"], rows))
    return 0


@_guarded
def _sb_score(args: argparse.Namespace) -> int:
    results: list[streamingbench.StreamingResult] = []
    for path in args.paths:
        results.extend(streamingbench.load_results(path, args.model))
    variant = "strict" if args.strict else "official"
    score = streamingbench.score_results(results, variant=variant)
    label = "official counting" if variant == "official" else "strict parse (not the official numbers)"
    print(f"StreamingBench, {label}: {len(results)} results")
    if score.task_types:
        rows: list[list[Any]] = [
            [name, a.correct, a.total, a.unanswered, a.accuracy, _pct(100 * a.accuracy)]
            for name, a in score.task_types.items()
        ]
        rows += [
            [f"total ({kind})", a.correct, a.total, a.unanswered, a.accuracy, _pct(100 * a.accuracy)]
            for kind, a in score.kinds.items()
        ]
        print(format_table(["task type", "correct", "total", "unanswered", "accuracy", "%"], rows))
    for name, p in score.proactive.items():
        rows = [[name, p.total, p.time_correct, p.time_accuracy, p.answer_correct, p.answer_accuracy]]
        print(
            format_table(
                ["task type", "total", "time_correct", "time_accuracy", "answer_correct", "answer_accuracy"],
                rows,
            )
        )
        curve = ", ".join(f"<={tol:g}s {100 * share:.2f}%" for tol, share in p.curve().items())
        error = "n/a" if p.mean_abs_error_s is None else f"{p.mean_abs_error_s:.2f} s"
        print(f"timing within: {curve}; answered {p.answered}/{p.total}; mean |error| {error}")
    if args.json:
        _write_json(args.json, score.as_dict())
    return 0


# ----------------------------------------------------------------------------------------------------
# Registration
# ----------------------------------------------------------------------------------------------------


class EvalRuntime(NamedTuple):
    """What benchmark runs are given: the loaded model, the config and the engine factory bound to the model."""

    adapter: Any
    config: Any
    make_engine: Callable[[Any], Any]


RunnerSetup = Callable[[argparse.Namespace], EvalRuntime]
"""Loads the runtime from parsed options."""


def load_runtime(args: argparse.Namespace) -> EvalRuntime:
    """Model, config and engine factory for ``vigil eval ... run`` (SetupError when the model cannot be had)."""
    from serving.runtime import engine_factory, load_model, validated_config

    config = validated_config(
        model={"name": args.model, "device": args.device, "dtype": args.dtype},
        perception={"fps": args.fps},
        memory={"budget_tokens": args.budget, "archive": "none"},
        engine={"kind": args.engine, "max_new_tokens": args.max_new_tokens, "kv_cap_tokens": args.budget + 4096},
    )
    adapter = load_model(config)
    return EvalRuntime(adapter, config, engine_factory(adapter))


def _run_queries(args: argparse.Namespace, runtime: EvalRuntime, queries: list[Any], name: str) -> tuple[dict, Any]:
    from tqdm import tqdm

    from evaluation.runner import run

    adapter, config, make_engine = runtime
    with tqdm(total=len(queries), unit="query", desc=f"{name} {args.mode}", file=sys.stderr) as bar:
        answers, report = run(
            queries,
            adapter=adapter,
            config=config,
            make_engine=make_engine,
            mode=args.mode,
            out_dir=args.out,
            skip_missing=args.skip_missing,
            max_new_tokens=args.max_new_tokens,
            progress=bar.update,
        )
    print(
        f"{report.answered} answered now, {report.skipped_done} from an earlier run; "
        f"{len(report.missing_videos)} missing and {len(report.failed_videos)} failed video(s)"
    )
    print(
        f"prefilled tokens: {report.prefill_tokens}; {report.seconds:.1f} s for {report.video_seconds:.1f} s of "
        f"video ({report.seconds_per_video_minute:.1f} s per video minute; {report.stream_seconds:.1f} s played)"
    )
    return answers, report


def _limit(items: list[Any], n: int | None) -> list[Any]:
    return items if n is None else items[:n]


def _forward_polls(queries: list[Any], videos: str) -> list[tuple[Path, list[Any]]]:
    """Forward-task polls grouped per item, each with the probe its standing monitor watches with."""
    from evaluation.runner import ForwardPoll

    grouped: dict[int, tuple[Path, list[Any]]] = {}
    for q in queries:
        item = q.item
        if isinstance(item, ovo_bench.RecItem):
            poll = ForwardPoll(q.key, q.ask_time, f"Is the person {item.activity} right now?", "count")
        elif isinstance(item, ovo_bench.SsrItem):
            step = item.polls[q.poll_index].step
            poll = ForwardPoll(q.key, q.ask_time, f"Is the person currently performing this step: {step}?", "active")
        else:
            probe = f"Do the frames so far give enough information to answer: {item.question}?"
            poll = ForwardPoll(q.key, q.ask_time, probe, "fired")
        grouped.setdefault(item.id, (q.video_path(videos), []))[1].append(poll)
    return list(grouped.values())


def _ovo_run(setup: RunnerSetup) -> Handler:
    @_guarded
    def run_ovo(args: argparse.Namespace) -> int:
        import asyncio

        from evaluation.runner import RunQuery, run_forward_native

        items = _limit(ovo_bench.load_annotations(args.anno), args.limit)
        queries = ovo_bench.expand_queries(items)
        native = [q for q in queries if q.poll_index is not None] if args.forward == "native" else []
        asked = [q for q in queries if q not in native]
        runtime = setup(args)  # the model is loaded once for both parts
        runs = [RunQuery(q.key, q.video_path(args.videos), q.ask_time, q.prompt) for q in asked]
        answers, report = _run_queries(args, runtime, runs, "ovo")
        if native:
            adapter, config, make_engine = runtime
            native_answers, native_report = asyncio.run(
                run_forward_native(
                    _forward_polls(native, args.videos),
                    adapter=adapter,
                    config=config,
                    make_engine=make_engine,
                    out_dir=args.out,
                    skip_missing=args.skip_missing,
                )
            )
            answers.update(native_answers)
            report.prefill_tokens += native_report.prefill_tokens
            print(
                f"forward tasks (native): {native_report.answered} polls read from the decision module, "
                f"{native_report.skipped_done} from an earlier run"
            )
        answered = [(q, answers[q.key]) for q in queries if q.key in answers]
        path = ovo_bench.write_official(Path(args.out) / f"vigil_ovo_{args.mode}.json", answered)
        score = ovo_bench.score_results(ovo_bench.load_results(path))
        print(f"wrote {path}; Total Avg. (mean of category scores): {_pct(score.total)}")
        _write_json(
            str(Path(args.out) / f"report_{args.mode}.json"), {**dataclasses.asdict(report), "scores": score.as_dict()}
        )
        return 0

    return run_ovo


def _sb_run(setup: RunnerSetup) -> Handler:
    @_guarded
    def run_sb(args: argparse.Namespace) -> int:
        from evaluation.runner import RunQuery

        questions = [q for path in args.anno for q in streamingbench.load_questions(path, args.kind)]
        proactive = _limit([q for q in questions if q.is_proactive], args.limit)
        questions = _limit([q for q in questions if not q.is_proactive], args.limit)
        runtime = setup(args)  # the model is loaded once for both parts
        earlier: dict[str, list[Any]] = {}
        runs = []
        for q in sorted(questions, key=lambda q: (q.video_path, q.ask_time)):
            previous = earlier.setdefault(q.video_path, [])
            runs.append(RunQuery(q.key, Path(args.videos) / q.video_path, q.ask_time, q.prompt(previous)))
            previous.append(q)
        answers, report = _run_queries(args, runtime, runs, "streamingbench")
        records = [streamingbench.result_record(q, answers[q.key]) for q in questions if q.key in answers]
        records += _sb_proactive(args, runtime, proactive)
        path = streamingbench.write_results(Path(args.out) / f"vigil_streamingbench_{args.mode}.jsonl", records)
        score = streamingbench.score_results(streamingbench.load_results(path))
        overall = ", ".join(f"{kind} {_pct(a.accuracy)}" for kind, a in score.kinds.items())
        print(f"wrote {path}; accuracy: {overall or 'none'}")
        _write_json(
            str(Path(args.out) / f"report_{args.mode}.json"), {**dataclasses.asdict(report), "scores": score.as_dict()}
        )
        return 0

    return run_sb


def _sb_proactive(args: argparse.Namespace, runtime: EvalRuntime, questions: list[Any]) -> list[dict]:
    """Proactive Output in native mode: the decision module decides when to answer (scored with the same rule)."""
    import asyncio

    from evaluation.runner import ProactiveQuery, run_proactive

    if not questions:
        return []
    adapter, config, make_engine = runtime
    runs = [
        ProactiveQuery(
            q.key,
            Path(args.videos) / q.video_path,
            q.ask_time,
            q.ground_truth_time + 10.0,
            q.question,
            streamingbench.proactive_poll_prompt(q),
            streamingbench.proactive_answer_prompt(q),
        )
        for q in questions
    ]
    results, report = asyncio.run(
        run_proactive(
            runs,
            adapter=adapter,
            config=config,
            make_engine=make_engine,
            skip_missing=args.skip_missing,
            max_new_tokens=args.max_new_tokens,
        )
    )
    print(
        f"proactive (native): {report.answered} of {len(runs)} played, "
        f"{sum(t is not None for _, t in results.values())} answered by the decision module"
    )
    return [streamingbench.result_record(q, *results[q.key]) for q in questions if q.key in results]


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--videos", required=True, help="folder the annotation's video paths are relative to")
    p.add_argument(
        "--mode",
        choices=["replay", "live"],
        default="live",
        help="replay: a fresh session per question; live: one pass per video, memory reused",
    )
    p.add_argument("--out", required=True, help="output folder (answers.jsonl makes runs resumable)")
    p.add_argument("--skip-missing", action="store_true", help="report and skip missing videos")
    p.add_argument("--limit", type=int, default=None, help="only the first N items")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--model", default="tiny", help="Hugging Face id, local checkpoint, or tiny")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--fps", type=float, default=1.0, help="frames sampled per second")
    p.add_argument("--engine", choices=["hf"], default="hf")
    p.add_argument("--budget", type=int, default=8192, help="memory budget in visual tokens")


def register(commands: Commands, setup: RunnerSetup | None = load_runtime) -> None:
    """Add the ``eval`` command: statistics, official scoring, and runs when ``setup`` provides a model."""
    ev = commands.add("eval", help="benchmark statistics and official scoring")
    benches = ev.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")

    ovo = benches.add_parser("ovo", help="OVO-Bench").add_subparsers(dest="action", required=True)
    p = ovo.add_parser("stats", help="items and scored queries per task and category")
    p.add_argument("--anno", required=True, help="annotation file (e.g. ovo_bench_new.json)")
    p.set_defaults(func=_ovo_stats)
    p = ovo.add_parser("score", help="score official-format result files as the benchmark's scorer does")
    p.add_argument("paths", nargs="+", metavar="FILE_OR_DIR", help="result files, or folders of them (merged)")
    p.add_argument("--strict", action="store_true", help="strict answer parsing (labelled, not official)")
    p.add_argument("--json", metavar="OUT", help="also write the scores as JSON")
    p.set_defaults(func=_ovo_score)
    if setup is not None:
        p = ovo.add_parser("run", help="answer every query through Vigil sessions; official result format")
        p.add_argument("--anno", required=True, help="annotation file (ovo_bench_new.json)")
        p.add_argument(
            "--forward",
            choices=["asked", "native"],
            default="asked",
            help="forward tasks: asked as the benchmark's polls, or native (standing monitors fire by "
            "themselves; each poll reads their record)",
        )
        _add_run_args(p)
        p.set_defaults(func=_ovo_run(setup))

    sb = benches.add_parser("streamingbench", help="StreamingBench").add_subparsers(dest="action", required=True)
    p = sb.add_parser("stats", help="questions per kind and task type")
    p.add_argument("--anno", required=True, nargs="+", metavar="FILE", help="questions_*.json files")
    p.add_argument("--kind", choices=streamingbench.KINDS, help="file kind when the name does not say it")
    p.set_defaults(func=_sb_stats)
    p = sb.add_parser("score", help="letter accuracy and proactive timing, as the official counter does")
    p.add_argument("paths", nargs="+", metavar="FILE", help="results (JSON lines) or benchmark output files")
    p.add_argument("--model", help="model name the replies are stored under, for benchmark output files")
    p.add_argument("--strict", action="store_true", help="strict answer parsing (labelled, not official)")
    p.add_argument("--json", metavar="OUT", help="also write the scores as JSON")
    p.set_defaults(func=_sb_score)
    if setup is not None:
        p = sb.add_parser("run", help="answer the multiple-choice questions through Vigil sessions")
        p.add_argument("--anno", required=True, nargs="+", metavar="FILE", help="questions_*.json files")
        p.add_argument("--kind", choices=streamingbench.KINDS, help="file kind when the name does not say it")
        _add_run_args(p)
        p.set_defaults(func=_sb_run(setup))
