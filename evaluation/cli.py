"""The ``eval`` command: benchmark statistics and official scoring (OVO-Bench, StreamingBench).

    vigil eval ovo stats --anno FILE
    vigil eval ovo score FILE_OR_DIR ... [--strict] [--json OUT]
    vigil eval streamingbench stats --anno FILE ... [--kind KIND]
    vigil eval streamingbench score FILE ... [--model NAME] [--strict] [--json OUT]
    vigil eval ovo make-videos --anno FILE --out DIR [--layout source|chunked|both]
    vigil eval ovo|streamingbench run --anno FILE ... --videos DIR --out DIR [--mode replay|live] [--layout L]
        [--tasks T,..] [--limit N] [--concurrency N] [--engine hf|vllm|remote] [--overwrite] ...

The run commands live in ``evaluation.run_cli``.

Problems with the input (missing file, not JSON, wrong format) print one line to stderr and return 2.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evaluation import layouts, ovo_bench, run_cli, streamingbench
from evaluation.bench_format import BenchmarkFormatError
from evaluation.run_cli import RunnerSetup, load_runtime

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
        except (BenchmarkFormatError, OSError, ValueError, run_cli.EngineFailure) as exc:
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


@_guarded
def _ovo_make_videos(args: argparse.Namespace) -> int:
    from evaluation.synthetic import write_ovo_videos

    items = ovo_bench.load_annotations(args.anno)
    written = write_ovo_videos(
        items,
        args.out,
        layout=args.layout,
        fps=args.fps,
        width=args.width,
        height=args.height,
        cut_every=args.cut_every,
    )
    print(f"wrote {written.sources} source video(s) and {written.clips} chunked clip(s) under {args.out}")
    return 0


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
    p = ovo.add_parser("make-videos", help="write generated test videos for an annotation, laid out as released")
    p.add_argument("--anno", required=True, help="annotation file (e.g. ovo_bench_new.json)")
    p.add_argument("--out", required=True, help="folder to write src_videos/ and chunked_videos/ into")
    p.add_argument("--layout", choices=["source", "chunked", "both"], default="both")
    p.add_argument("--fps", type=int, default=5, help="frame rate of the written videos")
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--height", type=int, default=120)
    p.add_argument("--cut-every", type=float, default=7.0, help="a hard cut every this many seconds")
    p.set_defaults(func=_ovo_make_videos)
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
        run_cli.add_run_args(
            p,
            layouts.OVO_LAYOUTS,
            "the benchmark's data folder: src_videos/ (or the annotation's paths) or chunked_videos/",
        )
        p.set_defaults(func=_guarded(run_cli.ovo_run(setup)))

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
        run_cli.add_run_args(
            p,
            layouts.STREAMINGBENCH_LAYOUTS,
            "the benchmark's src/data folder (videos/, videos/tmp/) or the released folders",
        )
        p.set_defaults(func=_guarded(run_cli.sb_run(setup)))
