"""Hostile input on a real server: races on the limits, decode amplification, absurd ids and times, abandoned
answers, accounting, request-head limits, text limits. Every attack gets a 4xx (or 503) with the error body and
the attacked session still answers."""

from __future__ import annotations

import asyncio
import io
import socket
import time
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support import await_until, wait_until


def _big_jpeg(side: int = 4096) -> bytes:
    """A small JPEG (a few KB of flat colour) whose header declares ``side`` x ``side`` pixels."""
    out = io.BytesIO()
    Image.new("RGB", (side, side), (40, 90, 160)).save(out, format="JPEG", quality=5)
    return out.getvalue()


def _create_all(url: str, n: int) -> list[int]:
    async def main() -> list[int]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as c:
            responses = await asyncio.gather(*(c.post("/v1/sessions") for _ in range(n)))
            return [r.status_code for r in responses]

    return asyncio.run(main())


def _delete_all(client: httpx.Client) -> None:
    for s in client.get("/v1/sessions").json()["data"]:
        client.delete(f"/v1/sessions/{s['id']}")


@pytest.mark.slow
def test_parallel_creates_never_pass_the_limits(start_server: Any) -> None:
    per_key = start_server(server={"limits": {"max_sessions_per_key": 5}})
    codes = _create_all(per_key.url, 30)
    assert sorted(codes) == [201] * 5 + [429] * 25
    with per_key.client() as c:
        assert len(c.get("/v1/sessions").json()["data"]) == 5
        _delete_all(c)
        assert c.post("/v1/sessions").status_code == 201  # the reservations were released with the sessions
        _delete_all(c)

    per_worker = start_server(server={"limits": {"max_sessions": 3}})
    codes = _create_all(per_worker.url, 12)
    assert sorted(codes) == [201] * 3 + [503] * 9
    assert len(per_worker.service.hosted) == 3
    with per_worker.client() as c:
        _delete_all(c)


@pytest.mark.slow
def test_parallel_creates_over_redis_are_reserved_atomically(start_server: Any, redis_url: str) -> None:
    server = start_server(server={"redis_url": redis_url, "limits": {"max_sessions_per_key": 5}})
    codes = _create_all(server.url, 30)
    assert sorted(codes) == [201] * 5 + [429] * 25
    with server.client() as c:
        assert sum(s["status"] == "live" for s in c.get("/v1/sessions").json()["data"]) == 5
        _delete_all(c)


def test_a_huge_declared_jpeg_is_decoded_at_the_size_perception_uses(start_server: Any) -> None:
    server = start_server(session={"frame_queue": 64})
    data = _big_jpeg()
    assert len(data) < 400_000  # a small request (a 48 MiB bitmap in full) ...
    with server.client() as c:
        sid = c.post("/v1/sessions").json()["id"]
        h = server.service.hosted[sid]
        target = h.live.intake.decode_pixels
        assert target is not None and target < 4096 * 4096 // 100

        async def burst() -> list[int]:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as ac:
                headers = {"Content-Type": "image/jpeg"}
                rs = await asyncio.gather(
                    *(ac.post(f"/v1/sessions/{sid}/frames", content=data, headers=headers) for _ in range(20))
                )
                return [r.status_code for r in rs]

        codes = asyncio.run(burst())
        assert codes.count(200) >= 1 and set(codes) <= {200, 429}  # the rate limit may refuse some
        # ... that never became a 48 MiB bitmap in the queue: each frame held is about the perception size
        peak = server.service.registry.frame_bytes.peak
        assert 0 < peak <= codes.count(200) * 3 * target * 1.1
        wait_until(lambda: server.service.hosted[sid].live.idle, 60, what="frames perceived")
        frames = c.get(f"/v1/sessions/{sid}/memory").json()["frames"]
        assert frames["processed"] + sum(frames["dropped"].values()) == frames["received"] == codes.count(200)
        c.delete(f"/v1/sessions/{sid}")


def test_queued_frame_bytes_are_bounded_per_session_and_per_worker(start_server: Any, tools: Any) -> None:
    png = tools.jpeg(1, size=(200, 200), fmt="PNG")  # reduced to the perception size: ~150 KB decoded
    one_session = start_server(server={"limits": {"max_session_frame_bytes": 65536}})
    with one_session.client() as c:
        sid = c.post("/v1/sessions").json()["id"]
        r = c.post(f"/v1/sessions/{sid}/frames", content=png, headers={"Content-Type": "image/png"})
        assert r.status_code == 429 and r.json()["error"]["code"] == "frame_queue_full"
        assert r.headers["retry-after"] == "1"
        small = tools.post_frame(c, sid, tools.jpeg(2, size=(32, 32)), 1.0)
        assert small.status_code == 200  # the session still takes what fits
        c.delete(f"/v1/sessions/{sid}")
    worker = start_server(server={"limits": {"max_worker_frame_bytes": 65536}})
    with worker.client() as c:
        sid = c.post("/v1/sessions").json()["id"]
        r = c.post(f"/v1/sessions/{sid}/frames", content=png, headers={"Content-Type": "image/png"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "worker_busy"
        frames = c.get(f"/v1/sessions/{sid}/memory").json()["frames"]
        assert frames["received"] == 1 and frames["dropped"]["backpressure"] == 1  # counted, not lost
        c.delete(f"/v1/sessions/{sid}")


def test_ids_times_and_sources_out_of_range_are_4xx(api: Any, tools: Any) -> None:
    with api.client() as c:
        sid = c.post("/v1/sessions").json()["id"]
        base = f"/v1/sessions/{sid}"
        for value in ("²", "9" * 5000, str(2**63), "-1", "1e3"):
            r = c.get(base + "/events", headers={"Last-Event-ID": value.encode()})
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", value
        for after in (str(2**63), str(10**21)):
            r = c.get(base + "/events", params={"after": after})
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
        r = c.post(base + "/video", json={"source": "/tmp/a\x00b.mp4"})
        assert r.status_code == 422 and "control characters" in r.json()["error"]["message"]
        for speed in ("0.0000001", "5000"):
            r = c.post(base + "/video", params={"speed": speed}, content=b"x", headers={"Content-Type": "video/mp4"})
            assert r.status_code == 422 and "speed" in r.json()["error"]["message"]
        r = c.post(base + "/video", json={"source": "/tmp/x.mp4", "speed": 1e-7})
        assert r.status_code == 422 and "speed" in r.json()["error"]["message"]
        # times: a question at 1e999 (infinity in JSON), a frame at 1e308, a session at 1e-300 fps
        r = c.post(
            base + "/messages",
            params={"stream": "false"},
            content=b'{"question": "hi", "t": 1e999}',
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
        r = tools.post_frame(c, sid, tools.jpeg(0), 1e308)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_time"
        r = c.post("/v1/sessions", json={"fps": 1e-300})
        assert r.status_code == 422 and "fps" in r.json()["error"]["message"]
        # the session's clock is untouched: later frames and questions work
        assert tools.post_frame(c, sid, tools.jpeg(1), 0.5).status_code == 200
        r = c.post(base + "/messages", params={"stream": "false"}, json={"question": "What now?"})
        assert r.status_code == 200 and r.json()["t"] < 1e6
        c.delete(base)


def test_websocket_after_out_of_range_gets_an_error_message(api: Any) -> None:
    from websockets.sync.client import connect

    with api.client() as c:
        sid = c.post("/v1/sessions").json()["id"]
        ws_url = api.url.replace("http://", "ws://") + f"/v1/sessions/{sid}/stream?after={2**63}"
        with connect(ws_url) as ws:
            message = ws.recv(timeout=10)
            assert '"invalid_request"' in message
        assert c.get(f"/v1/sessions/{sid}").status_code == 200
        c.delete(f"/v1/sessions/{sid}")


@pytest.mark.slow
def test_abandoned_json_answers_are_cancelled_and_the_queue_is_bounded(start_server: Any, tools: Any) -> None:
    server = start_server(server={"limits": {"max_queued_questions": 4}})
    with server.client() as c:
        sid = c.post("/v1/sessions").json()["id"]
        tools.post_frame(c, sid, tools.jpeg(0), 0.0)
        base = f"/v1/sessions/{sid}/messages"
        body = {"question": "Tell me everything.", "max_new_tokens": 400, "min_new_tokens": 400}

        live = server.service.hosted[sid].live

        async def impatient() -> list[int]:
            """Four questions held open and then abandoned; sixteen more while those four fill the queue."""
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as ac:
                held = [asyncio.ensure_future(ac.post(base, params={"stream": "false"}, json=body)) for _ in range(4)]
                await await_until(lambda: live.jobs.count("question") == 4, 30, what="four questions queued")
                refused = [(await ac.post(base, params={"stream": "false"}, json=body)).status_code for _ in range(16)]
                for request in held:  # the clients give up: their connections close
                    request.cancel()
                await asyncio.gather(*held, return_exceptions=True)
                return refused

        assert asyncio.run(impatient()) == [429] * 16
        wait_until(lambda: live.jobs.count("question") == 0, 30, what="abandoned answers cancelled")
        done = [e for e in live.events.since(0) if e.type == "answer_done"]  # those that had started
        assert 1 <= len(done) <= 4 and all(e.finish_reason == "cancelled" for e in done)
        assert all(e.generated_tokens < 400 for e in done)
        r = c.post(base, params={"stream": "false"}, json={"question": "Still there?"})
        assert r.status_code == 200 and r.json()["finish_reason"] in ("stop", "length")
        c.delete(f"/v1/sessions/{sid}")


def test_frames_of_a_video_over_the_pixel_limit_are_reduced_and_counted(api: Any, tmp_path: Any) -> None:
    import av

    path = tmp_path / "huge.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = 4352, 4096, "yuv420p"  # 17.8 MP: over 4096 x 4096
        for i in range(3):
            img = np.full((4096, 4352, 3), 60 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with api.client() as c:
        sid = c.post("/v1/sessions", json={"fps": 4}).json()["id"]
        with path.open("rb") as f:
            r = c.post(f"/v1/sessions/{sid}/video?speed=max", content=f.read(), headers={"Content-Type": "video/mp4"})
        assert r.status_code == 202
        video = wait_until(lambda: (v := c.get(f"/v1/sessions/{sid}/video").json())["state"] != "playing" and v, 60)
        assert video["state"] == "finished" and video["frames"] == 3, video
        wait_until(lambda: server_idle(api, sid), 60, what="frames perceived")
        frames = c.get(f"/v1/sessions/{sid}/memory").json()["frames"]
        assert frames["received"] == 3
        accounted = frames["processed"] + frames["perceiving"] + frames["queued"] + sum(frames["dropped"].values())
        assert accounted == frames["received"]
        c.delete(f"/v1/sessions/{sid}")


def server_idle(server: Any, sid: str) -> bool:
    return server.service.hosted[sid].live.idle


def test_request_heads_are_bounded_in_size_and_time(start_server: Any) -> None:
    server = start_server(server={"limits": {"max_header_bytes": 8192, "header_timeout_s": 1.0}})
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:  # a head far over the limit
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
        reply = _read_all(s)
        assert reply == b"" or reply.startswith(b"HTTP/1.1 4")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as s:  # a head that never ends
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        assert _read_all(s) == b""  # closed by the server, well before the socket's own 10 s timeout
        assert time.monotonic() - started < 9
    with server.client() as c:
        assert c.get("/health").status_code == 200  # everyone else is served


def _read_all(s: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := s.recv(65536):
            chunks.append(chunk)
    except (ConnectionResetError, BrokenPipeError):
        pass
    return b"".join(chunks)


def test_text_limits_agree_with_what_the_engine_takes(api: Any, tools: Any) -> None:
    with api.client() as c:
        sid = c.post("/v1/sessions").json()["id"]
        base = f"/v1/sessions/{sid}"
        r = c.post(base + "/messages", params={"stream": "false"}, json={"question": "x" * 2001})
        assert r.status_code == 413 and "2000 characters" in r.json()["error"]["message"]
        words = " ".join(f"word{i}" for i in range(300))[:1999]  # within the characters, over the tokens
        r = c.post(base + "/messages", params={"stream": "false"}, json={"question": words})
        assert r.status_code == 413 and r.json()["error"]["code"] == "question_too_long"
        assert "tokens" in r.json()["error"]["message"]
        r = c.post(base + "/instructions", json={"instruction": words[:1000]})
        assert r.status_code == 413 and r.json()["error"]["code"] == "instruction_too_long"
        r = c.post("/v1/sessions", json={"instructions": [words[:1000]]})  # the same bound at creation
        assert r.status_code == 413 and r.json()["error"]["code"] == "instruction_too_long"
        r = c.post("/v1/sessions", json={"instructions": ["tell me when it gets dark"] * 17})
        assert r.status_code == 422
        tools.post_frame(c, sid, tools.jpeg(0), 0.0)
        r = c.post(base + "/messages", params={"stream": "false"}, json={"question": "What is shown?"})
        assert r.status_code == 200
        c.delete(base)


def test_small_mismatches(api: Any, tools: Any) -> None:
    with api.client() as c:
        sid = c.post("/v1/sessions").json()["id"]
        base = f"/v1/sessions/{sid}"
        files = [("frame", (f"{i}.jpg", tools.jpeg(i, size=(16, 16)), "image/jpeg")) for i in range(61)]
        r = c.post(base + "/frames", files=files)  # over this session's burst of 60: never accepted
        assert r.status_code == 413 and "at most 60 frames per request" in r.json()["error"]["message"]
        r = c.post(base + "/frames", files=files[:60])
        assert r.status_code == 200 and r.json()["accepted"] == 60

        # a cancelled answer reports what it generated
        with c.stream(
            "POST", base + "/messages", json={"question": "Go on.", "max_new_tokens": 400, "min_new_tokens": 400}
        ) as stream:
            seen = []
            for event in tools.sse_events(stream):
                seen.append(event)
                if event["event"] == "answer_delta" and len(seen) >= 4:
                    break
        live = api.service.hosted[sid].live
        done = wait_until(lambda: [e for e in live.events.since(0) if e.type == "answer_done"], 30)
        assert done[-1].finish_reason == "cancelled" and done[-1].generated_tokens >= 3 and done[-1].text

        # DELETE while a JSON answer runs: the waiting client gets 410, not 409
        async def delete_during_answer() -> httpx.Response:
            async with httpx.AsyncClient(base_url=api.url, timeout=60) as ac:
                body = {"question": "And again?", "max_new_tokens": 400, "min_new_tokens": 400}
                answer = asyncio.ensure_future(ac.post(base + "/messages", params={"stream": "false"}, json=body))
                while live.jobs.running is None:
                    await asyncio.sleep(0.02)
                assert (await ac.delete(base)).status_code == 204
                return await answer

        r = asyncio.run(delete_during_answer())
        assert r.status_code == 410 and r.json()["error"]["code"] == "session_closed"
