"""Load test of the HTTP API: N sessions streaming frames at F fps for S seconds, asking now and then.

Every frame is accounted for: the client counts what the server accepted or refused; the server counts what
it perceived or dropped (with a reason). Latencies are reported as percentiles.
"""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from serving.bench_tools import percentile


@dataclass
class SessionLoad:
    """What one simulated client sent and saw."""

    id: str = ""
    sent: int = 0
    accepted: int = 0
    refused: dict[int, int] = field(default_factory=dict)
    frame_ms: list[float] = field(default_factory=list)
    answer_s: list[float] = field(default_factory=list)
    ttft_s: list[float] = field(default_factory=list)
    server: dict[str, Any] = field(default_factory=dict)

    @property
    def accounted(self) -> bool:
        """Client: sent = accepted + refused; server: received = processed + dropped (nothing queued)."""
        frames = self.server.get("frames", {})
        done = frames.get("processed", 0) + frames.get("perceiving", 0) + sum(frames.get("dropped", {}).values())
        server_ok = frames.get("received") == done
        return self.sent == self.accepted + sum(self.refused.values()) and server_ok and frames.get("queued") == 0


def encode_frames(video: str | Path | None, count: int, size: tuple[int, int] = (320, 240)) -> list[bytes]:
    """JPEG frames from a real video (cycled) or, without one, moving synthetic frames."""
    from PIL import Image

    images: list[Image.Image] = []
    if video is not None:
        import av

        with av.open(str(video)) as container:
            for frame in container.decode(video=0):
                images.append(frame.to_image().resize(size))
                if len(images) == count:
                    break
    if not images:
        for i in range(count):
            arr = np.zeros((size[1], size[0], 3), np.uint8)  # [H, W, 3]
            arr[:, (i * 7) % size[0] :] = (40 * i % 255, 120, 200)
            images.append(Image.fromarray(arr))
    out = []
    for img in images:
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="JPEG", quality=80)
        out.append(buf.getvalue())
    return out


async def _client(
    http: Any, frames: list[bytes], fps: float, seconds: float, ask_every: float, max_new_tokens: int
) -> SessionLoad:
    load = SessionLoad()
    r = await http.post("/v1/sessions", json={"fps": fps})
    r.raise_for_status()
    load.id = r.json()["id"]
    start = time.monotonic()
    next_question = ask_every
    questions: list[asyncio.Task] = []

    async def ask(t: float) -> None:
        """Time to first token and to the whole answer as the client sees them (queueing included)."""
        began = time.perf_counter()
        body = {"question": "What is happening?", "t": t, "max_new_tokens": max_new_tokens}
        first = None
        async with http.stream("POST", f"/v1/sessions/{load.id}/messages", json=body) as r:
            if r.status_code != 200:
                return
            async for line in r.aiter_lines():
                if first is None and line.startswith("event: answer_") and line != "event: answer_start":
                    first = time.perf_counter() - began
                if line == "event: answer_done":
                    load.answer_s.append(time.perf_counter() - began)
                    load.ttft_s.append(first if first is not None else time.perf_counter() - began)

    n = int(seconds * fps)
    for i in range(n):
        t = i / fps
        delay = start + t - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        began = time.perf_counter()
        r = await http.post(
            f"/v1/sessions/{load.id}/frames",
            params={"t": t},
            content=frames[i % len(frames)],
            headers={"Content-Type": "image/jpeg"},
        )
        load.frame_ms.append((time.perf_counter() - began) * 1000)
        load.sent += 1
        if r.status_code == 200:
            load.accepted += 1
        else:
            load.refused[r.status_code] = load.refused.get(r.status_code, 0) + 1
        if ask_every and t >= next_question:
            questions.append(asyncio.create_task(ask(t)))
            next_question += ask_every
    await asyncio.gather(*questions)
    return load


async def worker_rss(http: Any) -> float | None:
    """The worker's resident memory in MB, from its Prometheus metrics (None when it does not publish it)."""
    r = await http.get("/metrics")
    for line in r.text.splitlines() if r.status_code == 200 else []:
        if line.startswith("process_resident_memory_bytes "):
            return round(float(line.split()[1]) / 2**20, 1)
    return None


async def _settle(http: Any, load: SessionLoad, timeout: float) -> None:
    """Wait until the server has perceived or dropped every accepted frame, then keep its counts."""
    deadline = time.monotonic() + timeout
    while True:
        load.server = (await http.get(f"/v1/sessions/{load.id}/memory")).json()
        frames = load.server["frames"]
        if frames["queued"] == 0 and frames["processed"] + sum(frames["dropped"].values()) >= frames["received"]:
            return
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.2)


async def run_load(
    url: str,
    *,
    sessions: int = 8,
    fps: float = 2.0,
    seconds: float = 60.0,
    ask_every: float = 15.0,
    max_new_tokens: int = 16,
    video: str | Path | None = None,
    api_key: str | None = None,
) -> dict[str, Any]:
    """Drive ``sessions`` clients against a running server; returns per-session counts and latency percentiles."""
    import httpx

    frames = encode_frames(video, 64)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=4 * sessions + 8)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300, limits=limits) as http:
        rss_start = await worker_rss(http)
        began = time.perf_counter()
        loads = await asyncio.gather(
            *(_client(http, frames, fps, seconds, ask_every, max_new_tokens) for _ in range(sessions))
        )
        wall = time.perf_counter() - began
        await asyncio.gather(*(_settle(http, load, 120) for load in loads))
        rss_end = await worker_rss(http)
        for load in loads:
            await http.delete(f"/v1/sessions/{load.id}")
    frame_ms = [x for load in loads for x in load.frame_ms]
    answers = [x for load in loads for x in load.answer_s]
    ttft = [x for load in loads for x in load.ttft_s]
    dropped: dict[str, int] = {}
    for load in loads:
        for reason, count in load.server["frames"]["dropped"].items():
            dropped[reason] = dropped.get(reason, 0) + count

    def pct(values: list[float], scale: float = 1.0) -> dict[str, float | None]:
        return {f"p{q}": (round(percentile(values, q / 100) * scale, 2) if values else None) for q in (50, 95, 99)}

    return {
        "sessions": sessions,
        "fps": fps,
        "seconds": seconds,
        "wall_s": round(wall, 2),
        "frames_sent": sum(load.sent for load in loads),
        "frames_accepted": sum(load.accepted for load in loads),
        "frames_refused": sum(sum(load.refused.values()) for load in loads),
        "frames_processed": sum(load.server["frames"]["processed"] for load in loads),
        "frames_dropped": dropped,
        "all_accounted": all(load.accounted for load in loads),
        "frame_post_ms": pct(frame_ms),
        "answers": len(answers),
        "answer_ms": pct(answers, 1000),
        "ttft_ms": pct(ttft, 1000),
        "worker_rss_mb": {"start": rss_start, "end": rss_end},
        "per_session": [
            {"id": load.id, "sent": load.sent, "accepted": load.accepted, "frames": load.server["frames"]}
            for load in loads
        ],
    }
