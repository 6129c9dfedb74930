"""Frames in and answers out over real HTTP: images, multipart, WebSocket, video upload, SSE, the openai client."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.support import wait_until


@pytest.fixture
def session(api: Any) -> Any:
    with api.client() as c:
        sid = c.post("/v1/sessions", json={"fps": 2, "proactive": "scene"}).json()["id"]
    yield sid
    with api.client() as c:
        c.delete(f"/v1/sessions/{sid}")


@pytest.mark.slow
def test_frames_from_a_real_clip_then_questions_three_ways(api: Any, session: str, real_clips: Any, tools: Any) -> None:
    frames = tools.clip_frames(real_clips["bigbuckbunny"], 12)
    with api.client() as c:
        for i, data in enumerate(frames[:6]):  # one image per request, with its time in the query
            r = tools.post_frame(c, session, data, i * 0.5)
            assert r.status_code == 200, r.text
            assert r.json()["accepted"] == 1 and r.json()["t"] == [i * 0.5]
        files = [("frame", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate(frames[6:])]
        times = {"t": [str(3.0 + 0.5 * i) for i in range(6)]}
        r = c.post(f"/v1/sessions/{session}/frames", files=files, data=times)
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 6 and r.json()["t"][-1] == 5.5
        live = api.service.hosted[session].live
        api.call(live.wait_idle(60))
        mem = c.get(f"/v1/sessions/{session}/memory").json()
        assert mem["frames"]["received"] == 12
        assert mem["frames"]["processed"] + sum(mem["frames"]["dropped"].values()) == 12
        assert mem["perception"]["steps"] >= 1 and mem["memory"]["tokens"] > 0

        # plain JSON answer
        r = c.post(
            f"/v1/sessions/{session}/messages",
            params={"stream": "false"},
            json={"question": "What is shown?", "min_new_tokens": 3},
        )
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["question"] == "What is shown?" and answer["generated_tokens"] >= 1
        assert answer["finish_reason"] in ("stop", "length") and answer["ttft_s"] > 0

        # the same as Server-Sent Events: start, deltas, done; deltas add up to the answer
        with c.stream(
            "POST", f"/v1/sessions/{session}/messages", json={"question": "And now?", "min_new_tokens": 3}
        ) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            events = list(tools.sse_events(r))
        kinds = [e["event"] for e in events]
        assert kinds[0] == "answer_start" and kinds[-1] == "answer_done" and "answer_delta" in kinds
        text = "".join(e["data"]["text"] for e in events if e["event"] == "answer_delta")
        assert text == events[-1]["data"]["answer"]

    # the official openai client, streaming and not
    from openai import OpenAI

    client = OpenAI(base_url=api.url + "/v1", api_key="unused")
    model = f"vigil:{session}"
    completion = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Describe it."}], extra_body={"min_tokens": 2}
    )
    assert completion.choices[0].message.role == "assistant"
    assert completion.usage.completion_tokens >= 1 and completion.choices[0].finish_reason in ("stop", "length")
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Describe it again."}],
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"min_tokens": 2},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    assert any(ch.choices and ch.choices[0].finish_reason for ch in chunks)
    role_and_deltas = [ch for ch in chunks if ch.choices and ch.choices[0].delta.content is not None]
    assert len(role_and_deltas) >= 2  # the role chunk, then at least one piece of the answer
    ids = [m.id for m in client.models.list().data]
    assert model in ids
    with pytest.raises(Exception, match=r"model .gpt-4o. does not exist"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])


def test_events_resume_after_a_dropped_connection_without_gap(api: Any, session: str, tools: Any) -> None:
    with api.client() as c:
        for i in range(4):
            tools.post_frame(c, session, tools.jpeg(i), i)
        api.call(api.service.hosted[session].live.wait_idle(60))
        seen: list[int] = []
        with c.stream("GET", f"/v1/sessions/{session}/events") as r:  # read a few, then drop the connection
            for event in tools.sse_events(r):
                seen.append(int(event["id"]))
                if len(seen) == 3:
                    break
        for i in range(4, 8):  # more events happen while disconnected
            tools.post_frame(c, session, tools.jpeg(i), i)
        api.call(api.service.hosted[session].live.wait_idle(60))
        last = api.service.hosted[session].live.events.last_seq
        with c.stream("GET", f"/v1/sessions/{session}/events", headers={"Last-Event-ID": str(seen[-1])}) as r:
            for event in tools.sse_events(r):
                seen.append(int(event["id"]))
                if seen[-1] == last:
                    break
    assert seen == list(range(1, last + 1))  # every event once, in order


def test_websocket_stream_frames_in_events_out(api: Any, session: str, tools: Any) -> None:
    from websockets.sync.client import connect

    with connect(api.url.replace("http", "ws") + f"/v1/sessions/{session}/stream") as ws:
        for i in range(4):
            ws.send(json.dumps({"type": "time", "t": i * 0.5}))
            ws.send(tools.jpeg(i))
        ws.send(b"not an image")
        ws.send(json.dumps({"type": "ask", "question": "What now?"}))
        received: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        while not any(e["type"] == "answer_done" for e in received):
            assert time.monotonic() < deadline
            received.append(json.loads(ws.recv(timeout=60)))
    types = [e["type"] for e in received]
    assert types.count("frame_accepted") == 4
    errors = [e for e in received if e["type"] == "error"]
    assert errors and errors[0]["code"] == "invalid_frame"
    assert "question_queued" in types
    assert api.service.hosted[session].frames_in == 4  # the bad frame was refused, the session kept working


@pytest.mark.slow
def test_video_upload_is_played_as_live(api: Any, session: str, real_clips: Any) -> None:
    data = real_clips["bigbuckbunny"].read_bytes()
    with api.client() as c:
        r = c.post(
            f"/v1/sessions/{session}/video", params={"speed": "max"}, files={"file": ("bunny.mp4", data, "video/mp4")}
        )
        assert r.status_code == 202, r.text
        assert r.json()["state"] == "playing" and r.json()["source"] == "bunny.mp4"
        wait_until(lambda: c.get(f"/v1/sessions/{session}/video").json()["state"] != "playing", 60)
        video = c.get(f"/v1/sessions/{session}/video").json()
        assert video["state"] == "finished" and video["frames"] >= 5
        api.call(api.service.hosted[session].live.wait_idle(120))
        mem = c.get(f"/v1/sessions/{session}/memory").json()
        assert mem["frames"]["received"] == video["frames"]
        assert mem["frames"]["processed"] + sum(mem["frames"]["dropped"].values()) == video["frames"]


def test_bad_inputs_get_4xx_and_the_session_keeps_working(api: Any, session: str, tools: Any) -> None:
    base = f"/v1/sessions/{session}"
    with api.client() as c:
        cases = [
            (
                tools.post_frame(c, session, b"\xff\xd8garbage"),
                422,
                "invalid_frame",
            ),
            (
                c.post(base + "/frames", content=tools.jpeg(0, fmt="PNG")[:40], headers={"Content-Type": "image/png"}),
                422,
                "invalid_frame",
            ),
            (
                c.post(base + "/frames", content=b"hello", headers={"Content-Type": "text/plain"}),
                415,
                "unsupported_media",
            ),
            (tools.post_frame(c, session, b""), 422, "invalid_frame"),
            (
                tools.post_frame(c, session, tools.jpeg(1), -1),
                422,
                "invalid_time",
            ),
            (
                c.post(base + "/video", files={"file": ("x.mp4", b"this is not a video" * 10, "video/mp4")}),
                415,
                "unsupported_media",
            ),
            (
                c.post(
                    base + "/video",
                    content=b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100,
                    headers={"Content-Type": "video/mp4"},
                ),
                422,
                "unreadable_video",
            ),
            (c.post(base + "/video", json={"source": "/etc/passwd"}), 403, "source_not_allowed"),
            (c.post(base + "/messages", json={"question": ""}), 422, "invalid_request"),
            (
                c.post(base + "/messages", content=b"{not json", headers={"Content-Type": "application/json"}),
                422,
                "invalid_request",
            ),
            (c.get("/v1/sessions/nope/memory"), 404, "session_not_found"),
            (
                tools.post_frame(c, "nope", tools.jpeg(2)),
                404,
                "session_not_found",
            ),
            (c.get(base + "/events", headers={"Last-Event-ID": "abc"}), 422, "invalid_request"),
        ]
        for response, status, code in cases:
            assert response.status_code == status, (code, response.status_code, response.text)
            assert response.json()["error"]["code"] == code, response.text
        # a decompression bomb: a tiny PNG that declares a huge image
        bomb = _png_header_bomb()
        r = c.post(base + "/frames", content=bomb, headers={"Content-Type": "image/png"})
        assert r.status_code == 422 and "pixel" in r.json()["error"]["message"]
        # time going backwards
        assert tools.post_frame(c, session, tools.jpeg(3), 5).status_code == 200
        r = tools.post_frame(c, session, tools.jpeg(4), 4)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_time"
        # and the session still works
        r = tools.post_frame(c, session, tools.jpeg(5), 6)
        assert r.status_code == 200
        r = c.post(
            base + "/messages", params={"stream": "false"}, json={"question": "Still there?", "min_new_tokens": 1}
        )
        assert r.status_code == 200 and r.json()["generated_tokens"] >= 1
        assert c.get("/health").json()["status"] == "ok"


def _png_header_bomb() -> bytes:
    """A small PNG file that decodes to 5000 x 5000 pixels (more than the server's pixel limit)."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (5000, 5000)).save(out, format="PNG", optimize=True)
    assert len(out.getvalue()) < 100_000
    return out.getvalue()


def test_answer_stream_disconnect_cancels_the_answer(api: Any, session: str, tools: Any) -> None:
    with api.client() as c:
        tools.post_frame(c, session, tools.jpeg(0), 0)
        with c.stream(
            "POST",
            f"/v1/sessions/{session}/messages",
            json={"question": "Tell me a long story.", "max_new_tokens": 2000, "min_new_tokens": 2000},
        ) as r:
            first = next(tools.sse_events(r))
            assert first["event"] == "answer_start"
        live = api.service.hosted[session].live
        wait_until(
            lambda: any(
                e.type == "answer_done" and e.finish_reason in ("cancelled", "stop", "length")
                for e in live.events.since(0)
            ),
            60,
        )
        done = [e for e in live.events.since(0) if e.type == "answer_done"]
        assert done[-1].generated_tokens < 2000


def test_server_side_video_on_the_allow_list(start_server: Any, real_clips: Any) -> None:
    clip = real_clips["bigbuckbunny"]
    server = start_server(server={"video_allow": [str(clip.parent)]})
    with server.client() as c:
        sid = c.post("/v1/sessions", json={"fps": 2}).json()["id"]
        r = c.post(f"/v1/sessions/{sid}/video", json={"source": str(clip), "speed": "max"})
        assert r.status_code == 202, r.text
        r2 = c.post(f"/v1/sessions/{sid}/video", json={"source": str(clip)})
        assert r2.status_code in (202, 409)  # 409 while the first still plays
        if r2.status_code == 409:
            assert r2.json()["error"]["code"] == "video_playing"
        wait_until(lambda: c.get(f"/v1/sessions/{sid}/video").json()["state"] != "playing", 60)
        assert c.get(f"/v1/sessions/{sid}/video").json()["frames"] >= 5
        sneaky = str(clip.parent / ".." / ".." / "__init__.py")  # resolves outside the allowed folder
        r = c.post(f"/v1/sessions/{sid}/video", json={"source": sneaky})
        assert r.status_code == 403 and r.json()["error"]["code"] == "source_not_allowed"
        r = c.post(f"/v1/sessions/{sid}/video", json={"source": str(clip.parent / "missing.mp4")})
        assert r.status_code == 404 and r.json()["error"]["code"] == "source_not_found"
        c.delete(f"/v1/sessions/{sid}")


def test_events_older_than_the_kept_history_are_reported_lost(start_server: Any, tools: Any) -> None:
    from assistant.events import ErrorEvent

    server = start_server(session={"event_history": 100})
    with server.client() as c:
        sid = c.post("/v1/sessions").json()["id"]
        live = server.service.hosted[sid].live

        async def emit(n: int) -> int:
            for i in range(n):
                live.events.emit(ErrorEvent, 0.0, code="test", message=str(i))
            return live.events.last_seq

        last = server.call(emit(150))
        first_kept = live.events.since(0)[0].seq
        assert first_kept == last - 99
        with c.stream("GET", f"/v1/sessions/{sid}/events", params={"after": 0}) as r:
            events = tools.sse_events(r)
            lost = next(events)
            assert lost["event"] == "events_lost"
            assert (lost["data"]["first_seq"], lost["data"]["last_seq"]) == (1, first_kept - 1)
            ids = []
            for event in events:
                ids.append(int(event["id"]))
                if ids[-1] == last:
                    break
        assert ids == list(range(first_kept, last + 1))
        c.delete(f"/v1/sessions/{sid}")
