"""StreamingBench: the real question samples load, prompts match the harness, and scoring follows count.py."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from evaluation.bench_format import BenchmarkFormatError
from evaluation.streamingbench import (
    letter_correct,
    load_questions,
    load_results,
    parse_questions,
    parse_time_stamp,
    proactive_timing_correct,
    result_record,
    score_results,
    stats,
    write_results,
)


@pytest.fixture(scope="module")
def sb_dir(shared_data: Path) -> Path:
    return shared_data / "streamingbench"


@pytest.fixture(scope="module")
def questions(sb_dir: Path) -> dict[str, list]:
    return {
        kind: load_questions(sb_dir / f"questions_{kind}_sample.json") for kind in ("real", "omni", "sqa", "proactive")
    }


def test_every_sample_question_loads(questions: dict[str, list], sb_dir: Path) -> None:
    assert {k: len(v) for k, v in questions.items()} == {"real": 4, "omni": 3, "sqa": 5, "proactive": 4}
    for kind, qs in questions.items():
        assert {q.kind for q in qs} == {kind}
        assert len({q.key for q in qs}) == len(qs)
    real = questions["real"]
    assert real[0].key == "./videos/sample_348_real.mp4@00:00:31#0"
    assert (real[0].time_stamp, real[0].ask_time, real[0].answer) == ("00:00:31", 31, "C")
    assert real[1].ask_time == 206  # 00:03:26
    assert real[0].task_type == "Clips Summarize" and real[0].required_ability == "episodic memory"
    assert real[0].segment_time == "[0:00:00 - 0:00:10]" and real[0].video_categories == "preparation_of_meals"
    assert real[0].options[0].startswith("A. The individual organized")
    assert not real[0].is_proactive and real[0].audio_path is None
    raw = json.loads((sb_dir / "questions_real_sample.json").read_text())
    assert [q.raw for q in real] == [seg["questions"][0] for seg in raw]


def test_sqa_is_a_list_of_per_video_lists_without_letter_prefixes(questions: dict[str, list]) -> None:
    sqa = questions["sqa"]
    assert [q.video_index for q in sqa] == [0] * 5
    assert [q.segment_index for q in sqa] == [0, 1, 2, 3, 4]
    assert [q.ask_time for q in sqa] == [36, 182, 298, 487, 597]
    assert sqa[0].options == ("Wang chuqin.", "Fan Z.D.", "Xu xin.", "Ma Lin.")
    assert sqa[0].lettered_options == ("A. Wang chuqin.", "B. Fan Z.D.", "C. Xu xin.", "D. Ma Lin.")
    prompt = sqa[2].prompt(sqa[:2])
    assert (
        "At timestamp 00:00:36, the following question and answer occurred: "
        "Question: Who is preparing to serve the ball now?; "
        "Options: A. Wang chuqin., B. Fan Z.D., C. Xu xin., D. Ma Lin.; Answer: A; " in prompt
    )
    assert prompt.endswith("Options:\nA. 8.\nB. 7.\nC. 5.\nD. 9.\n\nThe best option is:")
    assert "contextual information" not in sqa[0].prompt()


def test_proactive_questions_carry_ground_truth_time_and_output(questions: dict[str, list]) -> None:
    pro = questions["proactive"]
    assert [(q.ask_time, q.ground_truth_time, q.ground_truth_output) for q in pro] == [
        (20, 29, "3"),
        (170, 178, "20"),
        (340, 347, "40"),
        (527, 532, "73"),
    ]
    assert all(q.is_proactive and q.options == () and q.answer is None for q in pro)
    assert 'Is it the right time to output "3"? You can only answer yes or no.\n\nThe answer is:\n' in pro[0].prompt()


def test_multiple_choice_prompt_is_the_harness_prompt(questions: dict[str, list]) -> None:
    prompt = questions["omni"][0].prompt()
    assert prompt.startswith("You are an advanced video question-answering AI assistant. You have been provided")
    assert "\n\nQuestion: What's on the green table now?\n\nOptions:\nA. There is a pink card" in prompt
    assert prompt.endswith("with two black lines on it.\n\nThe best option is:")


def test_stats_per_task_type(questions: dict[str, list]) -> None:
    st = stats([q for qs in questions.values() for q in qs])
    assert st.kinds == {"real": 4, "omni": 3, "sqa": 5, "proactive": 4}
    assert st.task_types == {
        "Clips Summarize": 4,
        "Misleading Context Understanding": 3,
        "Sequential Question Answering": 5,
        "Proactive Output": 4,
    }
    assert (st.questions, st.segments, st.videos, st.max_ask_time) == (16, 16, 4, 607)


def test_kind_is_read_from_the_structure_when_the_name_does_not_say(sb_dir: Path, tmp_path: Path) -> None:
    for kind in ("sqa", "proactive", "real"):
        copy = tmp_path / f"renamed_{kind[:2]}.json"
        copy.write_text((sb_dir / f"questions_{kind}_sample.json").read_text())
        assert {q.kind for q in load_questions(copy)} == {kind}
    assert {q.kind for q in load_questions(tmp_path / "renamed_re.json", "omni")} == {"omni"}
    named = tmp_path / "omni_output_MyModel.json"  # the harness names its outputs {kind}_output_{model}.json
    named.write_text((sb_dir / "questions_real_sample.json").read_text())
    assert {q.kind for q in load_questions(named)} == {"omni"}


def test_stream_variant_adds_audio_path(sb_dir: Path, tmp_path: Path) -> None:
    data = json.loads((sb_dir / "questions_real_sample.json").read_text())
    for seg in data:
        for q in seg["questions"]:
            q["audio_path"] = "./audio/" + q["time_stamp"].replace(":", "") + ".wav"
    path = tmp_path / "questions_real_stream.json"
    path.write_text(json.dumps(data))
    loaded = load_questions(path)
    assert loaded[0].kind == "real" and loaded[0].audio_path == "./audio/000031.wav"


def test_repeated_video_and_time_get_distinct_keys() -> None:
    seg = {"video_path": "v.mp4", "questions": [_mc_question("00:01:00"), _mc_question("00:01:00")]}
    qs = parse_questions([seg, {"video_path": "v.mp4", "questions": [_mc_question("00:01:00")]}], "real")
    assert [q.key for q in qs] == ["v.mp4@00:01:00#0", "v.mp4@00:01:00#1", "v.mp4@00:01:00#2"]


def _mc_question(time_stamp: str = "00:00:10", **over: object) -> dict:
    q = {
        "task_type": "Object Perception",
        "question": "What?",
        "time_stamp": time_stamp,
        "answer": "A",
        "options": ["A. x", "B. y", "C. z", "D. w"],
        "required_ability": "perception",
    }
    q.update(over)
    return q


@pytest.mark.parametrize(
    ("question", "field"),
    [
        ({k: v for k, v in _mc_question().items() if k != "time_stamp"}, "time_stamp"),
        (_mc_question(time_stamp="ten past"), "time_stamp"),
        (_mc_question(options="A. x"), "options"),
        (_mc_question(options=["A. x", "B. y"]), "options"),
        (_mc_question(answer=1), "answer"),
        (_mc_question(task_type=None), "task_type"),
    ],
)
def test_malformed_question_names_the_field(question: dict, field: str) -> None:
    with pytest.raises(BenchmarkFormatError, match=f"record 0.questions\\[0\\]: field '{field}'") as info:
        parse_questions([{"video_path": "v.mp4", "questions": [question]}], "real", "q.json")
    assert info.value.field == field and info.value.path == "q.json"


def test_malformed_question_files(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkFormatError, match="field 'video_path': missing"):
        parse_questions([{"questions": []}], "real")
    with pytest.raises(BenchmarkFormatError, match="field 'ground_truth_time_stamp': missing"):
        parse_questions([{"video_path": "v", "questions": [_mc_question()]}], "proactive")
    with pytest.raises(BenchmarkFormatError, match="one list of segments per video"):
        parse_questions([{"video_path": "v", "questions": []}], "sqa")
    with pytest.raises(BenchmarkFormatError, match="expected a JSON list of segments, got object"):
        parse_questions({"questions": []}, "real")
    with pytest.raises(ValueError, match="unknown StreamingBench kind"):
        parse_questions([], "live")
    (tmp_path / "questions_real.json").write_text("")
    with pytest.raises(BenchmarkFormatError, match="empty"):
        load_questions(tmp_path / "questions_real.json")


def test_time_stamps_convert_as_the_benchmark_does() -> None:
    assert parse_time_stamp("00:00:31") == 31
    assert parse_time_stamp("01:02:03") == 3723
    assert parse_time_stamp("02:05") == 125


# ----------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------


def test_letter_accuracy_on_hand_made_responses(
    questions: dict[str, list], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    real, omni = questions["real"], questions["omni"]
    assert [q.answer for q in real] == ["C", "A", "B", "B"]
    replies = ["C", "A. The individual prepared a burger", " B", None]  # " B": first character is a space
    records = [result_record(q, r) for q, r in zip(real, replies, strict=True)]
    records += [result_record(q, q.answer) for q in omni]
    path = write_results(tmp_path / "run.jsonl", records)
    results = load_results(path)
    assert len(results) == 7 and results[3].response is None
    with caplog.at_level(logging.WARNING, logger="evaluation.streamingbench"):
        official = score_results(results)
    assert any("1 multiple-choice results have no reply" in m for m in caplog.messages)
    clips = official.task_types["Clips Summarize"]
    assert (clips.correct, clips.total, clips.unanswered) == (2, 3, 1)
    assert clips.accuracy == 2 / 3
    mislead = official.task_types["Misleading Context Understanding"]
    assert (mislead.correct, mislead.total, mislead.accuracy) == (3, 3, 1.0)
    assert (official.kinds["real"].correct, official.kinds["real"].total) == (2, 3)
    assert (official.kinds["omni"].correct, official.kinds["omni"].total) == (3, 3)
    assert official.proactive == {}

    strict = score_results(results, variant="strict")
    clips = strict.task_types["Clips Summarize"]
    assert (clips.correct, clips.total, clips.unanswered, clips.accuracy) == (3, 4, 0, 0.75)
    as_dict = official.as_dict()
    assert as_dict["task_types"]["Clips Summarize"] == {
        "total": 3,
        "correct": 2,
        "accuracy": 2 / 3,
        "unanswered": 1,
    }


def test_letter_rules() -> None:
    assert letter_correct("B", "B") is True
    assert letter_correct("b", "B") is False
    assert letter_correct("The answer is B", "B") is False  # official: first character only
    assert letter_correct("", "B") is None and letter_correct(None, "B") is None
    assert letter_correct("The answer is B", "B", variant="strict") is True
    assert letter_correct(None, "B", variant="strict") is False


def test_proactive_timing_is_correct_within_two_seconds_inclusive(questions: dict[str, list], tmp_path: Path) -> None:
    pro = questions["proactive"]  # ground truth at 29, 178, 347, 532 s
    records = [
        result_record(pro[0], "It shows 3 now", answer_time=31.0),  # +2.0 s: on the boundary, counts
        result_record(pro[1], "20", answer_time=175.9),  # -2.1 s: too early
        result_record(pro[2], "forty", answer_time=345.0),  # -2.0 s: timing right, output "40" missing
        result_record(pro[3], None, answer_time=None),  # never answered
    ]
    results = load_results(write_results(tmp_path / "pro.jsonl", records))
    score = score_results(results).proactive["Proactive Output"]
    assert (score.total, score.answered, score.time_correct, score.answer_correct) == (4, 3, 2, 1)
    assert (score.time_accuracy, score.answer_accuracy) == (0.5, 0.25)
    assert score.within == {1.0: 0, 2.0: 2, 3.0: 3, 4.0: 3, 5.0: 3}
    assert score.curve() == {1.0: 0.0, 2.0: 0.5, 3.0: 0.75, 4.0: 0.75, 5.0: 0.75}
    assert score.mean_abs_error_s == pytest.approx((2.0 + 2.1 + 2.0) / 3)
    assert proactive_timing_correct(27.0, 29) and proactive_timing_correct(31, 29)
    assert not proactive_timing_correct(31.01, 29) and not proactive_timing_correct(None, 29)
    with pytest.raises(ValueError, match="answer_time is for proactive"):
        result_record(questions["real"][0], "C", answer_time=3.0)


def test_benchmark_output_files_score_like_count_py(sb_dir: Path, tmp_path: Path) -> None:
    real = json.loads((sb_dir / "questions_real_sample.json").read_text())
    for seg, reply in zip(real, ["C", "B", "B", None], strict=True):  # the last one was never asked
        if reply is not None:
            seg["questions"][0]["MyModel"] = reply
    (tmp_path / "real_output_MyModel.json").write_text(json.dumps(real))
    results = load_results(tmp_path / "real_output_MyModel.json", model="MyModel")
    assert len(results) == 3
    score = score_results(results)
    assert (score.kinds["real"].correct, score.kinds["real"].total) == (2, 3)

    pro = json.loads((sb_dir / "questions_proactive_sample.json").read_text())
    pro[0]["questions"][0]["MyModel"] = {
        "answered": 30,
        "dialog_history": [
            {"role": "user", "content": "...", "time": 21, "cost": 0.1},
            {"role": "assistant", "content": "no", "time": 21, "cost": 0.1},
            {"role": "user", "content": "...", "time": 30, "cost": 0.1},
            {"role": "assistant", "content": "The score is 3", "time": 30, "cost": 0.1},
        ],
    }
    pro[1]["questions"][0]["MyModel"] = {
        "answered": False,
        "dialog_history": [{"role": "assistant", "content": "no", "time": 182, "cost": 0.1}],
    }
    (tmp_path / "proactive_output.json").write_text(json.dumps(pro))
    results = load_results(tmp_path / "proactive_output.json", model="MyModel")
    assert [(r.answer_time, r.response) for r in results] == [(30.0, "The score is 3"), (182.0, "no")]
    p = score_results(results).proactive["Proactive Output"]
    assert (p.total, p.time_correct, p.answer_correct) == (2, 1, 1)

    with pytest.raises(BenchmarkFormatError, match="--model"):
        load_results(tmp_path / "proactive_output.json")
    with pytest.raises(BenchmarkFormatError, match="no question carries a reply under the model name 'Other'"):
        load_results(tmp_path / "proactive_output.json", model="Other")
    pro[0]["questions"][0]["MyModel"]["dialog_history"] = []
    (tmp_path / "proactive_output.json").write_text(json.dumps(pro))
    with pytest.raises(BenchmarkFormatError, match="field 'dialog_history': is empty"):
        load_results(tmp_path / "proactive_output.json", model="MyModel")


def test_list_reply_is_joined_with_a_warning(
    questions: dict[str, list], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    record = result_record(questions["real"][0], None)
    record["response"] = ["C", "because ..."]
    path = write_results(tmp_path / "r.jsonl", [record])
    with caplog.at_level(logging.WARNING, logger="evaluation.bench_format"):
        results = load_results(path)
    assert results[0].response == "C because ..."
    assert any("joined with spaces" in m for m in caplog.messages)


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ({"kind": "real", "task_type": "t", "answer": "A", "response": "A"}, "key"),
        ({"key": "k", "kind": "real", "task_type": "t", "response": "A"}, "answer"),
        ({"key": "k", "kind": "live", "task_type": "t", "answer": "A", "response": "A"}, "kind"),
        ({"key": "k", "kind": "real", "task_type": "t", "answer": "A", "response": 1}, "response"),
        (
            {
                "key": "k",
                "kind": "proactive",
                "task_type": "t",
                "ground_truth_time": 3,
                "ground_truth_output": "x",
                "response": None,
            },
            "answer_time",
        ),
        (
            {
                "key": "k",
                "kind": "proactive",
                "task_type": "t",
                "ground_truth_time": "3",
                "answer_time": 3,
                "response": "x",
            },
            "ground_truth_time",
        ),
    ],
)
def test_malformed_results_name_the_field(tmp_path: Path, line: dict, field: str) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"key": "ok", "kind": "omni", "task_type": "t", "answer": "B", "response": "B"}) + "\n")
    with path.open("a") as fh:
        fh.write(json.dumps(line) + "\n")
    with pytest.raises(BenchmarkFormatError, match=f"record 1: field '{field}'") as info:
        load_results(path)
    assert info.value.field == field


def test_results_file_that_is_not_results(tmp_path: Path) -> None:
    (tmp_path / "e.jsonl").write_text("\n\n")
    with pytest.raises(BenchmarkFormatError, match="empty"):
        load_results(tmp_path / "e.jsonl")
    (tmp_path / "b.jsonl").write_text('{"key": "k"}\n{"key": \n')
    with pytest.raises(BenchmarkFormatError, match="line 2 is not valid JSON"):
        load_results(tmp_path / "b.jsonl")
    with pytest.raises(FileNotFoundError):
        load_results(tmp_path / "absent.jsonl")
    with pytest.raises(ValueError, match="unknown scoring variant"):
        score_results([], variant="lenient")
