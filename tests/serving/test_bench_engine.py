"""``vigil bench engine`` on the tiny model with the transformers engine (the vLLM run needs vLLM installed)."""

from __future__ import annotations

import json

import pytest

from serving.cli import main

pytestmark = pytest.mark.slow


def test_bench_engine_writes_ttft_cache_and_throughput(tiny_model_dir, tmp_path, capsys) -> None:
    out = tmp_path / "bench"
    code = main(
        [
            "bench", "engine", "--engine", "hf", "--model", str(tiny_model_dir), "--device", "cpu",
            "--minutes", "0.5,1", "--sessions", "1,2", "--concurrent-minutes", "0.25", "--grid", "4x6",
            "--questions", "3", "--max-new-tokens", "6", "--budget", "1024", "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    result = json.loads((out / "engine-hf.json").read_text())
    short, long = result["lengths"]
    assert long["context_tokens"] > short["context_tokens"]
    for row in (short, long):
        assert len(row["ttft_s"]) == 3 and all(t > 0 for t in row["ttft_s"])
        assert row["cached_tokens"] == sorted(row["cached_tokens"]) and row["cached_tokens"][0] > 0
    assert [r["sessions"] for r in result["concurrency"]] == [1, 2]
    assert all(r["tokens_per_s"] > 0 and len(r["ttft_s"]) == r["sessions"] for r in result["concurrency"])
    assert "| stream (min) |" in (out / "engine-hf.md").read_text()
    assert "generated tokens/s" in capsys.readouterr().out


def test_bench_engine_rejects_bad_options(tiny_model_dir, capsys) -> None:
    assert main(["bench", "engine", "--model", str(tiny_model_dir), "--sessions", "0"]) == 2
    assert "--sessions >= 1" in capsys.readouterr().err
    assert main(["bench", "engine", "--engine", "remote", "--model", str(tiny_model_dir)]) == 2
    assert "needs at least one URL" in capsys.readouterr().err
