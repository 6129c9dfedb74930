"""StreamingBench: question files, prompts, our results format and the official counting.

Question files (``src/data/questions_{real,omni,sqa,proactive}.json`` and the ``*_stream.json`` variants,
which add ``audio_path``) are lists of segments ``{video_path, time, video_categories, questions: [...]}``;
``questions_sqa.json`` is a list of per-video lists of segments whose options carry no letter prefix.
A question has ``task_type, question, time_stamp ("HH:MM:SS"), required_ability`` and either ``options`` +
``answer`` (the letter) or, for Proactive Output, ``ground_truth_time_stamp`` + ``ground_truth_output``.
Each question is asked at ``time_stamp`` seconds with the video up to then. Its key is
``"{video_path}@{time_stamp}#{k}"``, k counting questions with the same video and time stamp in file order
(0 for the first).

Our results format (JSON lines, one object per answered question, written by ``result_record`` and
``write_results``)::

    {"key": ..., "kind": "real", "task_type": "Clips Summarize", "answer": "C", "response": "C"}
    {"key": ..., "kind": "proactive", "task_type": "Proactive Output", "ground_truth_time": 29,
     "ground_truth_output": "3", "answer_time": 30.0, "response": "The score is 3"}

``response`` is the reply text (null when the model gave none); ``answer_time`` is the stream second at which
the model gave its proactive answer (null when it never did). The ground truth travels with each record, so a
results file scores on its own. The benchmark's own output files (the question file with a model's reply
stored under the model's name) are read too (``load_results(path, model=NAME)``).

Official counting reproduced (``src/data/count.py``):
  - real / omni / sqa: the first character of the reply must equal the answer letter (``reply[0] == answer``);
    questions without a reply are left out of the counts (sqa skips empty replies; for real / omni the
    official script would crash on them, ours leaves them out and reports them as ``unanswered``); accuracy
    per task type and, for real / omni, a ``total`` over all answered questions of the file (here: per kind);
  - proactive: timing correct when ``-2 <= t_answer - t_gt <= 2`` seconds (t_answer = the time of the last
    dialog turn, i.e. the answer or, if the model never said yes, the last poll); answer correct when the
    timing is correct and ``ground_truth_output`` occurs in the reply; every proactive question counts.
  - accuracies are fractions (``correct / total``), unrounded, as ``count.py`` writes them.
Added here: a tolerance curve for proactive timing (share with ``|t_answer - t_gt| <= tol``, tol = 1..5 s)
and the mean absolute timing error of answered questions; a list reply is joined with spaces (logged).
Labelled strict variant (``variant="strict"``): the first standalone option letter (A-H) of the reply must
equal the answer, and unanswered questions count as wrong.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.bench_format import BenchmarkFormatError, Fields, read_json, read_jsonl, type_name

log = logging.getLogger(__name__)

KINDS = ("real", "omni", "sqa", "proactive")
VARIANTS = ("official", "strict")
PROACTIVE_TOLERANCE_S = 2.0
DEFAULT_TOLERANCES = (1.0, 2.0, 3.0, 4.0, 5.0)

# ----------------------------------------------------------------------------------------------------
# Prompts of the benchmark's harness (src/benchmark/StreamingBench*.py)
# ----------------------------------------------------------------------------------------------------

MC_PROMPT_TEMPLATE = (
    "You are an advanced video question-answering AI assistant. You have been provided with some frames "
    "from the video and a multiple-choice question related to the video. Your task is to carefully analyze "
    "the video and provide the best answer to question, choosing from the four options provided. Respond "
    "with only the letter (A, B, C, or D) of the correct option.\n\nQuestion: {}\n\nOptions:\n{}\n{}\n{}\n{}"
)
MC_PROMPT_SUFFIX = "\n\nThe best option is:"
SQA_PROMPT_TEMPLATE = (
    "You are an advanced video question-answering AI assistant. You have been provided with a video and a "
    "multiple-choice question related to the video. Your task is to carefully analyze the video and the "
    "provided context to answer the question, choosing from the four options provided. Respond with only "
    "the letter (A, B, C, or D) of the correct option.\n\n{}\n\nHere is the question. Answer it and don't "
    "confuse it with the previous conversation.\nQuestion: {}\n\nOptions:\n{}\n{}\n{}\n{}\n\n"
    "The best option is:"
)
SQA_CONTEXT_HEAD = (
    "Here are the contextual information related to the video. Please answer the questions based on the "
    "contextual information: "
)
PROACTIVE_PROMPT_TEMPLATE = (
    "You are an advanced image question-answering AI assistant. You have been provided with images and a "
    "question related to the images. Your task is to carefully analyze the images and provide the answer to "
    "the question. "
    "You need to carefully confirm whether the images content meet the conditions of the question, and then "
    "output the correct content.\n\nQuestion: {}\n\nThe answer is:\n"
)


def parse_time_stamp(text: str) -> int:
    """Seconds of an "HH:MM:SS" (or "MM:SS") time stamp, as the benchmark converts it."""
    return sum(int(x) * 60**i for i, x in enumerate(reversed(text.split(":"))))


# ----------------------------------------------------------------------------------------------------
# Questions
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamingQuestion:
    """One question, asked at ``ask_time`` seconds of ``video_path``.

    Multiple choice: ``options`` as in the file and ``answer`` (letter). Proactive Output:
    ``ground_truth_time`` (seconds) and ``ground_truth_output``. ``video_index``: the video's index in sqa
    files, else None.
    """

    key: str
    kind: str
    task_type: str
    question: str
    time_stamp: str
    ask_time: int
    video_path: str
    options: tuple[str, ...] = ()
    answer: str | None = None
    ground_truth_time_stamp: str | None = None
    ground_truth_time: int | None = None
    ground_truth_output: str | None = None
    required_ability: str | None = None
    video_categories: str | None = None
    segment_time: str | None = None
    audio_path: str | None = None
    segment_index: int = 0
    question_index: int = 0
    video_index: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_proactive(self) -> bool:
        return self.ground_truth_time is not None

    @property
    def lettered_options(self) -> tuple[str, ...]:
        """Options as the harness shows them: "A. ..." (a letter prefix is added when the file has none)."""
        if not self.options or self.options[0].startswith("A."):
            return self.options
        return tuple(f"{chr(65 + i)}. {o}" for i, o in enumerate(self.options))

    def prompt(self, previous: Sequence[StreamingQuestion] = ()) -> str:
        """The harness prompt; sqa questions carry the earlier questions of the video with their answers."""
        if self.is_proactive:
            return proactive_poll_prompt(self)
        if self.kind == "sqa":
            return SQA_PROMPT_TEMPLATE.format(sqa_context(previous), self.question, *self.lettered_options[:4])
        return MC_PROMPT_TEMPLATE.format(self.question, *self.lettered_options[:4]) + MC_PROMPT_SUFFIX


def sqa_context(previous: Sequence[StreamingQuestion]) -> str:
    """The context the sqa harness builds from earlier questions and their ground-truth answers."""
    context = ""
    for q in previous:
        if not context:
            context += SQA_CONTEXT_HEAD
        o = q.lettered_options
        context += (
            f"At timestamp {q.time_stamp}, the following question and answer occurred: "
            f"Question: {q.question}; "
            f"Options: {o[0]}, {o[1]}, {o[2]}, {o[3]}; Answer: {q.answer}; "
        )
    return context


def proactive_poll_prompt(question: StreamingQuestion) -> str:
    """The per-second poll of the proactive harness: is it the right time to output the ground truth."""
    query = (
        f'{question.question} Is it the right time to output "{question.ground_truth_output}"? '
        "You can only answer yes or no."
    )
    return PROACTIVE_PROMPT_TEMPLATE.format(query)


def proactive_answer_prompt(question: StreamingQuestion) -> str:
    """The prompt the proactive harness asks after the model said yes."""
    return PROACTIVE_PROMPT_TEMPLATE.format(question.question)


def _kind_from_name(path: str | Path | None) -> str | None:
    if path is None:
        return None
    m = re.search(r"(?:^|_)(real|omni|sqa|proactive)(?=_|\.|$)", Path(path).name)
    return m.group(1) if m else None


def _infer_kind(data: list[Any], path: str | Path | None) -> str:
    named = _kind_from_name(path)
    if named:
        return named
    if data and isinstance(data[0], list):
        return "sqa"
    first = next((q for seg in data if isinstance(seg, dict) for q in seg.get("questions") or []), None)
    if isinstance(first, dict) and "ground_truth_time_stamp" in first:
        return "proactive"
    return "real"


def _time(f: Fields, name: str) -> tuple[str, int]:
    text = f.text(name)
    try:
        return text, parse_time_stamp(text)
    except ValueError:
        raise f.error(name, f'expected a time stamp "HH:MM:SS", got {text!r}') from None


def _segments(data: Any, kind: str, path: str | Path | None) -> list[tuple[int | None, int, Any]]:
    """(video index, segment index, segment) for every segment of the file."""
    if not isinstance(data, list):
        raise BenchmarkFormatError(path, f"expected a JSON list of segments, got {type_name(data)}")
    if kind != "sqa":
        return [(None, i, seg) for i, seg in enumerate(data)]
    out = []
    for v, video in enumerate(data):
        if not isinstance(video, list):
            raise BenchmarkFormatError(
                path, f"sqa files hold one list of segments per video, got {type_name(video)}", index=v
            )
        out.extend((v, i, seg) for i, seg in enumerate(video))
    return out


def parse_questions(data: Any, kind: str, path: str | Path | None = None) -> list[StreamingQuestion]:
    """Typed questions of a parsed question file of the given kind (real, omni, sqa or proactive)."""
    if kind not in KINDS:
        raise ValueError(f"unknown StreamingBench kind {kind!r}; expected one of {', '.join(KINDS)}")
    seen: dict[tuple[str, str], int] = {}
    out = []
    for video_index, seg_index, segment in _segments(data, kind, path):
        where = str(seg_index) if video_index is None else f"{video_index}.{seg_index}"
        seg = Fields(segment, path, where)
        video_path = seg.text("video_path")
        for q_index, record in enumerate(seg.array("questions")):
            q = Fields(record, path, f"{where}.questions[{q_index}]")
            time_stamp, ask_time = _time(q, "time_stamp")
            k = seen.get((video_path, time_stamp), 0)
            seen[(video_path, time_stamp)] = k + 1
            common: dict[str, Any] = {
                "key": f"{video_path}@{time_stamp}#{k}",
                "kind": kind,
                "task_type": q.text("task_type"),
                "question": q.text("question"),
                "time_stamp": time_stamp,
                "ask_time": ask_time,
                "video_path": video_path,
                "required_ability": q.opt_text("required_ability"),
                "video_categories": seg.opt_text("video_categories"),
                "segment_time": seg.opt_text("time"),
                "audio_path": q.opt_text("audio_path"),
                "segment_index": seg_index,
                "question_index": q_index,
                "video_index": video_index,
                "raw": dict(q.record),
            }
            if kind == "proactive":
                gt_stamp, gt_time = _time(q, "ground_truth_time_stamp")
                out.append(
                    StreamingQuestion(
                        **common,
                        ground_truth_time_stamp=gt_stamp,
                        ground_truth_time=gt_time,
                        ground_truth_output=q.text("ground_truth_output"),
                    )
                )
            else:
                options = q.texts("options", non_empty=True)
                if len(options) < 4:
                    raise q.error("options", f"expected 4 options, got {len(options)}")
                answer = q.text("answer")
                if not answer:
                    raise q.error("answer", "must be the option letter, got an empty string")
                out.append(StreamingQuestion(**common, options=options, answer=answer))
    return out


def load_questions(path: str | Path, kind: str | None = None) -> list[StreamingQuestion]:
    """Typed questions of a question file; ``kind`` defaults to what its name says (``questions_real...``)."""
    data = read_json(path)
    return parse_questions(data, kind or _infer_kind(data if isinstance(data, list) else [], path), path)


@dataclass(frozen=True, slots=True)
class StreamingStats:
    """Question counts per kind and task type, with segments and videos."""

    kinds: dict[str, int]
    task_types: dict[str, int]
    questions: int
    segments: int
    videos: int
    max_ask_time: int


def stats(questions: Sequence[StreamingQuestion]) -> StreamingStats:
    """Questions per kind and task type (first-seen order), segments, videos, latest ask time."""
    kinds: dict[str, int] = {}
    task_types: dict[str, int] = {}
    for q in questions:
        kinds[q.kind] = kinds.get(q.kind, 0) + 1
        task_types[q.task_type] = task_types.get(q.task_type, 0) + 1
    segments = {(q.kind, q.video_index, q.segment_index) for q in questions}
    return StreamingStats(
        kinds=kinds,
        task_types=task_types,
        questions=len(questions),
        segments=len(segments),
        videos=len({(q.kind, q.video_path) for q in questions}),
        max_ask_time=max((q.ask_time for q in questions), default=0),
    )


# ----------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamingResult:
    """One answered question with its ground truth (``answer``, or proactive time and output)."""

    key: str
    kind: str
    task_type: str
    response: str | None
    answer: str | None = None
    ground_truth_time: float | None = None
    ground_truth_output: str | None = None
    answer_time: float | None = None

    @property
    def is_proactive(self) -> bool:
        return self.ground_truth_time is not None


def result_record(question: StreamingQuestion, response: str | None, answer_time: float | None = None) -> dict:
    """Our results record for an answered question (``answer_time``: stream second of a proactive answer)."""
    record: dict[str, Any] = {"key": question.key, "kind": question.kind, "task_type": question.task_type}
    if question.is_proactive:
        record["ground_truth_time"] = question.ground_truth_time
        record["ground_truth_output"] = question.ground_truth_output
        record["answer_time"] = answer_time
    else:
        if answer_time is not None:
            raise ValueError(f"question {question.key} is multiple choice; answer_time is for proactive ones")
        record["answer"] = question.answer
    record["response"] = response
    return record


def write_results(path: str | Path, records: Iterable[Mapping[str, Any]]) -> Path:
    """Write results records as JSON lines."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(dict(record), ensure_ascii=False) + "\n")
    return p


def _parse_result(record: Any, path: str | Path | None, index: int) -> StreamingResult:
    f = Fields(record, path, index)
    kind = f.text("kind")
    if kind not in KINDS:
        raise f.error("kind", f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    common = {"key": f.text("key"), "kind": kind, "task_type": f.text("task_type"), "response": f.response()}
    if kind == "proactive":
        if not f.has("answer_time"):
            raise f.error("answer_time", "missing (null when the model never answered)")
        return StreamingResult(
            **common,
            ground_truth_time=f.number("ground_truth_time", minimum=0),
            ground_truth_output=f.text("ground_truth_output"),
            answer_time=f.opt_number("answer_time"),
        )
    answer = f.text("answer")
    if not answer:
        raise f.error("answer", "must be the option letter, got an empty string")
    return StreamingResult(**common, answer=answer)


def _results_from_official(data: Any, model: str, path: str | Path | None) -> list[StreamingResult]:
    kind = _infer_kind(data if isinstance(data, list) else [], path)
    questions = parse_questions(data, kind, path)
    out = []
    for q in questions:
        if model not in q.raw:
            continue
        segment = str(q.segment_index) if q.video_index is None else f"{q.video_index}.{q.segment_index}"
        f = Fields(q.raw, path, f"{segment}.questions[{q.question_index}]")
        if q.is_proactive:
            turn = _last_turn(f, model)
            out.append(
                StreamingResult(
                    key=q.key,
                    kind=q.kind,
                    task_type=q.task_type,
                    response=turn.response("content"),
                    ground_truth_time=float(q.ground_truth_time or 0),
                    ground_truth_output=q.ground_truth_output,
                    answer_time=turn.number("time"),
                )
            )
        else:
            response = f.response(model)
            out.append(StreamingResult(q.key, q.kind, q.task_type, response, answer=q.answer))
    if not out:
        raise BenchmarkFormatError(path, f"no question carries a reply under the model name {model!r}")
    return out


def _last_turn(f: Fields, model: str) -> Fields:
    outer = Fields(f.record[model], f.path, f"{f.index}.{model}")
    history = outer.array("dialog_history")
    if not history:
        raise outer.error("dialog_history", "is empty; the proactive harness records at least one poll")
    return Fields(history[-1], f.path, f"{f.index}.{model}.dialog_history[{len(history) - 1}]")


def load_results(path: str | Path, model: str | None = None) -> list[StreamingResult]:
    """Results of our JSON-lines format, or of a benchmark output file (pass the ``model`` name it used)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    head = p.read_text(encoding="utf-8").lstrip()[:1]
    if head == "[":
        if model is None:
            raise BenchmarkFormatError(
                p,
                "this is a StreamingBench output file (a JSON list); "
                "pass the model name its replies are stored under (--model)",
            )
        return _results_from_official(read_json(p), model, p)
    return [_parse_result(r, p, i) for i, r in enumerate(read_jsonl(p))]


# ----------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------

_STRICT_LETTER = re.compile(r"(?<![A-Za-z])([A-H])(?![A-Za-z])")


@dataclass(frozen=True, slots=True)
class Accuracy:
    """Correct of counted questions; ``unanswered`` ones are left out (official) or wrong (strict)."""

    correct: int = 0
    total: int = 0
    unanswered: int = 0

    @property
    def accuracy(self) -> float:
        """``correct / total`` (0 when nothing was counted), as ``count.py`` computes it."""
        return self.correct / self.total if self.total > 0 else 0

    def add(self, correct: bool | None) -> Accuracy:
        """This count with one more question (None: unanswered, left out)."""
        if correct is None:
            return Accuracy(self.correct, self.total, self.unanswered + 1)
        return Accuracy(self.correct + int(correct), self.total + 1, self.unanswered)


@dataclass(frozen=True, slots=True)
class ProactiveScore:
    """Proactive Output: timing and answer correctness, tolerance curve, timing error when answered."""

    total: int
    answered: int
    time_correct: int
    answer_correct: int
    within: dict[float, int]
    mean_abs_error_s: float | None

    @property
    def time_accuracy(self) -> float:
        return self.time_correct / self.total if self.total > 0 else 0

    @property
    def answer_accuracy(self) -> float:
        return self.answer_correct / self.total if self.total > 0 else 0

    def curve(self) -> dict[float, float]:
        """Share of questions answered within each tolerance (seconds)."""
        return {tol: (n / self.total if self.total else 0) for tol, n in self.within.items()}


@dataclass(frozen=True, slots=True)
class StreamingScore:
    """Accuracy per task type and per kind (multiple choice) and proactive scores per task type."""

    variant: str
    task_types: dict[str, Accuracy]
    kinds: dict[str, Accuracy]
    proactive: dict[str, ProactiveScore]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready numbers (fractions, unrounded, as ``count.py`` writes them)."""

        def acc(a: Accuracy) -> dict[str, Any]:
            return {
                "total": a.total,
                "correct": a.correct,
                "accuracy": a.accuracy,
                "unanswered": a.unanswered,
            }

        return {
            "variant": self.variant,
            "task_types": {k: acc(v) for k, v in self.task_types.items()},
            "kinds": {k: acc(v) for k, v in self.kinds.items()},
            "proactive": {
                k: {
                    "total": p.total,
                    "answered": p.answered,
                    "time_correct": p.time_correct,
                    "time_accuracy": p.time_accuracy,
                    "answer_correct": p.answer_correct,
                    "answer_accuracy": p.answer_accuracy,
                    "within_s": {f"{tol:g}": share for tol, share in p.curve().items()},
                    "mean_abs_error_s": p.mean_abs_error_s,
                }
                for k, p in self.proactive.items()
            },
        }


def letter_correct(response: str | None, answer: str, *, variant: str = "official") -> bool | None:
    """Official: the reply's first character is the answer (None when there is no reply, i.e. not counted).

    Strict: the first standalone option letter (A-H) is the answer; no reply counts as wrong.
    """
    if variant == "strict":
        m = _STRICT_LETTER.search(response or "")
        return m is not None and m.group(1) == answer
    if not response:
        return None
    return response[0] == answer


def proactive_timing_correct(answer_time: float | None, ground_truth_time: float, tolerance_s: float = 2.0) -> bool:
    """The answer came within ``tolerance_s`` seconds of the ground-truth time (both ends included)."""
    return answer_time is not None and -tolerance_s <= answer_time - ground_truth_time <= tolerance_s


def score_proactive(
    results: Sequence[StreamingResult], tolerances: Sequence[float] = DEFAULT_TOLERANCES
) -> ProactiveScore:
    """Timing / answer correctness (2 s rule), tolerance curve and mean timing error of proactive results."""
    time_ok = answer_ok = answered = 0
    within = dict.fromkeys(tolerances, 0)
    errors = []
    for r in results:
        gt = float(r.ground_truth_time or 0)
        if r.answer_time is not None:
            answered += 1
            errors.append(abs(r.answer_time - gt))
            for tol in tolerances:
                within[tol] += proactive_timing_correct(r.answer_time, gt, tol)
        if proactive_timing_correct(r.answer_time, gt, PROACTIVE_TOLERANCE_S):
            time_ok += 1
            answer_ok += int((r.ground_truth_output or "") in (r.response or ""))
    mean_error = sum(errors) / len(errors) if errors else None
    return ProactiveScore(len(results), answered, time_ok, answer_ok, within, mean_error)


def score_results(
    results: Sequence[StreamingResult],
    *,
    variant: str = "official",
    tolerances: Sequence[float] = DEFAULT_TOLERANCES,
) -> StreamingScore:
    """Letter accuracy per task type and kind; proactive timing and answers per task type."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown scoring variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    task_types: dict[str, Accuracy] = {}
    kinds: dict[str, Accuracy] = {}
    proactive: dict[str, list[StreamingResult]] = {}
    for r in results:
        if r.is_proactive:
            proactive.setdefault(r.task_type, []).append(r)
            continue
        ok = letter_correct(r.response, r.answer or "", variant=variant)
        task_types[r.task_type] = task_types.get(r.task_type, Accuracy()).add(ok)
        kinds[r.kind] = kinds.get(r.kind, Accuracy()).add(ok)
    unanswered = sum(a.unanswered for a in kinds.values())
    if unanswered:
        log.warning("%d multiple-choice results have no reply; left out of the counts", unanswered)
    return StreamingScore(
        variant=variant,
        task_types=task_types,
        kinds=kinds,
        proactive={t: score_proactive(rs, tolerances) for t, rs in proactive.items()},
    )
