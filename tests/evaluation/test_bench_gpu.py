"""The prepared GPU benchmark, as its CPU smoke run with the tiny model."""

from __future__ import annotations

from typing import Any

import pytest

from evaluation.bench_gpu import GpuBenchConfig, format_gpu_tables, run_gpu_bench
from serving.runtime import engine_factory


@pytest.mark.slow
def test_smoke_run_measures_every_part(tiny_adapter: Any) -> None:
    cfg = GpuBenchConfig.smoke()
    result = run_gpu_bench(tiny_adapter, engine_factory(tiny_adapter), cfg)

    assert result["skipped"] == []
    assert result["perception"]["frames"] == cfg.perception_frames - 1
    assert result["perception"]["frames_per_s"] > 0
    capacity = result["capacity"]
    assert [r["sessions"] for r in capacity["runs"]] == list(cfg.sessions[: len(capacity["runs"])])
    assert capacity["max_realtime_sessions"] in (0, *cfg.sessions)
    modes = {(r["minutes"], r["mode"]) for r in result["latency"]["runs"]}
    assert modes == {(m, mode) for m in cfg.minutes for mode in ("vigil", "reprefill")}
    one, two = result["memory"]
    assert (one["sessions"], two["sessions"]) == (1, 2)
    assert two["kv_bytes_total"] == 2 * two["kv_bytes_per_session"]  # equal streams hold equal KV
    assert one["kv_bytes_per_session"] == two["kv_bytes_per_session"]  # a session's KV does not depend on others
    tables = format_gpu_tables(result)
    for heading in ("| perception |", "| sessions | lag p50", "TTFT p50", "KV MiB per session"):
        assert heading in tables
