"""API keys, ownership and limits over real HTTP."""

from __future__ import annotations

from typing import Any

import pytest

KEY_A, KEY_B = "key-alpha-0001", "key-bravo-0002"


@pytest.fixture(scope="module")
def guarded(start_server: Any) -> Any:
    return start_server(
        server={
            "api_keys": [KEY_A, KEY_B],
            "limits": {"max_sessions_per_key": 2, "max_fps": 2, "max_body_bytes": 64 * 1024},
        }
    )


def test_every_route_but_health_needs_a_key(guarded: Any) -> None:
    with guarded.client() as c:
        assert c.get("/health").status_code == 200
        for method, path in (
            ("GET", "/v1/sessions"),
            ("POST", "/v1/sessions"),
            ("GET", "/metrics"),
            ("POST", "/v1/chat/completions"),
            ("GET", "/v1/models"),
        ):
            r = c.request(method, path, json={})
            assert r.status_code == 401, (path, r.text)
            assert r.json()["error"]["code"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
    with guarded.client("not-a-valid-key") as c:
        r = c.get("/v1/sessions")
        assert r.status_code == 401 and "unknown API key" in r.json()["error"]["message"]


def test_a_key_cannot_see_another_keys_session(guarded: Any, tools: Any) -> None:
    with guarded.client(KEY_A) as a, guarded.client(KEY_B) as b:
        sid = a.post("/v1/sessions").json()["id"]
        try:
            assert [s["id"] for s in b.get("/v1/sessions").json()["data"]] == []
            jpeg = {"content": tools.jpeg(0), "headers": {"Content-Type": "image/jpeg"}}
            for r in (
                b.get(f"/v1/sessions/{sid}"),
                b.get(f"/v1/sessions/{sid}/memory"),
                b.post(f"/v1/sessions/{sid}/frames", **jpeg),
                b.post(f"/v1/sessions/{sid}/messages", json={"question": "hi"}),
                b.get(f"/v1/sessions/{sid}/events"),
                b.delete(f"/v1/sessions/{sid}"),
                b.post(
                    "/v1/chat/completions",
                    json={"model": f"vigil:{sid}", "messages": [{"role": "user", "content": "hi"}]},
                ),
            ):
                assert r.status_code == 404 and r.json()["error"]["code"] == "session_not_found", r.text
            assert a.get(f"/v1/sessions/{sid}").status_code == 200  # untouched for its owner
        finally:
            a.delete(f"/v1/sessions/{sid}")


def test_sessions_per_key_limit_is_429(guarded: Any) -> None:
    with guarded.client(KEY_A) as a, guarded.client(KEY_B) as b:
        ids = [a.post("/v1/sessions").json()["id"] for _ in range(2)]
        try:
            r = a.post("/v1/sessions")
            assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_sessions"
            assert int(r.headers["retry-after"]) > 0
            other = b.post("/v1/sessions")  # another key is not affected
            assert other.status_code == 201
            b.delete(f"/v1/sessions/{other.json()['id']}")
            a.delete(f"/v1/sessions/{ids.pop()}")
            assert a.post("/v1/sessions").status_code == 201  # room again
        finally:
            for sid in [s["id"] for s in a.get("/v1/sessions").json()["data"]]:
                a.delete(f"/v1/sessions/{sid}")


def test_frame_rate_and_body_limits(guarded: Any, tools: Any) -> None:
    with guarded.client(KEY_A) as a:
        sid = a.post("/v1/sessions").json()["id"]
        try:
            codes = []
            for i in range(12):  # burst 4 at 2 fps: the rest of an instant burst is refused
                r = tools.post_frame(a, sid, tools.jpeg(i))
                codes.append(r.status_code)
                if r.status_code == 429:
                    assert r.json()["error"]["code"] == "rate_limited" and int(r.headers["retry-after"]) >= 1
            assert codes.count(200) >= 4 and 429 in codes
            big = b"\xff\xd8" + b"\0" * (128 * 1024)
            r = tools.post_frame(a, sid, big)
            assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
            hosted = guarded.service.hosted[sid]
            assert hosted.frames_in == codes.count(200)  # refused frames never reached the session
            r = a.post(
                "/v1/sessions", content=b"{" + b" " * (100 * 1024) + b"}", headers={"Content-Type": "application/json"}
            )
            assert r.status_code == 413
        finally:
            a.delete(f"/v1/sessions/{sid}")


def test_websocket_needs_a_key_too(guarded: Any, tools: Any) -> None:
    import json

    from websockets.sync.client import connect

    with guarded.client(KEY_A) as a:
        sid = a.post("/v1/sessions").json()["id"]
    ws_url = guarded.url.replace("http", "ws") + f"/v1/sessions/{sid}/stream"
    try:
        with connect(ws_url) as ws:  # no key: one error message, then closed
            assert json.loads(ws.recv(timeout=10))["code"] == "unauthorized"
        with connect(ws_url + f"?api_key={KEY_B}") as ws:  # another key: the session does not exist for it
            assert json.loads(ws.recv(timeout=10))["code"] == "session_not_found"
        with connect(ws_url + f"?api_key={KEY_A}") as ws:  # a browser passes its key in the query
            ws.send(json.dumps({"type": "time", "t": 0}))
            ws.send(tools.jpeg(0))
            while (event := json.loads(ws.recv(timeout=30)))["type"] != "frame_accepted":
                assert event["type"] != "error", event
    finally:
        with guarded.client(KEY_A) as a:
            a.delete(f"/v1/sessions/{sid}")
