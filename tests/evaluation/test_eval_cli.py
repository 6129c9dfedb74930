"""The ``eval`` command: readable tables, the official numbers, and one-line errors with exit code 2."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from evaluation.cli import format_table, register
from evaluation.streamingbench import load_questions, result_record, write_results
from serving.cli.commands import Commands


@pytest.fixture(scope="module")
def data(shared_data: Path) -> Path:
    return shared_data


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vigil")
    sub = parser.add_subparsers(dest="command", required=True)
    register(Commands(sub))
    args = parser.parse_args(argv)
    return args.func(args)


def test_every_subcommand_sets_func() -> None:
    parser = argparse.ArgumentParser(prog="vigil")
    register(Commands(parser.add_subparsers(dest="command", required=True)))
    for argv in (
        ["eval", "ovo", "stats", "--anno", "a.json"],
        ["eval", "ovo", "score", "r.json", "--strict", "--json", "o.json"],
        ["eval", "streamingbench", "stats", "--anno", "a.json", "b.json"],
        ["eval", "streamingbench", "score", "r.jsonl", "--model", "M"],
    ):
        assert callable(parser.parse_args(argv).func)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["eval", "ovo"])
    assert info.value.code == 2


def test_ovo_stats_prints_an_aligned_table(data: Path, capsys: pytest.CaptureFixture) -> None:
    assert run(["eval", "ovo", "stats", "--anno", str(data / "ovo-bench" / "ovo_bench_subset.json")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "22 videos, latest ask time 149 s" in out[0]
    assert out[1].split() == ["category", "task", "items", "queries"]
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in out[3:]}
    assert rows[("forward", "SSR")] == ["2", "26"]
    assert rows[("forward", "all")] == ["6", "41"]
    assert rows[("total", "24")] == ["59"]
    widths = {len(line) for line in out[1:] if not line.startswith("total")}
    assert len(widths) == 1  # right-aligned numbers end in the same column


def test_ovo_score_prints_and_writes_the_official_numbers(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = data / "ovo-bench" / "results_LLaVA_OneVision"
    expected = json.loads((folder / "expected_official_scores.json").read_text())
    out_json = tmp_path / "scores" / "llava.json"
    assert run(["eval", "ovo", "score", str(folder), "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "official scorer: 6 file(s), 3035 scored queries" in out
    for task, acc in expected["tasks"].items():
        assert any(line.split()[1:2] == [task] and line.endswith(f"{acc:.2f}") for line in out.splitlines()), task
    for cat in ("backward", "realtime", "forward"):
        assert [cat, "avg", f"{expected[cat]:.2f}"] in [line.split() for line in out.splitlines()]
    assert f"Total Avg. (mean of category scores): {expected['total']:.2f}" in out
    written = json.loads(out_json.read_text())
    assert written["variant"] == "official"
    assert written["tasks"] == expected["tasks"]
    for key in ("backward", "realtime", "forward", "total"):
        assert written[key] == expected[key]
    assert len(written["sources"]) == 6


def test_ovo_score_strict_is_labelled(data: Path, capsys: pytest.CaptureFixture) -> None:
    path = data / "ovo-bench" / "results_LLaVA_OneVision" / "LLaVA_OneVision_EPM_offline.json"
    assert run(["eval", "ovo", "score", str(path), "--strict"]) == 0
    out = capsys.readouterr().out
    assert "strict parse (not the official numbers)" in out
    assert "backward  EPM       161    297  54.21" in out


def _assert_one_line_error(capsys: pytest.CaptureFixture, *needles: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("vigil eval: error:")]
    assert len(errors) == 1, err
    for needle in needles:
        assert needle in errors[0]


def test_ovo_errors_print_one_line_and_return_2(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run(["eval", "ovo", "score", str(tmp_path / "absent.json")]) == 2
    _assert_one_line_error(capsys, "absent.json: no such file")
    (tmp_path / "broken.json").write_text('{"backward": [')
    assert run(["eval", "ovo", "score", str(tmp_path / "broken.json")]) == 2
    _assert_one_line_error(capsys, "not valid JSON")
    assert run(["eval", "ovo", "score", str(data / "ovo-bench" / "ovo_bench_subset.json")]) == 2
    _assert_one_line_error(capsys, 'expected an object {"backward"')
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"backward": [{"task": "EPM", "ground_truth": "A"}], "realtime": [], "forward": []}))
    assert run(["eval", "ovo", "score", str(bad)]) == 2
    _assert_one_line_error(capsys, "record backward[0]: field 'response': missing")
    (tmp_path / "empty.json").write_text("")
    assert run(["eval", "ovo", "stats", "--anno", str(tmp_path / "empty.json")]) == 2
    _assert_one_line_error(capsys, "empty")


def test_streamingbench_stats(data: Path, capsys: pytest.CaptureFixture) -> None:
    files = [str(p) for p in sorted((data / "streamingbench").glob("questions_*_sample.json"))]
    assert run(["eval", "streamingbench", "stats", "--anno", *files]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "StreamingBench: 16 questions in 16 segments, 4 videos, latest ask time 607 s"
    rows = {line[:9].strip(): line.split()[-1] for line in out[3:]}
    assert rows == {"omni": "3", "proactive": "4", "real": "4", "sqa": "5", "total": "16"}


def test_streamingbench_score_our_results(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    real = load_questions(data / "streamingbench" / "questions_real_sample.json")
    pro = load_questions(data / "streamingbench" / "questions_proactive_sample.json")
    records = [result_record(q, r) for q, r in zip(real, ["C", "B", "B", "A"], strict=True)]
    records.append(result_record(pro[0], "3", answer_time=27.0))
    records.append(result_record(pro[1], "20", answer_time=181.0))
    path = write_results(tmp_path / "run.jsonl", records)
    out_json = tmp_path / "sb.json"
    assert run(["eval", "streamingbench", "score", str(path), "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "Clips Summarize        2      4           0       0.5  50.00" in out
    assert "total (real)           2      4           0       0.5  50.00" in out
    assert "timing within: <=1s 0.00%, <=2s 50.00%, <=3s 100.00%" in out
    written = json.loads(out_json.read_text())
    assert written["kinds"]["real"] == {"total": 4, "correct": 2, "accuracy": 0.5, "unanswered": 0}
    assert written["proactive"]["Proactive Output"]["time_correct"] == 1
    assert written["proactive"]["Proactive Output"]["within_s"]["3"] == 1.0


def test_streamingbench_errors_return_2(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    questions = data / "streamingbench" / "questions_real_sample.json"
    assert run(["eval", "streamingbench", "score", str(questions)]) == 2
    _assert_one_line_error(capsys, "--model")
    (tmp_path / "r.jsonl").write_text('{"key": "k", "kind": "real"}\n')
    assert run(["eval", "streamingbench", "score", str(tmp_path / "r.jsonl")]) == 2
    _assert_one_line_error(capsys, "record 0: field 'task_type': missing")
    assert run(["eval", "streamingbench", "stats", "--anno", str(tmp_path / "absent.json")]) == 2
    _assert_one_line_error(capsys, "no such file")


def test_format_table_aligns_text_left_and_numbers_right() -> None:
    table = format_table(["name", "n", "acc"], [["a", 1, "50.00"], ["long name", 123, None]])
    assert table.splitlines() == [
        "name         n    acc",
        "---------  ---  -----",
        "a            1  50.00",
        "long name  123",
    ]
