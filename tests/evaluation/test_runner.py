"""Benchmark runs end to end on generated videos: official formats, live vs replay cost, resume, missing videos."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation import ovo_bench
from evaluation.synthetic import write_clip

pytestmark = pytest.mark.slow


def vigil(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "serving.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def ovo_setup(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[Path, Path]:
    """Real OVO-Bench records (EPM, OCR, REC, SSR) retimed onto two short generated videos."""
    root = tmp_path_factory.mktemp("ovo")
    videos = root / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4"):
        write_clip(videos / name, seconds=10, fps=5, width=160, height=120, cut_times=(4.0,))
    records = {r["task"]: r for r in json.loads((shared_data / "ovo-bench" / "ovo_bench_subset.json").read_text())}
    epm, ocr, rec, ssr = (dict(records[t]) for t in ("EPM", "OCR", "REC", "SSR"))
    epm.update(video="a.mp4", realtime=3.2)
    ocr.update(video="a.mp4", realtime=7.0)
    rec.update(video="b.mp4", test_info=[{"realtime": 2, "count": 0}, {"realtime": 6.5, "count": 1}])
    ssr.update(video="b.mp4", test_info=[dict(ssr["test_info"][0], realtime=5)])
    anno = root / "anno.json"
    anno.write_text(json.dumps([epm, ocr, rec, ssr]))
    return anno, videos


def _run(anno: Path, videos: Path, out: Path, mode: str, *extra: str) -> dict:
    result = vigil(
        "eval",
        "ovo",
        "run",
        "--anno",
        str(anno),
        "--videos",
        str(videos),
        "--mode",
        mode,
        "--out",
        str(out),
        "--max-new-tokens",
        "4",
        "--fps",
        "2",
        *extra,
    )
    assert result.returncode == 0, result.stderr
    return json.loads((out / f"report_{mode}.json").read_text())


def _answers(out: Path) -> dict[str, str]:
    return {r["key"]: r["response"] for r in map(json.loads, (out / "answers.jsonl").read_text().splitlines())}


def test_live_and_replay_write_official_files_and_live_prefills_less(ovo_setup, tmp_path, vigil_home) -> None:
    anno, videos = ovo_setup
    live = _run(anno, videos, tmp_path / "live", "live")
    replay = _run(anno, videos, tmp_path / "replay", "replay")
    for out, report in ((tmp_path / "live", live), (tmp_path / "replay", replay)):
        assert report["answered"] == 5 and report["queries"] == 5
        results = ovo_bench.load_results(out / f"vigil_ovo_{report['mode']}.json")
        assert results.query_count == 5
        assert {r.task for r in results.backward + results.realtime} == {"EPM", "OCR"}
        assert set(report["scores"]["tasks"]) == {"EPM", "OCR", "REC", "SSR"}
    assert live["prefill_tokens"] < replay["prefill_tokens"]
    # the official format: the same keys the benchmark's own inference scripts write
    doc = json.loads((tmp_path / "live" / "vigil_ovo_live.json").read_text())
    assert set(doc) == {"backward", "realtime", "forward"}
    assert {"id", "video", "task", "question", "response", "ground_truth"} <= set(doc["backward"][0])
    assert all("response" in poll for item in doc["forward"] for poll in item["test_info"])


def test_runs_resume_after_interruption(ovo_setup, tmp_path, vigil_home) -> None:
    anno, videos = ovo_setup
    out = tmp_path / "resume"
    _run(anno, videos, out, "live")  # writes the manifest a resume is checked against
    # an earlier run answered the two questions on video a, and its last line was cut off mid-write
    first, second = (item["id"] for item in json.loads(anno.read_text())[:2])
    (out / "answers.jsonl").write_text(
        f'{{"key": "{first}", "response": "A"}}\n{{"key": "{second}", "response": "B"}}\n{{"key": "15'
    )
    report = _run(anno, videos, out, "live")
    assert report["skipped_done"] == 2 and report["answered"] == 3
    official = (out / "vigil_ovo_live.json").read_text()
    (out / "vigil_ovo_live.json").unlink()
    again = _run(anno, videos, out, "live")  # nothing left: the results are written from the kept answers
    assert again["answered"] == 0 and again["skipped_done"] == 5 and again["queries"] == 5
    assert (out / "vigil_ovo_live.json").read_text() == official


def test_missing_videos_are_reported_or_skipped(ovo_setup, tmp_path, vigil_home) -> None:
    anno, videos = ovo_setup
    items = json.loads(anno.read_text())
    items[0]["video"] = "gone.mp4"
    broken = tmp_path / "anno.json"
    broken.write_text(json.dumps(items))
    out = vigil("eval", "ovo", "run", "--anno", str(broken), "--videos", str(videos), "--out", str(tmp_path / "x"))
    assert out.returncode == 2 and "missing" in out.stderr and "--skip-missing" in out.stderr
    report = _run(broken, videos, tmp_path / "y", "live", "--skip-missing")
    assert report["answered"] == 4 and len(report["missing_videos"]) == 1


def _sb_run(anno: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return vigil(
        "eval",
        "streamingbench",
        "run",
        "--anno",
        str(anno),
        "--videos",
        str(tmp_path),
        "--out",
        str(tmp_path / "sb"),
        *extra,
    )


def test_streamingbench_run(tmp_path, vigil_home, shared_data) -> None:
    records = json.loads((shared_data / "streamingbench" / "questions_real_sample.json").read_text())
    segment = dict(records[0])
    segment["video_path"] = "clip.mp4"
    segment["questions"] = [
        dict(q, time_stamp=ts) for q, ts in zip(segment["questions"][:2], ("00:00:03", "00:00:06"), strict=False)
    ]
    anno = tmp_path / "questions_real.json"
    anno.write_text(json.dumps([segment]))
    write_clip(tmp_path / "clip.mp4", seconds=8, fps=5, width=160, height=120)
    out = _sb_run(anno, tmp_path, "--mode", "live", "--max-new-tokens", "2", "--fps", "2")
    assert out.returncode == 0, out.stderr
    lines = (tmp_path / "sb" / "vigil_streamingbench_live.jsonl").read_text().splitlines()
    assert len(lines) == len(segment["questions"])
    score = vigil("eval", "streamingbench", "score", str(tmp_path / "sb" / "vigil_streamingbench_live.jsonl"))
    assert score.returncode == 0, score.stderr


def test_streamingbench_proactive_native_mode(tmp_path, vigil_home, shared_data) -> None:
    records = json.loads((shared_data / "streamingbench" / "questions_proactive_sample.json").read_text())
    segment = dict(records[0])
    segment["video_path"] = "clip.mp4"
    question = dict(segment["questions"][0], time_stamp="00:00:02", ground_truth_time_stamp="00:00:05")
    segment["questions"] = [question]
    anno = tmp_path / "questions_proactive.json"
    anno.write_text(json.dumps([segment]))
    write_clip(tmp_path / "clip.mp4", seconds=10, fps=5, width=160, height=120, cut_times=(5.0,))
    out = _sb_run(anno, tmp_path, "--max-new-tokens", "4", "--fps", "2")
    assert out.returncode == 0, out.stderr
    assert "answered by the decision module" in out.stdout
    (line,) = (tmp_path / "sb" / "vigil_streamingbench_live.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["ground_truth_time"] == 5 and record["ground_truth_output"] == question["ground_truth_output"]
    assert record["answer_time"] is None or record["answer_time"] >= 2.0  # causal: never before it was asked
    score = vigil("eval", "streamingbench", "score", str(tmp_path / "sb" / "vigil_streamingbench_live.jsonl"))
    assert score.returncode == 0, score.stderr
    # the proactive answer and its time are kept: a rerun plays nothing and loads no model
    again = _sb_run(anno, tmp_path, "--max-new-tokens", "4", "--fps", "2")
    assert again.returncode == 0, again.stderr
    assert "all 1 queries were answered in an earlier run" in again.stderr and "no model loaded" in again.stderr
    assert [json.loads(x) for x in (tmp_path / "sb" / "vigil_streamingbench_live.jsonl").read_text().splitlines()] == [
        record
    ]


def test_forward_tasks_in_native_mode(ovo_setup, tmp_path, vigil_home) -> None:
    anno, videos = ovo_setup
    report = _run(anno, videos, tmp_path / "native", "live", "--forward", "native")
    # the two forward items of video b played at once read the same polls as one after the other
    together = _run(anno, videos, tmp_path / "together", "live", "--forward", "native", "--concurrency", "2")
    assert _answers(tmp_path / "together") == _answers(tmp_path / "native")
    assert together["answered"] == 5 and together["concurrency"] == 2  # (prefill counts depend on idle syncs' timing)
    assert report["answered"] == 5  # the two multiple-choice items were asked; the three polls were read
    doc = json.loads((tmp_path / "native" / "vigil_ovo_live.json").read_text())
    polls = {item["task"]: [p["response"] for p in item["test_info"]] for item in doc["forward"]}
    assert set(polls) == {"REC", "SSR"}
    counts = [int(r) for r in polls["REC"]]
    assert counts == sorted(counts)  # a count of rising edges never goes down
    assert all(r in ("Yes", "No") for r in polls["SSR"])
    results = ovo_bench.load_results(tmp_path / "native" / "vigil_ovo_live.json")
    assert results.query_count == 5
