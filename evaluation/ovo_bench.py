"""OVO-Bench: annotation loader, query expansion with the benchmark's prompts, result files and scoring.

Annotation (``data/ovo_bench_new.json``, one JSON list) is read unchanged into typed items: multiple-choice
items (backward tasks EPM, ASI, HLD; real-time tasks OCR, ACR, ATR, STU, FPD, OJR) and forward items
(REC, SSR, CRR). Every multiple-choice item is one query; every ``test_info`` entry of a forward item is one
poll. A query is asked with the video up to ``ceil(realtime)`` seconds, as the benchmark's offline inference
cuts its clips.

Prompts (``multiple_choice_prompt``, ``rec_prompt``, ``ssr_prompt``, ``crr_prompt``) are the benchmark's
``build_prompt`` (``utils/OVOBench.py``) text, whitespace included.

Result files have the shape the benchmark's inference scripts write, ``{"backward": [...], "realtime": [...],
"forward": [...]}``: multiple-choice records ``{id, video, task, question, response, ground_truth}``
(``ground_truth`` is the option letter), forward records are the annotation record with ``response`` added to
each ``test_info`` entry. Several files of one model are merged by concatenating the three lists.
``to_official`` / ``write_official`` write our own runs in this format.

Official scoring reproduced (``utils/OVOBenchScore.py``, ``OVOBenchOfflineScore``):
  - multiple choice: 1 when the ground-truth letter occurs anywhere in the response (``gt in response``), so
    e.g. "Based on ..." counts for "B"; a null response scores 0;
  - REC: all digit runs of the response are joined and compared with ``str(count)`` ("1 or 2" reads as "12");
  - SSR / CRR: 1 when the response is exactly "N" / "Y" matching the type (0 = No, 1 = Yes), else when "No" /
    "Yes" occurs in it (case-sensitive substring, so "Not sure" counts as "No");
  - accuracy per task (per poll for forward tasks); a category (the list the record sits in) scores the mean
    of its tasks' accuracies; the total is the mean of the category scores (the current scorer; the paper's
    older total, the mean over all tasks, is reported as ``total_all_tasks``). Where a category is absent the
    current scorer cannot print a total; ours averages the categories present and logs a warning.
  - printed with two decimals (``f"{100 * x:.2f}"``).
Where ours differs, by design:
  - a list in ``response`` is joined with spaces and a warning is logged (the official scorer crashes on it);
  - malformed records raise ``BenchmarkFormatError`` naming file, record and field.
Labelled strict variant (``variant="strict"``, never mixed with the official numbers):
  - multiple choice: the first standalone option letter (A-H, not inside a word) must equal the ground truth;
  - REC: the first integer of the response must equal the count;
  - SSR / CRR: the first word, case-insensitive, must be yes/y or no/n matching the type.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.bench_format import BenchmarkFormatError, Fields, read_json, type_name

log = logging.getLogger(__name__)

CATEGORIES = ("backward", "realtime", "forward")
TASK_CATEGORY: dict[str, str] = {
    "EPM": "backward",
    "ASI": "backward",
    "HLD": "backward",
    "OCR": "realtime",
    "ACR": "realtime",
    "ATR": "realtime",
    "STU": "realtime",
    "FPD": "realtime",
    "OJR": "realtime",
    "REC": "forward",
    "SSR": "forward",
    "CRR": "forward",
}
MULTIPLE_CHOICE_TASKS = tuple(t for t, c in TASK_CATEGORY.items() if c != "forward")
FORWARD_TASKS = ("REC", "SSR", "CRR")
VARIANTS = ("official", "strict")


# ----------------------------------------------------------------------------------------------------
# Prompts: the benchmark's build_prompt text (leading newline, 16-space indented lines, 12 spaces at the end).
# ----------------------------------------------------------------------------------------------------

_LINE_INDENT = " " * 16
_TAIL_INDENT = " " * 12


def _prompt(lines: Sequence[str], head: str = "\n") -> str:
    return head + "".join(f"{_LINE_INDENT}{line}\n" for line in lines) + _TAIL_INDENT


def multiple_choice_prompt(question: str, options: Sequence[str]) -> str:
    """The prompt of a backward / real-time item: question, lettered options, answer with the letter only."""
    formatted = "; ".join(f"{chr(65 + i)}. {option}" for i, option in enumerate(options)) + ";"
    return _prompt(
        [
            f"Question: {question}",
            "Options:",
            formatted,
            "Respond only with the letter corresponding to your chosen option (e.g., A, B, C). ",
            "Do not include any additional text or explanation in your response.",
        ]
    )


def rec_prompt(activity: str) -> str:
    """The REC poll prompt: "How many times did they {activity}?" answered with a single number."""
    question = "How many times did they " + activity + "?"
    return _prompt(
        [
            "You're watching a video in which people may perform a certain type of action repetively. ",
            "The person performing this kind of action are referred to as 'they' in the following statement.",
            "You're task is to count how many times have different people in the video perform this kind of "
            "action in total.",
            "One complete motion counts as one. ",
            f"Now, answer the following question: {question}",
            "Provide your answer as a single number (e.g., 0, 1, 2, 3…) indicating the total count.",
            "Do not include any additional text or explanation in your response.",
        ],
        head=" \n",
    )


def ssr_prompt(step: str) -> str:
    """The SSR poll prompt: is the person currently performing ``step`` (Yes / No)."""
    return _prompt(
        [
            "You're watching a tutorial video which contain a sequential of steps. ",
            "The following is one step from the whole procedures: ",
            step,
            "Your task is to determine if the man or woman in the video is currently performing this step.",
            "Answer only with “Yes” or “No”.",
            "Do not include any additional text or explanation in your response.",
        ]
    )


def crr_prompt(question: str) -> str:
    """The CRR poll prompt: do the latest frames give enough information to answer ``question`` (Yes / No)."""
    return _prompt(
        [
            "You're responsible of answering questions based on the video content. ",
            "The following question are relevant to the latest frames, i.e. the end of the video.",
            question,
            "Decide whether existing visual content, especially latest frames, i.e. frames that near the end "
            "of the video, provide enough information for answering the question.",
            "Answer only with “Yes” or “No”.",
            "Do not include any additional text or explanation in your response.",
        ]
    )


# ----------------------------------------------------------------------------------------------------
# Annotation records
# ----------------------------------------------------------------------------------------------------


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


def _test_info(f: Fields) -> list[Fields]:
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
    polls = _test_info(f)
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
        return [make(p.realtime, ssr_prompt(p.step), _yes_no(p.type), j) for j, p in enumerate(item.polls)]
    prompt = crr_prompt(item.question)
    return [make(p.realtime, prompt, _yes_no(p.type), j) for j, p in enumerate(item.polls)]


def _yes_no(poll_type: int) -> str:
    return "Yes" if poll_type == 1 else "No"


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


# ----------------------------------------------------------------------------------------------------
# Result files
# ----------------------------------------------------------------------------------------------------


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
    for p in _test_info(f):
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


# ----------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------


def score_mc_official(response: str | None, ground_truth: str) -> int:
    """1 when the ground-truth letter occurs anywhere in the response."""
    if response is None:
        return 0
    return int(ground_truth in response)


def score_rec_official(response: str | None, count: int) -> int:
    """1 when all digits of the response, joined, spell the count."""
    if response is None:
        return 0
    return int("".join(re.findall(r"\d+", response)) == str(count))


def score_yes_no_official(response: str | None, poll_type: int) -> int:
    """1 for an exact "N"/"Y" matching the type, else when "No"/"Yes" occurs in the response."""
    if (response == "N" and poll_type == 0) or (response == "Y" and poll_type == 1):
        return 1
    if response is None:
        return 0
    return int(_yes_no(poll_type) in response)


_STRICT_LETTER = re.compile(r"(?<![A-Za-z])([A-H])(?![A-Za-z])")
_FIRST_INT = re.compile(r"\d+")
_FIRST_WORD = re.compile(r"[A-Za-z]+")


def score_mc_strict(response: str | None, ground_truth: str) -> int:
    """1 when the first standalone option letter (A-H) of the response is the ground truth."""
    m = _STRICT_LETTER.search(response or "")
    return int(m is not None and m.group(1) == ground_truth)


def score_rec_strict(response: str | None, count: int) -> int:
    """1 when the first integer of the response equals the count."""
    m = _FIRST_INT.search(response or "")
    return int(m is not None and int(m.group()) == count)


def score_yes_no_strict(response: str | None, poll_type: int) -> int:
    """1 when the first word is yes/y (type 1) or no/n (type 0), any case."""
    m = _FIRST_WORD.search(response or "")
    if m is None:
        return 0
    word = m.group().lower()
    return int(word in (("yes", "y") if poll_type == 1 else ("no", "n")))


@dataclass(frozen=True, slots=True)
class TaskScore:
    """Correct / scored queries of one task in one category."""

    task: str
    category: str
    correct: int
    total: int

    @property
    def fraction(self) -> float:
        return self.correct / self.total

    @property
    def accuracy(self) -> float:
        """Percent, computed as the official scorer does (``100 * sum / len``)."""
        return 100 * self.correct / self.total


@dataclass(frozen=True, slots=True)
class OvoScore:
    """Per-task, per-category and total scores (percent) of one model under one scoring variant."""

    variant: str
    tasks: dict[str, TaskScore]
    categories: dict[str, float]
    total: float | None
    total_all_tasks: float | None

    def category_tasks(self, category: str) -> list[TaskScore]:
        return [t for t in self.tasks.values() if t.category == category]

    def as_dict(self) -> dict[str, Any]:
        """The numbers as the official scorer prints them (two decimals), plus counts; JSON-ready."""
        out: dict[str, Any] = {
            "variant": self.variant,
            "tasks": {name: round(t.accuracy, 2) for name, t in self.tasks.items()},
        }
        out.update({cat: round(v, 2) for cat, v in self.categories.items()})
        out["total"] = None if self.total is None else round(self.total, 2)
        out["total_all_tasks"] = None if self.total_all_tasks is None else round(self.total_all_tasks, 2)
        out["counts"] = {name: {"correct": t.correct, "total": t.total} for name, t in self.tasks.items()}
        return out


def score_results(results: OvoResults, *, variant: str = "official") -> OvoScore:
    """Score merged result records; ``variant`` is "official" (the benchmark's scorer) or "strict"."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown scoring variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    strict = variant == "strict"
    mc = score_mc_strict if strict else score_mc_official
    rec = score_rec_strict if strict else score_rec_official
    yes_no = score_yes_no_strict if strict else score_yes_no_official

    per_category: dict[str, dict[str, list[int]]] = {cat: {} for cat in CATEGORIES}
    for cat, records in (("backward", results.backward), ("realtime", results.realtime)):
        for r in records:
            per_category[cat].setdefault(r.task, []).append(mc(r.response, r.ground_truth))
    for fr in results.forward:
        bucket = per_category["forward"].setdefault(fr.task, [])
        for p in fr.polls:
            bucket.append(rec(p.response, p.count) if fr.task == "REC" else yes_no(p.response, p.type))

    tasks: dict[str, TaskScore] = {}
    categories: dict[str, float] = {}
    fractions: list[float] = []
    for cat in CATEGORIES:
        scores = [TaskScore(t, cat, sum(v), len(v)) for t, v in per_category[cat].items()]
        if not scores:
            continue
        for s in scores:
            # A task repeated in two lists (a misplaced record) is kept apart by its category.
            tasks[s.task if s.task not in tasks else f"{s.task}@{cat}"] = s
        cat_fractions = [s.fraction for s in scores]
        fractions.extend(cat_fractions)
        categories[cat] = 100 * sum(cat_fractions) / len(cat_fractions)
    if categories and len(categories) < len(CATEGORIES):
        missing = [c for c in CATEGORIES if c not in categories]
        log.warning("no results for %s; the total averages the categories present", ", ".join(missing))
    total = sum(categories.values()) / len(categories) if categories else None
    total_all = 100 * sum(fractions) / len(fractions) if fractions else None
    return OvoScore(variant, tasks, categories, total, total_all)


# ----------------------------------------------------------------------------------------------------
# Writing our runs in the official format
# ----------------------------------------------------------------------------------------------------


def _video(video: str, video_prefix: str | None) -> str:
    return video if video_prefix is None else f"{video_prefix.rstrip('/')}/{video}"


def multiple_choice_record(query: OvoQuery, response: str | None, *, video_prefix: str | None = None) -> dict:
    """The official result record of an answered multiple-choice query."""
    item = query.item
    if not isinstance(item, MultipleChoiceItem):
        raise ValueError(f"query {query.key} is a {query.task} poll; use forward_record for forward items")
    return {
        "id": item.id,
        "video": _video(item.video, video_prefix),
        "task": item.task,
        "question": item.question,
        "response": response,
        "ground_truth": item.ground_truth,
    }


def forward_record(
    item: RecItem | SsrItem | CrrItem, responses: Mapping[int, str | None], *, video_prefix: str | None = None
) -> dict:
    """The official result record of a forward item: its annotation with ``response`` in each poll.

    ``responses`` maps poll index to response; polls without one get null (scored 0, as a failed inference).
    """
    unknown = sorted(set(responses) - set(range(len(item.polls))))
    if unknown:
        raise ValueError(f"item {item.id} has {len(item.polls)} polls; no poll index {unknown}")
    record = copy.deepcopy(dict(item.raw))
    record["video"] = _video(item.video, video_prefix)
    for j, entry in enumerate(record["test_info"]):
        entry["response"] = responses.get(j)
    return record


def to_official(
    answers: Iterable[tuple[OvoQuery, str | None]], *, video_prefix: str | None = None
) -> dict[str, list[dict]]:
    """An official result document from (query, response) pairs (query order kept, polls grouped by item)."""
    doc: dict[str, list[dict]] = {cat: [] for cat in CATEGORIES}
    forward: dict[int, tuple[OvoItem, dict[int, str | None]]] = {}
    seen: set[str] = set()
    for query, response in answers:
        if query.key in seen:
            raise ValueError(f"query {query.key} ({query.task}) was answered twice")
        seen.add(query.key)
        if query.poll_index is None:
            doc[query.category].append(multiple_choice_record(query, response, video_prefix=video_prefix))
        else:
            forward.setdefault(query.item_id, (query.item, {}))[1][query.poll_index] = response
    doc["forward"] = [forward_record(item, polls, video_prefix=video_prefix) for item, polls in forward.values()]
    return doc


def write_official(
    path: str | Path, answers: Iterable[tuple[OvoQuery, str | None]], *, video_prefix: str | None = None
) -> Path:
    """Write (query, response) pairs as an official result file (JSON, indent 4, as the benchmark writes)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(to_official(answers, video_prefix=video_prefix), indent=4) + "\n")
    return p
