"""Timing metrics for proactive triggers against ground-truth event times."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TimingScore:
    """Precision / recall / F1 of triggers within a tolerance, time error of matches, false alarms per minute."""

    tolerance_s: float
    true_positives: int
    false_positives: int
    false_negatives: int
    precision: float
    recall: float
    f1: float
    mean_abs_time_diff_s: float | None
    false_alarms_per_min: float


def score_triggers(
    predicted: Sequence[float], truth: Sequence[float], tolerance_s: float, duration_s: float
) -> TimingScore:
    """Match each true event to at most one trigger within ``tolerance_s`` (closest first, one-to-one)."""
    if tolerance_s < 0 or duration_s <= 0:
        raise ValueError("tolerance must be >= 0 and duration positive")
    pairs = sorted(
        (abs(p - g), i, j) for i, p in enumerate(predicted) for j, g in enumerate(truth) if abs(p - g) <= tolerance_s
    )
    used_p: set[int] = set()
    used_g: set[int] = set()
    diffs = []
    for d, i, j in pairs:
        if i in used_p or j in used_g:
            continue
        used_p.add(i)
        used_g.add(j)
        diffs.append(d)
    tp = len(diffs)
    fp = len(predicted) - tp
    fn = len(truth) - tp
    precision = tp / len(predicted) if predicted else 0.0
    recall = tp / len(truth) if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return TimingScore(
        tolerance_s, tp, fp, fn, precision, recall, f1, sum(diffs) / tp if tp else None, fp / (duration_s / 60.0)
    )
