"""OVO-Bench result files: loading and validating the shape the benchmark's inference scripts write."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.bench_format import BenchmarkFormatError, Fields, read_json, type_name
from evaluation.ovo_bench.annotations import poll_fields
from evaluation.ovo_bench.tasks import CATEGORIES, FORWARD_TASKS, TASK_CATEGORY

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MultipleChoiceResult:
    """A backward / real-time result record; ``category`` is the list it was found in."""

    id: int | None
    task: str
    category: str
    video: str | None
    question: str | None
    response: str | None
    ground_truth: str


@dataclass(frozen=True, slots=True)
class ForwardPollResult:
    """One answered forward poll: ``count`` for REC, ``type`` (1 = Yes) for SSR / CRR."""

    realtime: float
    response: str | None
    count: int | None = None
    type: int | None = None


@dataclass(frozen=True, slots=True)
class ForwardResult:
    """A forward result record: the annotation item with a response per poll."""

    id: int | None
    task: str
    video: str | None
    polls: tuple[ForwardPollResult, ...]


@dataclass(frozen=True, slots=True)
class OvoResults:
    """The merged content of one model's result files."""

    backward: tuple[MultipleChoiceResult, ...] = ()
    realtime: tuple[MultipleChoiceResult, ...] = ()
    forward: tuple[ForwardResult, ...] = ()
    sources: tuple[str, ...] = ()

    def merged(self, other: OvoResults) -> OvoResults:
        """Both files' records, this one's first (the official scorer concatenates the lists)."""
        return OvoResults(
            self.backward + other.backward,
            self.realtime + other.realtime,
            self.forward + other.forward,
            self.sources + other.sources,
        )

    @property
    def query_count(self) -> int:
        return len(self.backward) + len(self.realtime) + sum(len(r.polls) for r in self.forward)


def _optional_id(f: Fields) -> int | None:
    return f.integer("id") if f.record.get("id") is not None else None


def _parse_mc_result(record: Any, path: str | Path | None, index: str, category: str) -> MultipleChoiceResult:
    f = Fields(record, path, index)
    task = f.text("task")
    if task in FORWARD_TASKS:
        raise f.error("task", f"forward task {task} found in the '{category}' list; it belongs in 'forward'")
    if TASK_CATEGORY.get(task, category) != category:
        log.warning("%s: record %s: task %s sits in '%s', not '%s'", path, index, task, category, TASK_CATEGORY[task])
    gt = f.text("ground_truth")
    if not gt:
        raise f.error("ground_truth", "must be the option letter, got an empty string")
    return MultipleChoiceResult(
        id=_optional_id(f),
        task=task,
        category=category,
        video=f.opt_text("video"),
        question=f.opt_text("question"),
        response=f.response(),
        ground_truth=gt,
    )


def _parse_forward_result(record: Any, path: str | Path | None, index: str) -> ForwardResult:
    f = Fields(record, path, index)
    task = f.text("task")
    if task not in FORWARD_TASKS:
        raise f.error("task", f"{task!r} is not a forward task ({', '.join(FORWARD_TASKS)})")
    polls = []
    for p in poll_fields(f):
        realtime = p.number("realtime", minimum=0)
        if task == "REC":
            polls.append(ForwardPollResult(realtime, p.response(), count=p.integer("count", minimum=0)))
        else:
            polls.append(ForwardPollResult(realtime, p.response(), type=p.choice("type", (0, 1))))
    return ForwardResult(id=_optional_id(f), task=task, video=f.opt_text("video"), polls=tuple(polls))


def parse_results(doc: Any, path: str | Path | None = None) -> OvoResults:
    """Typed records of a parsed result document ``{"backward": [..], "realtime": [..], "forward": [..]}``."""
    if not isinstance(doc, dict):
        raise BenchmarkFormatError(
            path,
            f'expected an object {{"backward": [...], "realtime": [...], "forward": [...]}}, got {type_name(doc)}',
        )
    lists = {}
    for cat in CATEGORIES:
        if cat not in doc:
            raise BenchmarkFormatError(path, "missing (a result file has backward, realtime and forward)", field=cat)
        if not isinstance(doc[cat], list):
            raise BenchmarkFormatError(path, f"expected a list, got {type_name(doc[cat])}", field=cat)
        lists[cat] = doc[cat]
    backward, realtime = (
        tuple(_parse_mc_result(r, path, f"{cat}[{i}]", cat) for i, r in enumerate(lists[cat]))
        for cat in ("backward", "realtime")
    )
    return OvoResults(
        backward=backward,
        realtime=realtime,
        forward=tuple(_parse_forward_result(r, path, f"forward[{i}]") for i, r in enumerate(lists["forward"])),
        sources=() if path is None else (str(path),),
    )


def load_results(path: str | Path) -> OvoResults:
    """Typed records of one official-format result file."""
    return parse_results(read_json(path), path)


def _looks_like_results(doc: Any) -> bool:
    return isinstance(doc, dict) and any(isinstance(doc.get(cat), list) for cat in CATEGORIES)


def load_result_paths(paths: Iterable[str | Path]) -> OvoResults:
    """Merge result files; a directory contributes its ``*.json`` result files in name order.

    In a directory, JSON files that are not result files (no backward / realtime / forward list, e.g. a saved
    score summary) are skipped with a warning; a file named explicitly must be a result file.
    """
    merged = OvoResults()
    for entry in paths:
        p = Path(entry)
        if p.is_dir():
            found = 0
            for file in sorted(p.glob("*.json")):
                doc = read_json(file)
                if not _looks_like_results(doc):
                    log.warning("%s: not an OVO-Bench result file (no backward/realtime/forward list); skipped", file)
                    continue
                merged = merged.merged(parse_results(doc, file))
                found += 1
            if not found:
                raise BenchmarkFormatError(p, "the folder holds no OVO-Bench result files (*.json)")
        else:
            merged = merged.merged(load_results(p))
    _warn_duplicates(merged)
    return merged


def _warn_duplicates(results: OvoResults) -> None:
    keys = [(r.category, r.id) for r in results.backward + results.realtime if r.id is not None]
    keys += [("forward", r.id) for r in results.forward if r.id is not None]
    dupes = len(keys) - len(set(keys))
    if dupes:
        log.warning("%d result records repeat an id already seen; each is scored (as the official scorer does)", dupes)
