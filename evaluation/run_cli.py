"""``vigil eval ovo|streamingbench run``: answer a benchmark through Vigil sessions, resumably, and score it.

Before any model loads: the annotation is read and filtered (``--tasks``, ``--limit``), every query's video is
found in the benchmark's layout (``--layout``, ``evaluation.layouts``), and the output folder's manifest is checked
(``evaluation.manifest``). A run that can answer nothing stops there with exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from evaluation import layouts, manifest, ovo_bench, streamingbench
from evaluation.run_report import Progress, RunReport

ANSWERED_NOTHING = 1
"""Exit code of a run whose videos all failed: nothing was answered."""


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
        self.bar = tqdm(total=total, unit="query", desc=self.desc, file=sys.stderr)

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


def run_and_report(
    args: argparse.Namespace, runtime: EvalRuntime, queries: list[Any], name: str, missing: list[str]
) -> tuple[dict[str, str], RunReport]:
    """Answer ``queries`` with a progress bar of this run's work; print what it did and what it cost."""
    import asyncio

    from evaluation.runner import run_queries

    adapter, config, make_engine = runtime
    bar = BarProgress(f"{name} {args.mode}")
    try:
        answers, report = asyncio.run(
            run_queries(
                queries,
                adapter=adapter,
                config=config,
                make_engine=make_engine,
                mode=args.mode,
                out_dir=args.out,
                skip_missing=args.skip_missing,
                max_new_tokens=config.engine.max_new_tokens,
                concurrency=args.concurrency,
                progress=bar,
            )
        )
    finally:
        bar.close()
    report.queries += len(missing)
    report.missing_videos = sorted(set(report.missing_videos) | set(missing))
    print_report(report)
    return answers, report


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
    from evaluation.runner import ForwardPoll

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


def ovo_run(setup: RunnerSetup) -> Callable[[argparse.Namespace], int]:
    """The ``eval ovo run`` handler over a runtime loader."""

    def run_ovo(args: argparse.Namespace) -> int:
        import asyncio
        import json

        from evaluation.runner import run_forward_native

        asked, native, res = _ovo_plan(args)
        outputs = [f"vigil_ovo_{args.mode}.json", f"report_{args.mode}.json"]
        _, made = prepare(args, benchmark="ovo", layout=res.layout, outputs=outputs, extra={"forward": args.forward})
        runtime = setup(args)  # the model is loaded once for both parts
        missing = [str(res.missing[q.key]) for q in asked if q.key in res.missing]
        answers, report = run_and_report(args, runtime, _ovo_runs(asked, res), "ovo", missing)
        if native:
            adapter, config, make_engine = runtime
            native_answers, native_report = asyncio.run(
                run_forward_native(
                    _forward_polls(native, res),
                    adapter=adapter,
                    config=config,
                    make_engine=make_engine,
                    out_dir=args.out,
                    skip_missing=True,
                )
            )
            answers.update(native_answers)
            report.answered += native_report.answered
            report.skipped_done += native_report.skipped_done
            report.prefill_tokens += native_report.prefill_tokens
            print(
                f"forward tasks (native): {native_report.answered} polls read from the decision module, "
                f"{native_report.skipped_done} from an earlier run"
            )
        if answered_nothing(report):
            return ANSWERED_NOTHING
        queries = [*asked, *native]
        answered = [(q, answers[q.key]) for q in queries if q.key in answers]
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


def sb_run(setup: RunnerSetup) -> Callable[[argparse.Namespace], int]:
    """The ``eval streamingbench run`` handler over a runtime loader."""

    def run_sb(args: argparse.Namespace) -> int:
        import json

        questions = sb_questions(args)
        proactive = limited([q for q in questions if q.is_proactive], args.limit) if questions else []
        questions = limited([q for q in questions if not q.is_proactive], args.limit) if questions else []
        if not questions and not proactive:
            raise ValueError(f"no question of the chosen tasks ({args.tasks}) in {', '.join(args.anno)}")
        res = layouts.resolve_streamingbench([*questions, *proactive], args.videos, args.layout)
        check_videos(res, args, layouts.STREAMINGBENCH_LAYOUTS)
        outputs = [f"vigil_streamingbench_{args.mode}.jsonl", f"report_{args.mode}.json"]
        _, made = prepare(args, benchmark="streamingbench", layout=res.layout, outputs=outputs, extra={})
        runtime = setup(args)  # the model is loaded once for both parts
        missing = [str(res.missing[q.key]) for q in questions if q.key in res.missing]
        answers, report = run_and_report(args, runtime, _sb_runs(questions, res), "streamingbench", missing)
        records = [streamingbench.result_record(q, answers[q.key]) for q in questions if q.key in answers]
        played = _sb_proactive(args, runtime, [q for q in proactive if q.key in res.found], res)
        records += played
        report.answered += len(played)
        if answered_nothing(report):
            return ANSWERED_NOTHING
        path = streamingbench.write_results(Path(args.out) / outputs[0], records)
        score = streamingbench.score_results(streamingbench.load_results(path))
        overall = ", ".join(f"{kind} {100 * a.accuracy:.2f}" for kind, a in score.kinds.items())
        print(f"wrote {path}; accuracy: {overall or 'none'}")
        doc = {**report.as_dict(), "layout": res.layout, "scores": score.as_dict(), "manifest": made}
        (Path(args.out) / outputs[1]).write_text(json.dumps(doc, indent=2) + "\n")
        return 0

    return run_sb


def _sb_proactive(
    args: argparse.Namespace, runtime: EvalRuntime, questions: list[Any], res: layouts.Resolution
) -> list[dict]:
    """Proactive Output in native mode: the decision module decides when to answer (scored with the same rule)."""
    import asyncio

    from evaluation.runner import ProactiveQuery, run_proactive

    if not questions:
        return []
    adapter, config, make_engine = runtime
    runs = [
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
    ]
    results, report = asyncio.run(
        run_proactive(
            runs,
            adapter=adapter,
            config=config,
            make_engine=make_engine,
            skip_missing=True,
            max_new_tokens=config.engine.max_new_tokens,
        )
    )
    print(
        f"proactive (native): {report.answered} of {len(runs)} played, "
        f"{sum(t is not None for _, t in results.values())} answered by the decision module"
    )
    return [streamingbench.result_record(q, *results[q.key]) for q in questions if q.key in results]
