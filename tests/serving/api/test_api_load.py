"""A bounded load test: several sessions streaming at once, every frame accounted for."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from evaluation.bench_api import run_load


@pytest.mark.slow
def test_concurrent_sessions_account_for_every_frame(start_server: Any, real_clips: Any) -> None:
    server = start_server(server={"limits": {"max_sessions_per_key": 64}})
    result = asyncio.run(
        run_load(
            server.url, sessions=4, fps=2, seconds=6, ask_every=2.5, max_new_tokens=4, video=real_clips["bigbuckbunny"]
        )
    )
    assert result["frames_sent"] == 4 * 12
    assert result["frames_accepted"] + result["frames_refused"] == result["frames_sent"]
    assert result["frames_processed"] + sum(result["frames_dropped"].values()) == result["frames_accepted"]
    assert result["all_accounted"]
    assert result["answers"] == 4 * 2 and result["answer_ms"]["p50"] > 0
    assert not server.service.hosted  # every session was deleted
