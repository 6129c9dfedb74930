"""The prepared GPU benchmark, as its CPU smoke run with the tiny model (what ``vigil bench gpu`` does here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation.bench_gpu import GpuBenchConfig
from serving.cli import main


@pytest.mark.slow
def test_smoke_run_measures_every_part(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert main(["bench", "gpu", "--smoke", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gpu.json").read_text())
    cfg = GpuBenchConfig.smoke()

    assert result["skipped"] == []
    assert result["device"]["name"] == "cpu"
    assert result["perception"]["frames"] == cfg.perception_frames - 1
    assert 0 < result["perception"]["weighted_drop_ratio"] < 1  # the panning scene is partly dropped
    capacity = result["capacity"]
    assert [r["sessions"] for r in capacity["runs"]] == list(cfg.sessions[: len(capacity["runs"])])
    assert capacity["max_realtime_sessions"] in (0, *cfg.sessions)
    modes = {(r["minutes"], r["mode"]) for r in result["latency"]["runs"]}
    assert modes == {(m, mode) for m in cfg.minutes for mode in ("vigil", "reprefill")}
    one, two = result["memory"]
    assert (one["sessions"], two["sessions"]) == (1, 2)
    assert two["kv_bytes_total"] == 2 * two["kv_bytes_per_session"]  # equal streams hold equal KV
    assert one["kv_bytes_per_session"] == two["kv_bytes_per_session"]  # a session's KV does not depend on others
    tables = (tmp_path / "gpu.md").read_text()
    for heading in ("| perception |", "| sessions | lag p50", "TTFT p50", "KV MiB per session"):
        assert heading in tables


def test_a_bad_deadline_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "gpu", "--smoke", "--deadline", "0"]) == 2
    assert capsys.readouterr().err.strip() == "vigil: error: --deadline must be positive, got 0"
