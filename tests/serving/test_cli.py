"""The vigil command end to end, as a user runs it (subprocesses, real files)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def vigil(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serving.cli", *args], capture_output=True, text=True, timeout=600, cwd=cwd
    )


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float]]:
    path = tmp_path_factory.mktemp("clip") / "cuts.mp4"
    out = vigil("make-clip", str(path), "--seconds", "12", "--cuts", "4,8")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["cut_times"] == [4.0, 8.0] and info["fps"] == 10
    return path, info["cut_times"]


@pytest.mark.slow
def test_perceive_pixel_jsonl_on_real_video(real_clips) -> None:
    out = vigil("perceive", str(real_clips["bikes"]), "--fps", "2", "--jsonl")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    steps, summary = lines[:-1], lines[-1]["summary"]
    assert summary["steps"] == len(steps) and summary["drop_mode"] == "pixel"
    assert summary["tokens"] == sum(s["tokens"] for s in steps)
    assert summary["kept"] == sum(s["kept"] for s in steps)
    assert summary["frames"] == sum(len(s["frames"]) for s in steps)
    assert steps[0]["kept"] == steps[0]["tokens"] and steps[0]["drop_ratio"] == 0.0
    for key in ("frame", "t", "tokens", "kept", "drop_ratio"):
        assert key in steps[1]
    for key in ("frames", "tokens", "kept", "weighted_drop_ratio", "mean_drop_ratio", "seconds", "fps"):
        assert key in summary
    assert [s["frame"] for s in steps] == list(range(len(steps)))


@pytest.mark.slow
def test_perceive_feature_mode_with_tiny_model(clip, vigil_home) -> None:
    out = vigil("perceive", str(clip[0]), "--model", "tiny", "--fps", "1", "--jsonl")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.splitlines()[-1])["summary"]
    assert summary["drop_mode"] == "feature" and summary["model"] == "tiny"
    assert summary["stage_seconds"]["encode"] > 0


@pytest.mark.slow
def test_perceive_human_output(clip) -> None:
    out = vigil("perceive", str(clip[0]), "--drop-mode", "pixel")
    assert out.returncode == 0, out.stderr
    assert "weighted_drop_ratio" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["perceive", "/nonexistent/video.mp4"], "video file not found"),
        (["perceive", "{clip}", "--fps", "0"], "perception.fps"),
        (["perceive", "{clip}", "--drop-mode", "feature"], "no model was given"),
        (["perceive", "{clip}", "--drop-threshold", "0.1", "--drop-ratio", "0.5"], "drop_ratio"),
        (["perceive", "{clip}", "--speed", "fast"], "--speed"),
        (["perceive", "{clip}", "--model", "/nonexistent/model"], "no such directory"),
        (["watch", "{clip}", "--ask", "soon:what?"], "SECONDS:question"),
        (["watch", "{clip}", "--budget", "16", "--kv-cap", "4096"], "raise the budget"),
        (["watch", "{clip}", "--engine", "remote"], "needs at least one URL"),
        (["watch", "{clip}", "--engine", "remote", "--remote-url", "gpu1:8000"], "http://"),
        (["serve", "--api-key", "short"], "at least 8 characters"),
        (["serve", "--port", "70000"], "server.port"),
        (["serve", "--max-fps", "0"], "max_fps"),
        (["bench", "latency", "--grid", "8"], "ROWSxCOLS"),
        (["bench", "lag", "--sessions", "0"], "--sessions are positive"),
        (["bench", "engine", "--grid", "axb"], "invalid benchmark options"),
        (["make-clip", "{clip}/under-a-file/clip.mp4"], "could not write"),
    ],
)
@pytest.mark.slow
def test_bad_input_exits_2_with_one_clear_line(clip, args: list[str], message: str) -> None:
    out = vigil(*[a.replace("{clip}", str(clip[0])) for a in args])
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert [line for line in out.stderr.splitlines() if line.startswith("vigil: error:")] != []


def test_help_lists_every_command_group() -> None:
    script = Path(sys.executable).parent / "vigil"
    assert script.is_file(), f"the vigil script is not installed next to {sys.executable}"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    listed = [line.split()[0] for line in out.stdout.splitlines() if line.startswith("    ") and line.split()]
    for command in ("perceive", "watch", "serve", "demo", "bench", "eval", "make-clip", "make-tiny-model"):
        assert command in listed, out.stdout
    bench = subprocess.run([str(script), "bench", "--help"], capture_output=True, text=True, timeout=120)
    assert "{latency,lag,scene,all,api,gpu,engine}" in bench.stdout  # evaluation's benchmarks and serving's, one group


@pytest.mark.slow
def test_not_a_video(tmp_path) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video")
    out = vigil("perceive", str(bad))
    assert out.returncode == 2 and "cannot open" in out.stderr


@pytest.mark.slow
def test_watch_answers_at_stream_times(clip, vigil_home) -> None:
    out = vigil(
        "watch",
        str(clip[0]),
        "--model",
        "tiny",
        "--ask",
        "5:What changed?",
        "--ask",
        "30:And at the end?",
        "--jsonl",
        "--max-new-tokens",
        "8",
    )
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    answers = [e for e in events if e.get("type") == "answer"]
    assert sorted(a["t"] for a in answers) == [5.0, 30.0]
    for a in answers:
        assert a["ttft_s"] > 0 and a["total_s"] >= a["ttft_s"] and isinstance(a["answer"], str)
        assert a["cached_tokens"] > 0
    summary = events[-1]["summary"]
    assert summary["memory_tokens"] <= summary["memory_budget"]
    assert summary["frames"] == 12


@pytest.mark.slow
def test_bench_latency_writes_outputs(tmp_path, vigil_home) -> None:
    out = vigil(
        "bench",
        "latency",
        "--minutes",
        "0.5,1",
        "--questions",
        "2",
        "--max-new-tokens",
        "2",
        "--budget",
        "256",
        "--out",
        str(tmp_path / "bench"),
    )
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "bench" / "latency.json").read_text())
    modes = {(r["minutes"], r["mode"]) for r in result["runs"]}
    assert modes == {(0.5, "vigil"), (0.5, "reprefill"), (1.0, "vigil"), (1.0, "reprefill")}
    for r in result["runs"]:
        assert r["final_memory_tokens"] <= 256
        if r["mode"] == "vigil":
            assert r["prompt_tokens"] < r["cached_tokens"]
    assert (tmp_path / "bench" / "latency.png").stat().st_size > 0
    assert "TTFT p50" in out.stdout


@pytest.mark.slow
def test_bench_lag_reports_every_session_count(tmp_path, vigil_home) -> None:
    out = vigil(
        "bench", "lag", "--sessions", "1,2", "--seconds", "4", "--answer-tokens", "8", "--out", str(tmp_path / "lag")
    )
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "lag" / "lag.json").read_text())
    assert [r["sessions"] for r in result["runs"]] == [1, 2]
    for r in result["runs"]:
        assert r["answers"] >= 1 and r["frames_pushed"] == 8 * r["sessions"]
        assert r["lag_max_s"] >= r["lag_p95_s"] >= r["lag_p50_s"] >= 0


@pytest.mark.slow
def test_bench_scene_scores_a_clip(clip, tmp_path) -> None:
    out = vigil("bench", "scene", str(clip[0]), "--fps", "4", "--out", str(tmp_path / "scene"))
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "scene" / "scene.json").read_text())
    assert result["cut_times"] == pytest.approx(clip[1])  # measured from the frames
    best = result["scores"][0]
    assert best["tolerance_s"] == 0.5 and best["f1"] == 1.0 and best["false_alarms_per_min"] == 0.0
    assert vigil("bench", "scene", "/nonexistent.mp4").returncode == 2


@pytest.mark.slow
def test_bench_all_quick_writes_every_part(tmp_path, vigil_home) -> None:
    out = vigil("bench", "all", "--quick", "--out", str(tmp_path / "all"))
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "all" / "summary.json").read_text())
    assert {"perception", "latency", "lag", "scene"} <= set(result)
    assert [r["mode"] for r in result["perception"]] == ["pixel", "feature"]
    assert result["scene"]["scores"][0]["f1"] == 1.0
    assert (tmp_path / "all" / "latency.png").stat().st_size > 0
    for heading in ("## Perception", "## Question latency", "## Perception lag", "## Scene-change"):
        assert heading in out.stdout
