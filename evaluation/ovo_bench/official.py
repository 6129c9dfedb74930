"""Our runs written as OVO-Bench result files (the official format)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from evaluation.ovo_bench.annotations import CrrItem, MultipleChoiceItem, OvoItem, OvoQuery, RecItem, SsrItem
from evaluation.ovo_bench.tasks import CATEGORIES


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
