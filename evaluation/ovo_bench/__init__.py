"""OVO-Bench: annotation loader, query expansion with the benchmark's prompts, result files and scoring.

The parts: ``tasks`` (tasks, categories, prompts), ``annotations`` (items, queries, counts), ``results``
(reading result files), ``scoring`` (official and strict), ``official`` (writing our runs); every public name is
importable from ``evaluation.ovo_bench``.

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

from evaluation.ovo_bench.annotations import (
    Count,
    CrrItem,
    CrrPoll,
    MultipleChoiceItem,
    OvoItem,
    OvoQuery,
    OvoStats,
    RecItem,
    RecPoll,
    SsrItem,
    SsrPoll,
    expand_queries,
    load_annotations,
    parse_annotations,
    stats,
)
from evaluation.ovo_bench.official import forward_record, multiple_choice_record, to_official, write_official
from evaluation.ovo_bench.results import (
    ForwardPollResult,
    ForwardResult,
    MultipleChoiceResult,
    OvoResults,
    load_result_paths,
    load_results,
    parse_results,
)
from evaluation.ovo_bench.scoring import (
    OvoScore,
    TaskScore,
    score_mc_official,
    score_mc_strict,
    score_rec_official,
    score_rec_strict,
    score_results,
    score_yes_no_official,
    score_yes_no_strict,
)
from evaluation.ovo_bench.tasks import (
    CATEGORIES,
    FORWARD_TASKS,
    MULTIPLE_CHOICE_TASKS,
    TASK_CATEGORY,
    VARIANTS,
    crr_prompt,
    multiple_choice_prompt,
    rec_prompt,
    ssr_prompt,
)

__all__ = [
    "CATEGORIES",
    "FORWARD_TASKS",
    "MULTIPLE_CHOICE_TASKS",
    "TASK_CATEGORY",
    "VARIANTS",
    "Count",
    "CrrItem",
    "CrrPoll",
    "ForwardPollResult",
    "ForwardResult",
    "MultipleChoiceItem",
    "MultipleChoiceResult",
    "OvoItem",
    "OvoQuery",
    "OvoResults",
    "OvoScore",
    "OvoStats",
    "RecItem",
    "RecPoll",
    "SsrItem",
    "SsrPoll",
    "TaskScore",
    "crr_prompt",
    "expand_queries",
    "forward_record",
    "load_annotations",
    "load_result_paths",
    "load_results",
    "multiple_choice_prompt",
    "multiple_choice_record",
    "parse_annotations",
    "parse_results",
    "rec_prompt",
    "score_mc_official",
    "score_mc_strict",
    "score_rec_official",
    "score_rec_strict",
    "score_results",
    "score_yes_no_official",
    "score_yes_no_strict",
    "ssr_prompt",
    "stats",
    "to_official",
    "write_official",
]
