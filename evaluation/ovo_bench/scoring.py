"""OVO-Bench scoring: the official scorer reproduced, and a labelled strict variant."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from evaluation.ovo_bench.results import OvoResults
from evaluation.ovo_bench.tasks import CATEGORIES, VARIANTS, poll_answer

log = logging.getLogger(__name__)


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
    return int(poll_answer(poll_type) in response)


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
