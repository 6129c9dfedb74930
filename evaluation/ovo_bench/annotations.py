"""OVO-Bench annotations: typed items read unchanged, queries expanded from them, counts per task."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.bench_format import BenchmarkFormatError, Fields, read_json, type_name
from evaluation.ovo_bench.tasks import (
    CATEGORIES,
    MULTIPLE_CHOICE_TASKS,
    TASK_CATEGORY,
    crr_prompt,
    multiple_choice_prompt,
    poll_answer,
    rec_prompt,
    ssr_prompt,
)


@dataclass(frozen=True, slots=True)
class MultipleChoiceItem:
    """A backward or real-time item: one question with options; ``gt`` is the index of the right option."""

    id: int
    task: str
    video: str
    realtime: float
    question: str
    options: tuple[str, ...]
    gt: int
    answer: str | None
    raw: Mapping[str, Any] = field(compare=False, repr=False)

    @property
    def category(self) -> str:
        return TASK_CATEGORY[self.task]

    @property
    def ground_truth(self) -> str:
        """The right option's letter."""
        return chr(65 + self.gt)


@dataclass(frozen=True, slots=True)
class RecPoll:
    """REC poll: at ``realtime`` the activity has been performed ``count`` times."""

    realtime: float
    count: int


@dataclass(frozen=True, slots=True)
class SsrPoll:
    """SSR poll: at ``realtime`` the person is (type 1) or is not (type 0) performing ``step``."""

    realtime: float
    step: str
    type: int


@dataclass(frozen=True, slots=True)
class CrrPoll:
    """CRR poll: at ``realtime`` the video does (type 1) or does not (type 0) hold the answer yet."""

    realtime: float
    type: int


@dataclass(frozen=True, slots=True)
class RecItem:
    """Repetition event count: how many times the activity was performed, polled at several times."""

    id: int
    video: str
    activity: str
    start_times: tuple[float, ...]
    end_times: tuple[float, ...]
    polls: tuple[RecPoll, ...]
    raw: Mapping[str, Any] = field(compare=False, repr=False)
    task: str = "REC"

    @property
    def category(self) -> str:
        return "forward"


@dataclass(frozen=True, slots=True)
class SsrItem:
    """Sequential steps recognition: is a given step of a tutorial being performed now."""

    id: int
    video: str
    tutorial: str | None
    all_steps: tuple[str, ...]
    start_time: tuple[float, ...]
    end_time: tuple[float, ...]
    polls: tuple[SsrPoll, ...]
    raw: Mapping[str, Any] = field(compare=False, repr=False)
    task: str = "SSR"

    @property
    def category(self) -> str:
        return "forward"


@dataclass(frozen=True, slots=True)
class CrrItem:
    """Clues reveal responding: does the video seen so far hold enough to answer the question."""

    id: int
    video: str
    question: str
    answer: str | None
    ask_time: float | None
    clue_time: float | None
    polls: tuple[CrrPoll, ...]
    raw: Mapping[str, Any] = field(compare=False, repr=False)
    task: str = "CRR"

    @property
    def category(self) -> str:
        return "forward"


OvoItem = MultipleChoiceItem | RecItem | SsrItem | CrrItem


def poll_fields(f: Fields) -> list[Fields]:
    """The ``test_info`` polls of a forward record, each addressed for error messages (at least one)."""
    entries = f.array("test_info")
    if not entries:
        raise f.error("test_info", "must hold at least one poll")
    return [Fields(e, f.path, f"{f.index}.test_info[{j}]") for j, e in enumerate(entries)]


def _parse_item(record: Any, path: str | Path | None, index: int) -> OvoItem:
    f = Fields(record, path, index)
    task = f.text("task")
    if task not in TASK_CATEGORY:
        raise f.error("task", f"unknown task {task!r}; expected one of {', '.join(TASK_CATEGORY)}")
    item_id = f.integer("id")
    video = f.text("video")
    raw = copy.deepcopy(dict(f.record))
    if task in MULTIPLE_CHOICE_TASKS:
        options = f.texts("options", non_empty=True)
        gt = f.integer("gt", minimum=0)
        if gt >= len(options):
            raise f.error("gt", f"option index {gt} is out of range for {len(options)} options")
        return MultipleChoiceItem(
            id=item_id,
            task=task,
            video=video,
            realtime=f.number("realtime", minimum=0),
            question=f.text("question"),
            options=options,
            gt=gt,
            answer=f.opt_text("answer"),
            raw=raw,
        )
    polls = poll_fields(f)
    if task == "REC":
        return RecItem(
            id=item_id,
            video=video,
            activity=f.text("activity"),
            start_times=f.opt_number_list("start_times"),
            end_times=f.opt_number_list("end_times"),
            polls=tuple(RecPoll(p.number("realtime", minimum=0), p.integer("count", minimum=0)) for p in polls),
            raw=raw,
        )
    if task == "SSR":
        return SsrItem(
            id=item_id,
            video=video,
            tutorial=f.opt_text("tutorial"),
            all_steps=f.opt_texts("all_steps"),
            start_time=f.opt_number_list("start_time"),
            end_time=f.opt_number_list("end_time"),
            polls=tuple(
                SsrPoll(p.number("realtime", minimum=0), p.text("step"), p.choice("type", (0, 1))) for p in polls
            ),
            raw=raw,
        )
    return CrrItem(
        id=item_id,
        video=video,
        question=f.text("question"),
        answer=f.opt_text("answer"),
        ask_time=f.opt_number("ask_time"),
        clue_time=f.opt_number("clue_time"),
        polls=tuple(CrrPoll(p.number("realtime", minimum=0), p.choice("type", (0, 1))) for p in polls),
        raw=raw,
    )


def parse_annotations(data: Any, path: str | Path | None = None) -> list[OvoItem]:
    """Typed items from the parsed annotation document (a JSON list of records)."""
    if not isinstance(data, list):
        raise BenchmarkFormatError(path, f"expected a JSON list of OVO-Bench records, got {type_name(data)}")
    items = [_parse_item(record, path, i) for i, record in enumerate(data)]
    seen: set[int] = set()
    for i, item in enumerate(items):
        if item.id in seen:
            raise BenchmarkFormatError(path, f"duplicate id {item.id}", index=i, field="id")
        seen.add(item.id)
    return items


def load_annotations(path: str | Path) -> list[OvoItem]:
    """Typed items of an OVO-Bench annotation file (e.g. ``ovo_bench_new.json``), read unchanged."""
    return parse_annotations(read_json(path), path)


# ----------------------------------------------------------------------------------------------------
# Queries
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OvoQuery:
    """One scored question: asked at ``ask_time`` seconds with the video up to then.

    ``expected`` is what the official scorer looks for: the option letter, the REC count, or "Yes" / "No".
    ``poll_index`` is the ``test_info`` index of a forward poll, None for multiple choice.
    """

    item_id: int
    task: str
    category: str
    video: str
    realtime: float
    ask_time: int
    prompt: str
    expected: str
    poll_index: int | None
    item: OvoItem = field(compare=False, repr=False)

    @property
    def key(self) -> str:
        """A stable name: the item id, plus ``.poll_index`` for forward polls."""
        return str(self.item_id) if self.poll_index is None else f"{self.item_id}.{self.poll_index}"

    def video_path(self, root: str | Path) -> Path:
        """The video file under the benchmark's video folder ``root``."""
        return Path(root) / self.video


def _ask_time(realtime: float) -> int:
    return math.ceil(realtime)


def _queries(item: OvoItem) -> list[OvoQuery]:
    def make(realtime: float, prompt: str, expected: str, poll: int | None) -> OvoQuery:
        return OvoQuery(
            item_id=item.id,
            task=item.task,
            category=item.category,
            video=item.video,
            realtime=realtime,
            ask_time=_ask_time(realtime),
            prompt=prompt,
            expected=expected,
            poll_index=poll,
            item=item,
        )

    if isinstance(item, MultipleChoiceItem):
        return [make(item.realtime, multiple_choice_prompt(item.question, item.options), item.ground_truth, None)]
    if isinstance(item, RecItem):
        prompt = rec_prompt(item.activity)
        return [make(p.realtime, prompt, str(p.count), j) for j, p in enumerate(item.polls)]
    if isinstance(item, SsrItem):
        return [make(p.realtime, ssr_prompt(p.step), poll_answer(p.type), j) for j, p in enumerate(item.polls)]
    prompt = crr_prompt(item.question)
    return [make(p.realtime, prompt, poll_answer(p.type), j) for j, p in enumerate(item.polls)]


def expand_queries(items: Iterable[OvoItem]) -> list[OvoQuery]:
    """Every scored query: one per multiple-choice item, one per forward poll, in annotation order."""
    return [q for item in items for q in _queries(item)]


@dataclass(frozen=True, slots=True)
class Count:
    """Items and the scored queries they expand to."""

    items: int = 0
    queries: int = 0


@dataclass(frozen=True, slots=True)
class OvoStats:
    """Counts per task (benchmark order), per category and in total."""

    tasks: dict[str, Count]
    categories: dict[str, Count]
    total: Count
    videos: int
    max_ask_time: int


def stats(items: Sequence[OvoItem]) -> OvoStats:
    """Items and scored queries per task and category."""
    tasks: dict[str, Count] = {}
    for task in TASK_CATEGORY:
        chosen = [it for it in items if it.task == task]
        if chosen:
            tasks[task] = Count(len(chosen), sum(len(_polls(it)) for it in chosen))
    categories = {}
    for cat in CATEGORIES:
        parts = [c for t, c in tasks.items() if TASK_CATEGORY[t] == cat]
        if parts:
            categories[cat] = Count(sum(c.items for c in parts), sum(c.queries for c in parts))
    total = Count(sum(c.items for c in tasks.values()), sum(c.queries for c in tasks.values()))
    times = [q.ask_time for q in expand_queries(items)]
    return OvoStats(tasks, categories, total, len({it.video for it in items}), max(times, default=0))


def _polls(item: OvoItem) -> tuple[Any, ...]:
    return (item,) if isinstance(item, MultipleChoiceItem) else item.polls
