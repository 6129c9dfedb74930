"""Benchmark runs on generated clips in the benchmarks' layouts: exact clip semantics, concurrency, resume, failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation import ovo_bench
from evaluation.synthetic import write_ovo_videos
from serving.cli.core import main

pytestmark = pytest.mark.slow

FPS = 1  # sampling rate of the runs; the clips are written at 5 fps


@pytest.fixture(scope="module")
def ovo_data(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[Path, Path]:
    """An annotation of three real items (EPM at 7 s, FPD at 0.03 s, REC polled at 14 and 22 s), videos both ways."""
    root = tmp_path_factory.mktemp("ovo-runs")
    records = {r["id"]: r for r in json.loads((shared_data / "ovo-bench" / "ovo_bench_subset.json").read_text())}
    anno = root / "anno.json"
    anno.write_text(json.dumps([records[8], records[1117], records[1560]]))
    write_ovo_videos(ovo_bench.load_annotations(anno), root / "data", fps=5, width=64, height=48)
    return anno, root / "data"


def _run(anno: Path, videos: Path, out: Path, *extra: str) -> int:
    argv = ["eval", "ovo", "run", "--anno", str(anno), "--videos", str(videos), "--out", str(out)]
    return main([*argv, "--max-new-tokens", "3", "--fps", str(FPS), *extra])


def _report(out: Path, mode: str) -> dict:
    return json.loads((out / f"report_{mode}.json").read_text())


def _answers(out: Path) -> dict[str, str]:
    return {
        json.loads(line)["key"]: json.loads(line)["response"]
        for line in (out / "answers.jsonl").read_text().splitlines()
    }


@pytest.mark.parametrize(
    ("layout", "mode", "played"),
    [
        # chunked: each clip holds the frames before its query time (1 fps: 0..6, 0, 0..13, 0..21)
        ("chunked", "replay", 6 + 0 + 13 + 21),
        ("chunked", "live", 6 + 0 + 21),  # one pass per source video, on its longest clip
        # source: the video up to ceil(realtime), inclusive (0..7, 0..1, 0..14, 0..22)
        ("source", "replay", 7 + 1 + 14 + 22),
        ("source", "live", 7 + 1 + 22),
    ],
)
def test_each_layout_shows_a_query_exactly_its_frames(ovo_data, tmp_path, vigil_home, layout, mode, played) -> None:
    anno, videos = ovo_data
    out = tmp_path / "out"
    assert _run(anno, videos, out, "--layout", layout, "--mode", mode) == 0
    report = _report(out, mode)
    assert report["answered"] == 4 and report["layout"] == layout
    assert report["stream_seconds"] == pytest.approx(played)
    assert report["manifest"]["videos"]["layout"] == layout and report["manifest"]["mode"] == mode
    assert report["seconds_per_query"] > 0 and report["seconds_per_video_minute"] > 0
    results = ovo_bench.load_results(out / f"vigil_ovo_{mode}.json")
    assert results.query_count == 4


@pytest.mark.parametrize("mode", ["live", "replay"])
def test_concurrent_sessions_answer_as_sequential_ones(ovo_data, tmp_path, vigil_home, mode) -> None:
    anno, videos = ovo_data
    assert _run(anno, videos, tmp_path / "one", "--layout", "chunked", "--mode", mode) == 0
    assert _run(anno, videos, tmp_path / "four", "--layout", "chunked", "--mode", mode, "--concurrency", "4") == 0
    assert _answers(tmp_path / "one") == _answers(tmp_path / "four")
    assert _report(tmp_path / "four", mode)["concurrency"] == 4
    for key in ("prefill_tokens", "stream_seconds", "answered"):
        assert _report(tmp_path / "one", mode)[key] == _report(tmp_path / "four", mode)[key], key


def test_resume_refuses_other_settings_and_keeps_the_answers(ovo_data, tmp_path, vigil_home, capsys) -> None:
    anno, videos = ovo_data
    out = tmp_path / "out"
    assert _run(anno, videos, out, "--mode", "live", "--tasks", "EPM") == 0
    assert _report(out, "live")["answered"] == 1
    before = (out / "answers.jsonl").read_text()
    capsys.readouterr()
    assert _run(anno, videos, out, "--mode", "replay") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mode (live → replay)" in err[0] and "--overwrite" in err[0]
    assert _run(anno, videos, out, "--mode", "live", "--max-new-tokens", "5") == 2
    assert "config.engine.max_new_tokens (3 → 5)" in capsys.readouterr().err
    assert (out / "answers.jsonl").read_text() == before
    # the same settings resume: the EPM answer is reused, the other three are answered now
    assert _run(anno, videos, out, "--mode", "live") == 0
    report = _report(out, "live")
    assert report["skipped_done"] == 1 and report["answered"] == 3
    assert "resuming" in capsys.readouterr().err
    assert _run(anno, videos, out, "--mode", "replay", "--overwrite") == 0
    assert _report(out, "replay")["answered"] == 4
    assert not (out / "report_live.json").exists() and not (out / "vigil_ovo_live.json").exists()


def test_a_fully_resumed_run_loads_no_model(ovo_data, tmp_path, vigil_home, monkeypatch, capsys) -> None:
    """Every query answered earlier: the results and report are written from the kept answers, no model loads."""
    anno, videos = ovo_data
    out = tmp_path / "out"
    assert _run(anno, videos, out, "--mode", "replay", "--tasks", "EPM,FPD") == 0
    official = (out / "vigil_ovo_replay.json").read_text()
    (out / "vigil_ovo_replay.json").unlink()

    def no_model(config):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("serving.runtime.load_model", no_model)
    capsys.readouterr()
    assert _run(anno, videos, out, "--mode", "replay", "--tasks", "EPM,FPD") == 0
    assert "all 2 queries were answered in an earlier run" in capsys.readouterr().err
    assert (out / "vigil_ovo_replay.json").read_text() == official
    report = _report(out, "replay")
    assert (report["answered"], report["skipped_done"], report["queries"]) == (0, 2, 2)
    assert report["manifest"]["run"]["resumed"] is True
    # one query without an answer (REC's polls) needs the model again
    with pytest.raises(AssertionError, match="the model was loaded"):
        _run(anno, videos, out, "--mode", "replay")
    assert set(_answers(out)) == {"8", "1117"}  # nothing was answered by the refused run


def test_a_run_that_can_answer_nothing_fails(ovo_data, tmp_path, vigil_home, capsys) -> None:
    anno, _ = ovo_data
    broken = tmp_path / "data" / "chunked_videos"
    broken.mkdir(parents=True)
    for name in ("8.mp4", "1117.mp4", "1560_0.mp4", "1560_1.mp4"):
        (broken / name).write_bytes(b"not a video" * 100)
    assert _run(anno, tmp_path / "data", tmp_path / "out", "--mode", "replay") == 1
    err = capsys.readouterr().err
    assert "no query was answered (4 video(s) failed to decode)" in err
    assert not (tmp_path / "out" / "vigil_ovo_replay.json").exists()
    # nothing found at all: stopped before any model loads, with the path looked for
    assert _run(anno, tmp_path / "out", tmp_path / "out2", "--skip-missing") == 2
    assert "no video found under" in capsys.readouterr().err


def test_engine_options_are_checked_before_the_model_loads(ovo_data, tmp_path, vigil_home, capsys) -> None:
    anno, videos = ovo_data
    assert _run(anno, videos, tmp_path / "out", "--engine", "remote") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "remote engine needs at least one URL" in err[0]
    assert not (tmp_path / "out" / "answers.jsonl").exists()


def test_an_unreachable_replica_stops_the_run_before_it_starts(ovo_data, tmp_path, vigil_home, capsys) -> None:
    """No replica listens at the URL: exit 2, one line naming the replica, before any model loads or file is written.

    (An engine that fails during the run stops it in one line too: see the vLLM stage's wrong served-model test.)
    """
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    anno, videos = ovo_data
    out = tmp_path / "out"
    engine = ["--engine", "remote", "--remote-url", f"http://127.0.0.1:{port}/v1", "--concurrency", "2"]
    assert _run(anno, videos, out, "--tasks", "EPM,FPD", *engine) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "error: no remote replica can be reached" in err[-1] and f"127.0.0.1:{port}" in err[-1]
    assert not any("Traceback" in line for line in err)
    assert not (out / "manifest.json").exists() and not (out / "answers.jsonl").exists()


def test_progress_counts_only_the_work_of_this_run(ovo_data, tmp_path, tiny_adapter) -> None:
    import asyncio

    from assistant.config import VigilConfig
    from evaluation.runner import Progress, RunQuery, run_queries
    from serving.runtime import engine_factory

    _, videos = ovo_data
    clip = videos / "chunked_videos" / "8.mp4"
    queries = [
        RunQuery("done", clip, 3, "Q?", clip_end=3.0),
        RunQuery("new", clip, 7, "Q?", clip_end=7.0),
        RunQuery("gone", videos / "absent.mp4", 7, "Q?"),
    ]
    (tmp_path / "answers.jsonl").write_text('{"key": "done", "response": "A"}\n')
    seen = []

    class Recorder(Progress):
        def start(self, total: int) -> None:
            super().start(total)
            seen.append(total)

    progress = Recorder()
    config = VigilConfig(model={"name": "tiny"}, engine={"max_new_tokens": 2})
    answers, report = asyncio.run(
        run_queries(
            queries,
            adapter=tiny_adapter,
            config=config,
            make_engine=engine_factory(tiny_adapter),
            mode="live",
            out_dir=tmp_path,
            skip_missing=True,
            progress=progress,
        )
    )
    assert seen == [1] and progress.done == 1  # neither the reused answer nor the missing video counts
    assert report.answered == 1 and report.skipped_done == 1 and report.missing_videos == [str(videos / "absent.mp4")]
    assert set(answers) == {"done", "new"}
