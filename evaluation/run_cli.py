"""``vigil eval ovo|streamingbench run``: answer a benchmark through Vigil sessions, resumably, and score it.

Before any model loads: the annotation is read and filtered (``--tasks``, ``--limit``), every query's video is
found in the benchmark's layout (``--layout``, ``evaluation.layouts``), and the output folder's manifest is checked
(``evaluation.manifest``). A run that can answer nothing stops there with exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from evaluation import layouts, manifest, ovo_bench, streamingbench
from evaluation.run_report import Progress, RunReport

ANSWERED_NOTHING = 1
"""Exit code of a run whose videos all failed: nothing was answered."""


class EngineFailure(RuntimeError):
    """The engine failed during a run (a replica rejected or dropped requests, vLLM did not start)."""


class EvalRuntime(NamedTuple):
    """What benchmark runs are given: the loaded model, the config and the engine factory bound to the model."""

    adapter: Any
    config: Any
    make_engine: Callable[[Any], Any]


RunnerSetup = Callable[[argparse.Namespace], EvalRuntime]
"""Loads the runtime from parsed options."""


def run_config(args: argparse.Namespace) -> Any:
    """The validated config of a run's options (SetupError naming every invalid one)."""
    from serving.cli.options import build_config

    return build_config(args)


def load_runtime(args: argparse.Namespace) -> EvalRuntime:
    """Model, config and engine factory for ``vigil eval ... run`` (SetupError when the model cannot be had)."""
    from serving.runtime import engine_factory, load_model

    config = run_config(args)
    adapter = load_model(config)
    return EvalRuntime(adapter, config, engine_factory(adapter))


class BarProgress(Progress):
    """Progress drawn as a tqdm bar over the work of this run only (reused answers are not counted)."""

    def __init__(self, desc: str) -> None:
        super().__init__()
        self.desc = desc
        self.bar: Any = None

    def start(self, total: int) -> None:
        from tqdm import tqdm

        super().start(total)
        if self.bar is None:
            self.bar = tqdm(total=self.total, unit="query", desc=self.desc, file=sys.stderr)
        else:  # a later part of the run (native polls, proactive instructions)
            self.bar.total = self.total
            self.bar.refresh()

    def advance(self, n: int = 1) -> None:
        super().advance(n)
        self.bar.update(n)

    def discount(self, n: int) -> None:
        super().discount(n)
        self.bar.total = self.total
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------------------------------
# Selection and planning (no model needed)
# ----------------------------------------------------------------------------------------------------


def parse_tasks(text: str | None, known: dict[str, set[str]]) -> set[str] | None:
    """``--tasks``: comma-separated names (case-insensitive) of ``known`` groups; None selects everything."""
    if not text:
        return None
    lookup = {name.lower(): members for name, members in known.items()}
    chosen: set[str] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.lower() not in lookup:
            raise ValueError(f"--tasks: unknown task {part!r}; expected some of {', '.join(known)}")
        chosen |= lookup[part.lower()]
    if not chosen:
        raise ValueError("--tasks names no task")
    return chosen


def limited(items: list[Any], n: int | None) -> list[Any]:
    """The first ``n`` items (``--limit``; all when None)."""
    if n is not None and n < 1:
        raise ValueError(f"--limit must be at least 1, got {n}")
    return items if n is None else items[:n]


def check_videos(res: layouts.Resolution, args: argparse.Namespace, names: Sequence[str]) -> None:
    """Stop before the model loads when no video was found, or some are missing without ``--skip-missing``."""
    if not res.found:
        raise FileNotFoundError(
            layouts.nothing_found_message(res, args.videos, [res.layout] if args.layout != "auto" else names)
        )
    if res.missing and not args.skip_missing:
        raise FileNotFoundError(f"{res.describe_missing()} (use --skip-missing to go on without them)")
    if res.missing:
        print(f"vigil eval: skipping {len(res.missing)} queries: {res.describe_missing()}", file=sys.stderr)


def prepare(
    args: argparse.Namespace, *, benchmark: str, layout: str, outputs: Sequence[str], extra: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """The run's config and manifest, with the output folder checked (``--overwrite`` clears both modes' outputs)."""
    if args.concurrency < 1:
        raise ValueError(f"--concurrency must be at least 1, got {args.concurrency}")
    config = run_config(args)
    annotations = args.anno if isinstance(args.anno, list) else [args.anno]
    made = manifest.build_manifest(
        benchmark=benchmark,
        annotations=annotations,
        videos=args.videos,
        layout=layout,
        mode=args.mode,
        config=config,
        model=manifest.model_fingerprint(config.model.name),
        extra=extra,
        run={"tasks": args.tasks, "limit": args.limit, "concurrency": args.concurrency},
    )
    stale = [name.replace(args.mode, other) for name in outputs for other in ("live", "replay")]
    if manifest.prepare_out_dir(args.out, made, overwrite=args.overwrite, outputs=stale):
        print(f"vigil eval: resuming the run in {args.out} (same settings)", file=sys.stderr)
    return config, manifest.read_manifest(args.out)


@contextlib.asynccontextmanager
async def shared_engine(runtime: EvalRuntime) -> AsyncIterator[Any]:
    """The one engine every part of a run answers on (built on this event loop, shut down at the end)."""
    engine = runtime.make_engine(runtime.config.engine)
    try:
        yield engine
    finally:
        await engine.shutdown()


def merge_report(report: RunReport, part: RunReport) -> None:
    """Add a later part's counts and costs to the run's report (its wall time is measured over all parts)."""
    report.queries += part.queries
    report.answered += part.answered
    report.skipped_done += part.skipped_done
    report.prefill_tokens += part.prefill_tokens
    report.stream_seconds += part.stream_seconds
    report.video_seconds += part.video_seconds
    report.failed_videos += part.failed_videos
    report.missing_videos = sorted(set(report.missing_videos) | set(part.missing_videos))


def kept_answers(args: argparse.Namespace, keys: Sequence[str]) -> RunReport | None:
    """The report of a run whose every query was answered earlier (no model needed); None when work is left."""
    from evaluation.runner import answered_keys

    if not keys or not set(keys) <= answered_keys(args.out):
        return None
    print(
        f"vigil eval: all {len(keys)} queries were answered in an earlier run; "
        "writing the results from those answers (no model loaded)",
        file=sys.stderr,
    )
    return RunReport(args.mode, queries=len(keys), skipped_done=len(keys), concurrency=args.concurrency)


def answer_all(
    args: argparse.Namespace,
    setup: RunnerSetup,
    keys: Sequence[str],
    name: str,
    parts: Callable[[EvalRuntime, Any, Progress], Any],
) -> RunReport:
    """The run's report: from the kept answers when nothing is left, else the model is loaded once and ``parts``
    (a coroutine function of runtime, engine and progress returning the report) answer on one engine."""
    report = kept_answers(args, keys)
    if report is not None:
        return report
    runtime = setup(args)  # the model is loaded once for every part
    bar = BarProgress(f"{name} {args.mode}")

    async def run() -> RunReport:
        async with shared_engine(runtime) as engine:
            started = time.perf_counter()  # the engine's start is not the run's cost
            report = await parts(runtime, engine, bar)
            report.seconds = time.perf_counter() - started
            return report

    from assistant.reaction import EngineError

    try:
        return asyncio.run(run())
    except EngineError as exc:
        raise EngineFailure(
            f"the {runtime.config.engine.kind} engine failed: {exc}; the answers so far are kept in "
            f"{Path(args.out) / manifest.ANSWERS} (rerun to resume)"
        ) from None
    finally:
        bar.close()


def finish_report(report: RunReport, missing: Sequence[str]) -> None:
    """Count the queries skipped for missing videos and print the report."""
    report.queries += len(missing)
    report.missing_videos = sorted(set(report.missing_videos) | set(missing))
    print_report(report)


def print_report(report: RunReport) -> None:
    """The run's counts and its cost per video minute and per query."""
    print(
        f"{report.answered} answered now, {report.skipped_done} from an earlier run; "
        f"{len(report.missing_videos)} missing and {len(report.failed_videos)} failed video(s)"
    )
    if report.answered:
        print(
            f"prefilled tokens: {report.prefill_tokens}; {report.seconds:.1f} s for {report.video_seconds:.1f} s "
            f"of video, {report.concurrency} at once: {report.seconds_per_video_minute:.2f} s per video minute, "
            f"{report.seconds_per_query:.2f} s per query ({report.stream_seconds:.1f} s played)"
        )


def answered_nothing(report: RunReport) -> bool:
    """True when the run has no answer at all, now or from before (every video failed)."""
    if report.answered or report.skipped_done:
        return False
    print(
        f"vigil eval: error: no query was answered ({len(report.failed_videos)} video(s) failed to decode); "
        "nothing to score",
        file=sys.stderr,
    )
    return True


def add_run_args(p: argparse.ArgumentParser, layout_names: Sequence[str], videos_help: str) -> None:
    """The options of a benchmark run: videos and layout, output, selection, model, perception, memory, engine."""
    from serving.cli.options import add_memory_args, add_model_args, add_perception_args

    p.add_argument("--videos", required=True, help=videos_help)
    p.add_argument(
        "--layout",
        choices=["auto", *layout_names],
        default="auto",
        help="how the videos are laid out (default: the layout that finds the most)",
    )
    p.add_argument(
        "--mode",
        choices=["replay", "live"],
        default="live",
        help="replay: a fresh session per question; live: one pass per video, memory reused",
    )
    p.add_argument("--out", required=True, help="output folder (answers.jsonl and manifest.json make runs resumable)")
    p.add_argument("--overwrite", action="store_true", help="discard the answers of an earlier run in --out")
    p.add_argument("--skip-missing", action="store_true", help="report and skip queries whose video is missing")
    p.add_argument("--tasks", default=None, help="comma-separated tasks or categories to run (default: all)")
    p.add_argument("--limit", type=int, default=None, help="only the first N items (after --tasks)")
    p.add_argument(
        "--concurrency", type=int, default=1, help="videos (live) or questions (replay) played at once on one engine"
    )
    add_model_args(p)
    add_perception_args(p)
    add_memory_args(p)
    p.set_defaults(max_new_tokens=32, archive="none")


def ovo_task_groups() -> dict[str, set[str]]:
    """OVO-Bench ``--tasks`` names: each task, and each category for its tasks."""
    groups = {task: {task} for task in ovo_bench.TASK_CATEGORY}
    for cat in ovo_bench.CATEGORIES:
        groups[cat] = {t for t, c in ovo_bench.TASK_CATEGORY.items() if c == cat}
    return groups


def streamingbench_task_groups(questions: Sequence[Any]) -> dict[str, set[str]]:
    """StreamingBench ``--tasks`` names: each task type of the files, and each kind for its task types."""
    groups: dict[str, set[str]] = {}
    for q in questions:
        groups.setdefault(q.task_type, set()).add(q.task_type)
    for q in questions:
        groups.setdefault(q.kind, set()).add(q.task_type)
    return groups


def sb_questions(args: argparse.Namespace) -> list[Any]:
    """The StreamingBench questions of the run, filtered by ``--tasks``."""
    questions = [q for path in args.anno for q in streamingbench.load_questions(path, args.kind)]
    chosen = parse_tasks(args.tasks, streamingbench_task_groups(questions))
    return [q for q in questions if chosen is None or q.task_type in chosen]


def found_path(res: layouts.Resolution, key: str) -> Path:
    """The resolved file of a query key."""
    return res.found[key].path


# ----------------------------------------------------------------------------------------------------
# OVO-Bench
# ----------------------------------------------------------------------------------------------------


def _forward_polls(queries: list[Any], res: layouts.Resolution) -> list[tuple[Path, list[Any], bool]]:
    """Forward-task polls grouped per item with the probe its standing monitors watch with, and the file to play.

    In the chunked layout an item plays the clip of its latest poll (each poll's clip is a prefix of it).
    """
    from evaluation.native import ForwardPoll

    grouped: dict[int, tuple[list[Any], list[Any]]] = {}
    for q in queries:
        if q.key not in res.found:
            continue
        item = q.item
        if isinstance(item, ovo_bench.RecItem):
            poll = ForwardPoll(q.key, q.ask_time, f"Is the person {item.activity} right now?", "count")
        elif isinstance(item, ovo_bench.SsrItem):
            step = item.polls[q.poll_index].step
            poll = ForwardPoll(q.key, q.ask_time, f"Is the person currently performing this step: {step}?", "active")
        else:
            probe = f"Do the frames so far give enough information to answer: {item.question}?"
            poll = ForwardPoll(q.key, q.ask_time, probe, "fired")
        queries_, polls = grouped.setdefault(item.id, ([], []))
        queries_.append(q)
        polls.append(poll)
    out = []
    for queries_, polls in grouped.values():
        last = max(queries_, key=lambda q: q.realtime)
        ref = res.found[last.key]
        out.append((ref.path, polls, ref.clip))
    return out


def _ovo_plan(args: argparse.Namespace) -> tuple[list[Any], list[Any], layouts.Resolution]:
    """The run's queries (asked, and read natively), their videos found: everything before the model."""
    chosen = parse_tasks(args.tasks, ovo_task_groups())
    items = [it for it in ovo_bench.load_annotations(args.anno) if chosen is None or it.task in chosen]
    if not items:
        raise ValueError(f"{args.anno}: no item of the chosen tasks ({args.tasks})")
    queries = ovo_bench.expand_queries(limited(items, args.limit))
    res = layouts.resolve_ovo(queries, args.videos, args.layout)
    check_videos(res, args, layouts.OVO_LAYOUTS)
    native = [q for q in queries if q.poll_index is not None] if args.forward == "native" else []
    asked = [q for q in queries if q not in native]
    return asked, native, res


def _ovo_runs(asked: list[Any], res: layouts.Resolution) -> list[Any]:
    from evaluation.runner import RunQuery

    runs = []
    for q in asked:
        ref = res.found.get(q.key)
        if ref is not None:
            clip_end = q.realtime if ref.clip else None
            runs.append(RunQuery(q.key, ref.path, q.ask_time, q.prompt, source=ref.source, clip_end=clip_end))
    return runs


def _ovo_parts(args: argparse.Namespace, runs: list[Any], items: list[Any]) -> Callable[..., Any]:
    """The OVO-Bench run on one engine: the asked queries, then the forward items read natively."""

    async def parts(runtime: EvalRuntime, engine: Any, bar: Progress) -> RunReport:
        from evaluation.native import run_forward_native
        from evaluation.runner import run_queries

        common = {"adapter": runtime.adapter, "config": runtime.config, "engine": engine, "out_dir": args.out}
        _, report = await run_queries(
            runs,
            **common,
            mode=args.mode,
            skip_missing=args.skip_missing,
            max_new_tokens=runtime.config.engine.max_new_tokens,
            concurrency=args.concurrency,
            progress=bar,
        )
        if items:
            _, native = await run_forward_native(
                items, **common, skip_missing=True, concurrency=args.concurrency, progress=bar
            )
            merge_report(report, native)
            print(
                f"forward tasks (native): {native.answered} polls read from the decision module, "
                f"{native.skipped_done} from an earlier run"
            )
        return report

    return parts


def ovo_run(setup: RunnerSetup) -> Callable[[argparse.Namespace], int]:
    """The ``eval ovo run`` handler over a runtime loader."""

    def run_ovo(args: argparse.Namespace) -> int:
        import json

        from evaluation.runner import AnswerLog

        asked, native, res = _ovo_plan(args)
        outputs = [f"vigil_ovo_{args.mode}.json", f"report_{args.mode}.json"]
        _, made = prepare(args, benchmark="ovo", layout=res.layout, outputs=outputs, extra={"forward": args.forward})
        runs, items = _ovo_runs(asked, res), _forward_polls(native, res)
        keys = [r.key for r in runs] + [poll.key for _, polls, _ in items for poll in polls]
        report = answer_all(args, setup, keys, "ovo", _ovo_parts(args, runs, items))
        finish_report(report, [str(res.missing[q.key]) for q in asked if q.key in res.missing])
        if answered_nothing(report):
            return ANSWERED_NOTHING
        answers = AnswerLog(Path(args.out) / manifest.ANSWERS).answers
        answered = [(q, answers[q.key]) for q in [*asked, *native] if q.key in answers]
        path = ovo_bench.write_official(Path(args.out) / outputs[0], answered)
        score = ovo_bench.score_results(ovo_bench.load_results(path))
        total = "n/a" if score.total is None else f"{score.total:.2f}"
        print(f"wrote {path}; Total Avg. (mean of category scores): {total}")
        doc = {**report.as_dict(), "layout": res.layout, "scores": score.as_dict(), "manifest": made}
        (Path(args.out) / outputs[1]).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {Path(args.out) / outputs[1]}", file=sys.stderr)
        return 0

    return run_ovo


# ----------------------------------------------------------------------------------------------------
# StreamingBench
# ----------------------------------------------------------------------------------------------------


def _sb_runs(questions: list[Any], res: layouts.Resolution) -> list[Any]:
    """Multiple-choice runs in (video, time) order; sqa prompts carry the earlier questions of their video."""
    from evaluation.runner import RunQuery

    earlier: dict[str, list[Any]] = {}
    runs = []
    for q in sorted(questions, key=lambda q: (q.video_path, q.ask_time)):
        previous = earlier.setdefault(q.video_path, [])
        ref = res.found.get(q.key)
        if ref is not None:
            clip_end = float(q.ask_time) if ref.clip else None
            runs.append(RunQuery(q.key, ref.path, q.ask_time, q.prompt(previous), source=ref.source, clip_end=clip_end))
        previous.append(q)
    return runs


def _sb_proactive_runs(questions: list[Any], res: layouts.Resolution) -> list[Any]:
    """Proactive Output in native mode: the decision module decides when to answer (scored with the same rule)."""
    from evaluation.native import ProactiveQuery

    return [
        ProactiveQuery(
            q.key,
            found_path(res, q.key),
            q.ask_time,
            q.ground_truth_time + 10.0,
            q.question,
            streamingbench.proactive_poll_prompt(q),
            streamingbench.proactive_answer_prompt(q),
        )
        for q in questions
        if q.key in res.found
    ]


def _sb_parts(args: argparse.Namespace, runs: list[Any], proactive: list[Any]) -> Callable[..., Any]:
    """The StreamingBench run on one engine: the multiple-choice questions, then the proactive instructions."""

    async def parts(runtime: EvalRuntime, engine: Any, bar: Progress) -> RunReport:
        from evaluation.native import run_proactive
        from evaluation.runner import run_queries

        common = {
            "adapter": runtime.adapter,
            "config": runtime.config,
            "engine": engine,
            "out_dir": args.out,
            "max_new_tokens": runtime.config.engine.max_new_tokens,
            "concurrency": args.concurrency,
            "progress": bar,
        }
        _, report = await run_queries(runs, **common, mode=args.mode, skip_missing=args.skip_missing)
        if proactive:
            results, part = await run_proactive(proactive, **common, skip_missing=True)
            merge_report(report, part)
            fired = sum(results[q.key][1] is not None for q in proactive if q.key in results)
            print(
                f"proactive (native): {part.answered} of {len(proactive)} played now, {part.skipped_done} kept; "
                f"{fired} answered by the decision module"
            )
        return report

    return parts


def sb_run(setup: RunnerSetup) -> Callable[[argparse.Namespace], int]:
    """The ``eval streamingbench run`` handler over a runtime loader."""

    def run_sb(args: argparse.Namespace) -> int:
        import json

        from evaluation.runner import AnswerLog

        questions = sb_questions(args)
        proactive = limited([q for q in questions if q.is_proactive], args.limit) if questions else []
        questions = limited([q for q in questions if not q.is_proactive], args.limit) if questions else []
        if not questions and not proactive:
            raise ValueError(f"no question of the chosen tasks ({args.tasks}) in {', '.join(args.anno)}")
        res = layouts.resolve_streamingbench([*questions, *proactive], args.videos, args.layout)
        check_videos(res, args, layouts.STREAMINGBENCH_LAYOUTS)
        outputs = [f"vigil_streamingbench_{args.mode}.jsonl", f"report_{args.mode}.json"]
        _, made = prepare(args, benchmark="streamingbench", layout=res.layout, outputs=outputs, extra={})
        runs, proactive_runs = _sb_runs(questions, res), _sb_proactive_runs(proactive, res)
        keys = [r.key for r in runs] + [r.key for r in proactive_runs]
        report = answer_all(args, setup, keys, "streamingbench", _sb_parts(args, runs, proactive_runs))
        finish_report(report, [str(res.missing[q.key]) for q in questions if q.key in res.missing])
        if answered_nothing(report):
            return ANSWERED_NOTHING
        log_ = AnswerLog(Path(args.out) / manifest.ANSWERS)
        records = [
            streamingbench.result_record(q, log_.answers[q.key], log_.extras[q.key].get("time"))
            if q.is_proactive
            else streamingbench.result_record(q, log_.answers[q.key])
            for q in [*questions, *proactive]
            if q.key in log_.answers
        ]
        path = streamingbench.write_results(Path(args.out) / outputs[0], records)
        score = streamingbench.score_results(streamingbench.load_results(path))
        overall = ", ".join(f"{kind} {100 * a.accuracy:.2f}" for kind, a in score.kinds.items())
        print(f"wrote {path}; accuracy: {overall or 'none'}")
        doc = {**report.as_dict(), "layout": res.layout, "scores": score.as_dict(), "manifest": made}
        (Path(args.out) / outputs[1]).write_text(json.dumps(doc, indent=2) + "\n")
        return 0

    return run_sb
