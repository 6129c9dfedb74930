"""Perception lag while answers generate: does watching keep up with real time when the assistant talks?

Each session receives frames in real time; it is kept busy with long answers (one after another). Lag is the
wall-clock time since the stream started minus the stream time of the newest processed frame, sampled every
100 ms while an answer of that session is generating.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from assistant.config import VigilConfig
from assistant.orchestrator import LiveSession, Orchestrator
from assistant.reaction import EngineFactory
from serving.bench_tools import percentile


@dataclass(frozen=True, slots=True)
class LagBenchConfig:
    sessions: tuple[int, ...] = (1, 4, 8)
    seconds: float = 20.0
    fps: float = 2.0
    size: int = 224
    answer_tokens: int = 64
    sample_every_s: float = 0.1
    drop_mode: str = "pixel"
    """Differential token drop mode of the sessions (feature mode runs the vision encoder on every step)."""


def _scene_frame(session: int, k: int, size: int, fps: float) -> np.ndarray:
    rng = np.random.default_rng(1000 * session + int(k / fps) // 5)  # a new scene every 5 s
    return rng.integers(0, 256, (size, size, 3), np.uint8)


async def _feed(live: LiveSession, index: int, cfg: LagBenchConfig, start: float) -> None:
    for k in range(int(cfg.seconds * cfg.fps)):
        t = k / cfg.fps
        await asyncio.sleep(max(0.0, start + t - time.monotonic()))
        live.push_frame(_scene_frame(index, k, cfg.size, cfg.fps), t=t)


async def _talk(live: LiveSession, cfg: LagBenchConfig, start: float, busy: dict[str, bool]) -> int:
    answers = 0
    await asyncio.sleep(1.0)
    while time.monotonic() - start < cfg.seconds:
        busy[live.session_id] = True
        _, done = live.ask(
            "Describe everything you have seen so far in detail.",
            max_new_tokens=cfg.answer_tokens,
            min_new_tokens=cfg.answer_tokens,
        )
        try:
            await done
            answers += 1
        finally:
            busy[live.session_id] = False
    return answers


async def run_lag(adapter: Any, make_engine: EngineFactory, sessions: int, cfg: LagBenchConfig) -> dict[str, Any]:
    """One run with ``sessions`` concurrent sessions."""
    config = VigilConfig(
        perception={"fps": cfg.fps, "drop": {"mode": cfg.drop_mode}},
        memory={"budget_tokens": 2048, "archive": "none"},
        engine={"max_new_tokens": cfg.answer_tokens},
        session={"frame_queue": 64},
    )
    orch = Orchestrator(make_engine(config.engine), adapter, config)
    lives = [await orch.create_session() for _ in range(sessions)]
    busy = {live.session_id: False for live in lives}
    start = time.monotonic()
    feeders = [asyncio.create_task(_feed(live, i, cfg, start)) for i, live in enumerate(lives)]
    talkers = [asyncio.create_task(_talk(live, cfg, start, busy)) for live in lives]
    lags: list[float] = []
    while time.monotonic() - start < cfg.seconds:
        await asyncio.sleep(cfg.sample_every_s)
        elapsed = time.monotonic() - start
        for live in lives:
            if busy[live.session_id] and live.processed_frames:
                lags.append(max(0.0, elapsed - live.stream_t))
    await asyncio.gather(*feeders)
    answers = await asyncio.gather(*talkers)
    dropped = sum(live.frames_dropped["backpressure"] for live in lives)
    pushed = sessions * int(cfg.seconds * cfg.fps)
    await orch.shutdown()
    return {
        "sessions": sessions,
        "lag_p50_s": percentile(lags, 0.5),
        "lag_p95_s": percentile(lags, 0.95),
        "lag_max_s": max(lags, default=0.0),
        "samples_during_generation": len(lags),
        "answers": sum(answers),
        "frames_pushed": pushed,
        "frames_dropped": dropped,
    }


def run_lag_bench(adapter: Any, make_engine: EngineFactory, cfg: LagBenchConfig) -> dict[str, Any]:
    runs = [asyncio.run(run_lag(adapter, make_engine, n, cfg)) for n in cfg.sessions]
    return {"config": asdict(cfg), "model": getattr(adapter, "name", "?"), "device": str(adapter.device), "runs": runs}


def format_lag_table(result: dict[str, Any]) -> str:
    lines = [
        f"model {result['model']} on {result['device']}; {result['config']['fps']:g} fps real-time frames, "
        f"answers of {result['config']['answer_tokens']} tokens back to back",
        "",
        "| sessions | lag p50 (s) | lag p95 (s) | lag max (s) | answers | frames dropped / pushed |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['sessions']} | {r['lag_p50_s']:.2f} | {r['lag_p95_s']:.2f} | {r['lag_max_s']:.2f} "
            f"| {r['answers']} | {r['frames_dropped']} / {r['frames_pushed']} |"
        )
    return "\n".join(lines)
