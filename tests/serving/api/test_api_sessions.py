"""Sessions over real HTTP: create, list, read, delete; per-session options; health and metrics."""

from __future__ import annotations

from typing import Any

from tests.support import wait_until


def test_session_lifecycle(api: Any) -> None:
    with api.client() as c:
        r = c.post("/v1/sessions", json={"fps": 2, "budget_tokens": 256, "proactive": "scene", "metadata": {"k": "v"}})
        assert r.status_code == 201, r.text
        session = r.json()
        sid = session["id"]
        assert session["status"] == "live" and session["options"]["fps"] == 2
        assert api.service.hosted[sid].config.perception.fps == 2
        assert api.service.hosted[sid].config.memory.budget_tokens == 256
        assert sid in [s["id"] for s in c.get("/v1/sessions").json()["data"]]
        assert c.get(f"/v1/sessions/{sid}").json()["options"]["metadata"] == {"k": "v"}
        assert c.delete(f"/v1/sessions/{sid}").status_code == 204
        r = c.get(f"/v1/sessions/{sid}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "session_not_found"
        assert sid not in api.service.hosted


def test_invalid_session_options_are_422(api: Any) -> None:
    with api.client() as c:
        before = len(api.service.hosted)
        for body in ({"fps": -1}, {"proactive": "loud"}, {"budget_tokens": 10**9}, {"unknown": 1}):
            r = c.post("/v1/sessions", json=body)
            assert r.status_code == 422, (body, r.text)
            assert r.json()["error"]["code"] == "invalid_request" and r.json()["error"]["message"]
        # the config tree's own checks: a budget bigger than the engine's KV cap
        r = c.post("/v1/sessions", json={"budget_tokens": 100_000})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_config"
        assert "kv_cap_tokens" in r.json()["error"]["message"]
        assert len(api.service.hosted) == before


def test_health_and_metrics(api: Any) -> None:
    with api.client() as c:
        health = c.get("/health").json()
        assert health["status"] == "ok" and health["directory"] == "local"
        sid = c.post("/v1/sessions").json()["id"]
        r = c.post(f"/v1/sessions/{sid}/frames", content=_png(), headers={"Content-Type": "image/png"})
        assert r.status_code == 200
        text = c.get("/metrics").text
        assert "vigil_frames_received_total" in text and "vigil_sessions" in text
        received = [line for line in text.splitlines() if line.startswith("vigil_frames_received_total")]
        assert float(received[0].split()[-1]) >= 1
        c.delete(f"/v1/sessions/{sid}")


def test_openapi_schema_lists_the_contract(api: Any) -> None:
    with api.client() as c:
        paths = c.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/sessions",
        "/v1/sessions/{session_id}",
        "/v1/sessions/{session_id}/frames",
        "/v1/sessions/{session_id}/video",
        "/v1/sessions/{session_id}/messages",
        "/v1/sessions/{session_id}/events",
        "/v1/sessions/{session_id}/memory",
        "/v1/chat/completions",
        "/health",
        "/metrics",
    ):
        assert path in paths, path


def _png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(out, format="PNG")
    return out.getvalue()


def test_idle_sessions_are_closed_unless_their_front_end_keeps_them(start_server: Any) -> None:
    import math

    from serving.schemas import SessionCreate

    server = start_server(server={"idle_timeout_s": 0.4})
    kept = server.call(server.service.create("anonymous", SessionCreate(), idle_timeout_s=math.inf))
    with server.client() as c:
        idle = c.post("/v1/sessions").json()["id"]
        wait_until(lambda: idle not in server.service.hosted, 20, what="the idle session to be closed")
        assert c.get(f"/v1/sessions/{idle}").status_code == 404
        assert c.get(f"/v1/sessions/{kept.id}").json()["status"] == "live"
        c.delete(f"/v1/sessions/{kept.id}")
