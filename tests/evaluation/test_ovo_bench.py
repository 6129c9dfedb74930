"""OVO-Bench: the real annotation sample loads, queries expand as the benchmark asks them, and our scorer
reproduces the benchmark's own numbers for LLaVA-OneVision's result files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from evaluation.bench_format import BenchmarkFormatError
from evaluation.ovo_bench import (
    CrrItem,
    MultipleChoiceItem,
    RecItem,
    SsrItem,
    expand_queries,
    forward_record,
    load_annotations,
    load_result_paths,
    load_results,
    parse_annotations,
    score_mc_official,
    score_mc_strict,
    score_rec_official,
    score_rec_strict,
    score_results,
    score_yes_no_official,
    score_yes_no_strict,
    stats,
    to_official,
    write_official,
)


@pytest.fixture(scope="module")
def ovo_dir(shared_data: Path) -> Path:
    return shared_data / "ovo-bench"


@pytest.fixture(scope="module")
def anno_path(ovo_dir: Path) -> Path:
    return ovo_dir / "ovo_bench_subset.json"


@pytest.fixture(scope="module")
def results_dir(ovo_dir: Path) -> Path:
    return ovo_dir / "results_LLaVA_OneVision"


@pytest.fixture(scope="module")
def items(anno_path: Path) -> list:
    return load_annotations(anno_path)


def _write(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc))
    return path


def _results_doc(backward=(), realtime=(), forward=()) -> dict:
    return {"backward": list(backward), "realtime": list(realtime), "forward": list(forward)}


def _mc(task: str = "EPM", response: object = "B", gt: str = "B") -> dict:
    return {
        "id": 1,
        "video": "v.mp4",
        "task": task,
        "question": "q?",
        "response": response,
        "ground_truth": gt,
    }


# ----------------------------------------------------------------------------------------------------
# Annotation
# ----------------------------------------------------------------------------------------------------


def test_every_sample_record_loads_typed(anno_path: Path, items: list) -> None:
    raw = json.loads(anno_path.read_text())
    assert len(items) == len(raw) == 24
    assert [it.id for it in items] == [r["id"] for r in raw]
    kinds = {type(it).__name__ for it in items}
    assert kinds == {"MultipleChoiceItem", "RecItem", "SsrItem", "CrrItem"}
    first = items[0]
    assert isinstance(first, MultipleChoiceItem)
    assert (first.id, first.task, first.category, first.realtime, first.gt) == (8, "EPM", "backward", 7.0, 3)
    assert first.options == ("two", "three", "four", "five", "six")
    assert first.ground_truth == "D" and first.answer == "five"
    for it, record in zip(items, raw, strict=True):
        assert it.raw == record  # loaded unchanged
    rec = next(it for it in items if isinstance(it, RecItem))
    assert (rec.id, rec.activity, rec.start_times, rec.end_times) == (
        1560,
        "opening something",
        (1.0,),
        (4.0,),
    )
    assert [(p.realtime, p.count) for p in rec.polls] == [(14.0, 1), (22.0, 1)]
    ssr = next(it for it in items if isinstance(it, SsrItem))
    assert ssr.tutorial == "MakeSlimeWithGlue" and len(ssr.all_steps) == 3 and len(ssr.polls) == 13
    crr = next(it for it in items if isinstance(it, CrrItem))
    assert (crr.ask_time, crr.clue_time) == (28.0, 40.0)
    assert [p.type for p in crr.polls] == [0, 0, 1, 1, 1]


def test_stats_counts_items_and_queries_exactly(items: list) -> None:
    st = stats(items)
    for task in ("EPM", "ASI", "HLD", "OCR", "ACR", "ATR", "STU", "FPD", "OJR"):
        assert (st.tasks[task].items, st.tasks[task].queries) == (2, 2)
    assert (st.tasks["REC"].items, st.tasks["REC"].queries) == (2, 5)
    assert (st.tasks["SSR"].items, st.tasks["SSR"].queries) == (2, 26)
    assert (st.tasks["CRR"].items, st.tasks["CRR"].queries) == (2, 10)
    assert {c: (v.items, v.queries) for c, v in st.categories.items()} == {
        "backward": (6, 6),
        "realtime": (12, 12),
        "forward": (6, 41),
    }
    assert (st.total.items, st.total.queries) == (24, 59)
    assert st.videos == 22
    assert st.max_ask_time == 149
    assert len(expand_queries(items)) == 59


def test_queries_ask_at_ceil_of_realtime_with_the_benchmark_prompts(items: list) -> None:
    queries = expand_queries(items)
    by_key = {q.key: q for q in queries}
    assert len(by_key) == len(queries)
    assert (by_key["1128"].realtime, by_key["1128"].ask_time) == (9.23, 10)
    assert by_key["1117"].ask_time == 1  # realtime 0.03
    assert by_key["8"].ask_time == 7
    assert by_key["1560.1"].ask_time == 22 and by_key["1560.1"].expected == "1"
    assert by_key["8"].prompt == (
        "\n"
        "                Question: How many poker cards did I hold pick?\n"
        "                Options:\n"
        "                A. two; B. three; C. four; D. five; E. six;\n"
        "                Respond only with the letter corresponding to your chosen option (e.g., A, B, C). \n"
        "                Do not include any additional text or explanation in your response.\n"
        "            "
    )
    assert by_key["8"].expected == "D" and by_key["8"].category == "backward"
    assert by_key["1454"].category == "realtime"
    rec = by_key["1631.0"]
    assert rec.prompt.startswith(" \n                You're watching a video in which people may perform")
    assert "Now, answer the following question: How many times did they soccer penalty?\n" in rec.prompt
    ssr = by_key["1546.3"]
    assert "\n                mix the raw materials\n" in ssr.prompt and ssr.expected == "No"
    assert by_key["1546.0"].expected == "Yes"
    crr = by_key["1492.2"]
    assert "\n                Three men wearing black coat are walking fast" in crr.prompt
    assert (crr.ask_time, crr.expected, crr.category) == (42, "Yes", "forward")
    assert by_key["1492.0"].expected == "No"
    assert by_key["8"].video_path("/data/src_videos") == Path(
        "/data/src_videos/Ego4D/clips/534d9bf8-bdc5-4236-8dba-dd7b894218d2.mp4"
    )


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r[0].pop("gt"), "gt"),
        (lambda r: r[0].__setitem__("options", "two, three"), "options"),
        (lambda r: r[0].__setitem__("realtime", "7"), "realtime"),
        (lambda r: r[0].__setitem__("task", "XYZ"), "task"),
        (lambda r: r[0].__setitem__("gt", 9), "gt"),
        (lambda r: r[-1]["test_info"][0].pop("count"), "count"),
        (lambda r: r[-3]["test_info"][0].__setitem__("type", 2), "type"),
        (lambda r: r[-5].__setitem__("test_info", []), "test_info"),
    ],
)
def test_malformed_annotation_names_the_field(anno_path: Path, tmp_path: Path, mutate, field: str) -> None:
    records = json.loads(anno_path.read_text())
    mutate(records)
    bad = _write(tmp_path / "anno.json", records)
    with pytest.raises(BenchmarkFormatError, match=f"field '{field}'") as info:
        load_annotations(bad)
    assert info.value.path == str(bad)
    assert info.value.field == field


def test_annotation_must_be_a_list_of_objects(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkFormatError, match="expected a JSON list"):
        load_annotations(_write(tmp_path / "a.json", {"items": []}))
    with pytest.raises(BenchmarkFormatError, match="record 0: expected a JSON object, got string"):
        parse_annotations(["EPM"])
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(BenchmarkFormatError, match="empty"):
        load_annotations(tmp_path / "empty.json")
    (tmp_path / "broken.json").write_text('[{"id": 1,')
    with pytest.raises(BenchmarkFormatError, match="not valid JSON"):
        load_annotations(tmp_path / "broken.json")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_annotations(tmp_path / "absent.json")


# ----------------------------------------------------------------------------------------------------
# Official scoring
# ----------------------------------------------------------------------------------------------------


def test_llava_onevision_scores_reproduce_the_official_scorer(results_dir: Path) -> None:
    expected = json.loads((results_dir / "expected_official_scores.json").read_text())
    results = load_result_paths([results_dir])
    assert len(results.sources) == 6
    score = score_results(results)
    assert score.variant == "official"
    checked = 0
    for key, value in expected.items():
        if key == "tasks":
            assert set(score.tasks) == set(value)
            for task, acc in value.items():
                assert f"{score.tasks[task].accuracy:.2f}" == f"{acc:.2f}", task
                checked += 1
        elif key == "total":
            assert f"{score.total:.2f}" == f"{value:.2f}"
            checked += 1
        else:
            assert f"{score.categories[key]:.2f}" == f"{value:.2f}", key
            checked += 1
    assert checked == len(expected["tasks"]) + len(expected) - 1
    summary = score.as_dict()
    assert summary["tasks"] == expected["tasks"]
    assert {k: summary[k] for k in expected if k != "tasks"} == {k: v for k, v in expected.items() if k != "tasks"}


def test_merging_files_equals_scoring_the_folder(results_dir: Path) -> None:
    files = sorted(p for p in results_dir.glob("LLaVA_OneVision_*.json"))
    merged = load_result_paths(files)
    folder = load_result_paths([results_dir])
    assert merged.query_count == folder.query_count == 3035
    assert score_results(merged).as_dict() == score_results(folder).as_dict()
    single = load_results(results_dir / "LLaVA_OneVision_SSR_CRR_offline.json")
    assert single.backward == () and single.realtime == () and len(single.forward) == 90


def test_official_rules_and_their_quirks() -> None:
    assert score_mc_official("B", "B") == 1
    assert score_mc_official("Based on the video, A", "B") == 1  # any occurrence of the letter counts
    assert score_mc_official("a", "A") == 0
    assert score_mc_official(None, "A") == 0
    assert score_rec_official("12", 12) == 1
    assert score_rec_official("1 or 2", 12) == 1  # all digits joined
    assert score_rec_official("3 times", 3) == 1
    assert score_rec_official("three", 3) == 0
    assert score_rec_official(None, 0) == 0
    assert score_yes_no_official("N", 0) == 1 and score_yes_no_official("Y", 1) == 1
    assert score_yes_no_official("Y", 0) == 0
    assert score_yes_no_official("Not sure", 0) == 1  # "No" is a substring
    assert score_yes_no_official("yes", 1) == 0  # case-sensitive
    assert score_yes_no_official("Yes, it is", 1) == 1
    assert score_yes_no_official(None, 1) == 0


def test_strict_variant_parses_the_first_answer() -> None:
    assert score_mc_strict("Based on the video, A", "B") == 0
    assert score_mc_strict("The answer is (B).", "B") == 1
    assert score_mc_strict("B. three", "B") == 1
    assert score_mc_strict("I think C", "C") == 1  # "I" is not an option letter
    assert score_mc_strict(None, "A") == 0
    assert score_rec_strict("1 or 2", 12) == 0
    assert score_rec_strict("2 times, maybe 3", 2) == 1
    assert score_yes_no_strict("yes", 1) == 1
    assert score_yes_no_strict("Not sure", 0) == 0
    assert score_yes_no_strict("No.", 0) == 1
    assert score_yes_no_strict("", 0) == 0


def test_strict_scores_are_labelled_and_can_differ(tmp_path: Path) -> None:
    doc = _results_doc(backward=[_mc(response="Based on the clip: C", gt="B"), _mc(response="B", gt="B")])
    path = _write(tmp_path / "r.json", doc)
    official = score_results(load_results(path))
    strict = score_results(load_results(path), variant="strict")
    assert (official.variant, official.tasks["EPM"].correct) == ("official", 2)
    assert (strict.variant, strict.tasks["EPM"].correct) == ("strict", 1)
    with pytest.raises(ValueError, match="unknown scoring variant"):
        score_results(load_results(path), variant="lenient")


def test_list_response_is_joined_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rec = {
        "id": 5,
        "task": "REC",
        "video": "v.mp4",
        "activity": "jump",
        "test_info": [{"realtime": 3, "count": 12, "response": ["1", "2"]}],
    }
    doc = _results_doc(backward=[_mc(response=["The answer", "is B"], gt="B")], forward=[rec])
    with caplog.at_level(logging.WARNING, logger="evaluation.bench_format"):
        results = load_results(_write(tmp_path / "r.json", doc))
    assert results.backward[0].response == "The answer is B"
    assert results.forward[0].polls[0].response == "1 2"
    assert sum("is a list of 2 strings; joined with spaces" in m for m in caplog.messages) == 2
    score = score_results(results)
    assert (score.tasks["EPM"].correct, score.tasks["REC"].correct) == (1, 1)


def test_missing_category_averages_the_present_ones(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    doc = _results_doc(backward=[_mc(response="A", gt="B"), _mc(task="HLD", response="B", gt="B")])
    with caplog.at_level(logging.WARNING, logger="evaluation.ovo_bench"):
        score = score_results(load_results(_write(tmp_path / "r.json", doc)))
    assert score.categories == {"backward": 50.0}
    assert score.total == 50.0
    assert any("no results for realtime, forward" in m for m in caplog.messages)


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (_results_doc(backward=[{k: v for k, v in _mc().items() if k != "response"}]), "response"),
        (_results_doc(backward=[{**_mc(), "ground_truth": 1}]), "ground_truth"),
        (_results_doc(realtime=[{**_mc(task="OCR"), "response": 3}]), "response"),
        (_results_doc(backward=[{**_mc(), "task": None}]), "task"),
        ({"backward": [], "realtime": []}, "forward"),
        ({"backward": {}, "realtime": [], "forward": []}, "backward"),
        (
            _results_doc(forward=[{"id": 1, "task": "SSR", "test_info": [{"realtime": 1, "response": "Yes"}]}]),
            "type",
        ),
        (
            _results_doc(forward=[{"id": 1, "task": "REC", "test_info": [{"realtime": 1, "count": 1}]}]),
            "response",
        ),
        (_results_doc(forward=[{"id": 1, "task": "EPM", "test_info": []}]), "task"),
        (_results_doc(backward=[_mc(task="CRR")]), "task"),
    ],
)
def test_malformed_result_file_names_the_field(tmp_path: Path, doc: dict, field: str) -> None:
    with pytest.raises(BenchmarkFormatError, match=f"field '{field}'") as info:
        load_results(_write(tmp_path / "r.json", doc))
    assert info.value.field == field
    assert str(tmp_path / "r.json") in str(info.value)


def test_result_file_that_is_not_results(tmp_path: Path, anno_path: Path) -> None:
    with pytest.raises(BenchmarkFormatError, match="expected an object"):
        load_results(anno_path)
    (tmp_path / "empty.json").write_text("  \n")
    with pytest.raises(BenchmarkFormatError, match="empty"):
        load_results(tmp_path / "empty.json")
    (tmp_path / "broken.json").write_text("{'backward': []}")
    with pytest.raises(BenchmarkFormatError, match="not valid JSON"):
        load_results(tmp_path / "broken.json")
    folder = tmp_path / "nothing"
    folder.mkdir()
    _write(folder / "summary.json", {"total": 1.0})
    with pytest.raises(BenchmarkFormatError, match="no OVO-Bench result files"):
        load_result_paths([folder])


# ----------------------------------------------------------------------------------------------------
# Writing our runs in the official format
# ----------------------------------------------------------------------------------------------------


def test_round_trip_through_the_official_format(items: list, tmp_path: Path) -> None:
    queries = expand_queries(items)
    first_of_task: set[str] = set()
    answers = []
    skipped = None
    for q in queries:
        if q.poll_index is None:  # multiple choice: right on the first item of a task, wrong on the second
            right = q.task not in first_of_task
            first_of_task.add(q.task)
            answers.append((q, q.expected if right else ("A" if q.expected != "A" else "B")))
        elif q.task == "REC":  # right on item 1560 (2 polls), wrong on 1631 (3 polls)
            answers.append((q, q.expected if q.item_id == 1560 else "100"))
        elif q.task == "SSR":  # all right except one poll left unanswered
            if skipped is None:
                skipped = q
                continue
            answers.append((q, q.expected))
        else:  # CRR: always "No"; 2 of 5 polls of each item are type 0
            answers.append((q, "No"))
    path = write_official(tmp_path / "ours" / "Vigil_all_offline.json", answers, video_prefix="data/src_videos/")
    doc = json.loads(path.read_text())
    assert [len(doc[c]) for c in ("backward", "realtime", "forward")] == [6, 12, 6]
    assert doc["backward"][0] == {
        "id": 8,
        "video": "data/src_videos/Ego4D/clips/534d9bf8-bdc5-4236-8dba-dd7b894218d2.mp4",
        "task": "EPM",
        "question": "How many poker cards did I hold pick?",
        "response": "D",
        "ground_truth": "D",
    }
    ssr = next(r for r in doc["forward"] if r["id"] == skipped.item_id)
    assert ssr["test_info"][skipped.poll_index]["response"] is None
    assert ssr["tutorial"] == "MakeSlimeWithGlue"  # annotation fields are kept, as the benchmark writes them

    score = score_results(load_results(path))
    for task in ("EPM", "ASI", "HLD", "OCR", "ACR", "ATR", "STU", "FPD", "OJR"):
        assert (score.tasks[task].correct, score.tasks[task].total) == (1, 2)
    assert (score.tasks["REC"].correct, score.tasks["REC"].total) == (2, 5)
    assert (score.tasks["SSR"].correct, score.tasks["SSR"].total) == (25, 26)
    assert (score.tasks["CRR"].correct, score.tasks["CRR"].total) == (4, 10)
    assert score.categories["backward"] == 50.0 and score.categories["realtime"] == 50.0
    forward = 100 * (2 / 5 + 25 / 26 + 4 / 10) / 3
    assert score.categories["forward"] == pytest.approx(forward, abs=1e-12)
    assert score.total == pytest.approx((50.0 + 50.0 + forward) / 3, abs=1e-12)
    assert score.total_all_tasks == pytest.approx(100 * (9 * 0.5 + 2 / 5 + 25 / 26 + 4 / 10) / 12, abs=1e-12)


def test_writer_refuses_inconsistent_answers(items: list) -> None:
    queries = expand_queries(items)
    with pytest.raises(ValueError, match="answered twice"):
        to_official([(queries[0], "A"), (queries[0], "B")])
    rec = next(it for it in items if isinstance(it, RecItem))
    with pytest.raises(ValueError, match="no poll index"):
        forward_record(rec, {7: "1"})
    record = forward_record(rec, {0: "1"})
    assert [e["response"] for e in record["test_info"]] == ["1", None]
    assert "response" not in rec.raw["test_info"][0]  # the loaded annotation is left untouched
