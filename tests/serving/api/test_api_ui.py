"""The browser app mounted by the API server at /ui, on the same orchestrator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .conftest import jpeg


@pytest.mark.slow
def test_ui_is_mounted_beside_the_api(start_server: Any) -> None:
    server = start_server(server={"ui": True})
    with server.client() as c:
        page = c.get("/ui/", follow_redirects=True)
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert c.get("/health").json()["status"] == "ok"  # the API still answers beside it
        assert c.post("/v1/sessions").status_code == 201
        config = c.get("/ui/config").text  # the test-model banner names the command that started this app
        assert "vigil serve --ui --model" in config and "vigil demo" not in config

    from gradio_client import Client

    client = Client(server.url + "/ui/", verbose=False)
    before = set(server.service.orchestrator.sessions)
    started = client.predict(2.0, None, 1024, "scene", "", api_name="/start_session")
    new = set(server.service.orchestrator.sessions) - before
    assert len(new) == 1 and started  # the app's session runs on the server's orchestrator


def test_ui_asks_for_a_key_when_the_api_has_keys(start_server: Any) -> None:
    server = start_server(server={"ui": True, "api_keys": ["ui-key-000001"]})
    with server.client() as c:
        page = c.get("/ui/", follow_redirects=True)
        assert page.status_code == 200
        locked = c.get("/ui/config")
        assert locked.status_code == 401 and "Not authenticated" in locked.text
        assert c.post("/ui/login", data={"username": "me", "password": "wrong-key"}).status_code >= 400
        assert c.post("/ui/login", data={"username": "me", "password": "ui-key-000001"}).status_code == 200
        assert c.get("/ui/config").status_code == 200  # the key opened the app
        assert c.get("/v1/sessions").status_code == 401  # the API still wants the bearer key


def _live_ids(response: Any) -> set[str]:
    assert response.status_code == 200, response.text
    return {s["id"] for s in response.json()["data"]}


def _metric(text: str, name: str) -> float:
    """The value of an unlabelled sample in Prometheus exposition text."""
    line = next(line for line in text.splitlines() if line.startswith(name + " "))
    return float(line.split()[1])


@pytest.mark.slow
def test_a_tab_session_is_a_session_of_the_service(start_server: Any, tmp_path: Path) -> None:
    from gradio_client import Client, handle_file

    server = start_server(server={"ui": True})
    client = Client(server.url + "/ui/", verbose=False)
    started = client.predict(2.0, None, 512, "off", "", api_name="/start_session")
    live_id = started["live_session_id"]
    (tmp_path / "frame.jpg").write_bytes(jpeg(1))
    pushed = client.predict(
        started["session_id"], handle_file(str(tmp_path / "frame.jpg")), 0.0, api_name="/push_frame"
    )
    assert pushed["accepted"] is True
    with server.client() as c:
        assert live_id in _live_ids(c.get("/v1/sessions"))  # the same directory as the API's sessions
        assert c.get(f"/v1/sessions/{live_id}").json()["options"]["budget_tokens"] == 512
        metrics = c.get("/metrics").text
        assert _metric(metrics, "vigil_sessions") == 1.0
        assert _metric(metrics, "vigil_frames_received_total") == 1.0  # the tab's frame went through the service
        assert client.predict(started["session_id"], api_name="/end_session") == {"closed": True}
        assert live_id not in _live_ids(c.get("/v1/sessions"))
        assert _metric(c.get("/metrics").text, "vigil_sessions") == 0.0


@pytest.mark.slow
def test_tab_sessions_belong_to_the_login_key_and_its_session_limit(start_server: Any) -> None:
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    keys = ["ui-key-000001", "ui-key-000002"]
    server = start_server(server={"ui": True, "api_keys": keys, "limits": {"max_sessions_per_key": 2}})
    alice = Client(server.url + "/ui/", auth=("alice", keys[0]), verbose=False)
    first = alice.predict(2.0, None, 512, "off", "", api_name="/start_session")
    with server.client(keys[0]) as mine, server.client(keys[1]) as theirs:
        assert first["live_session_id"] in _live_ids(mine.get("/v1/sessions"))
        assert first["live_session_id"] not in _live_ids(theirs.get("/v1/sessions"))
        assert mine.post("/v1/sessions").status_code == 201  # the key's second session, from the API
        with pytest.raises(AppError, match="this API key has 2 open sessions; close one first"):
            alice.predict(2.0, None, 512, "off", "", api_name="/start_session")
        # the refusal harms nothing: the tab's session goes on, and another key's user can start one
        assert alice.predict(first["session_id"], api_name="/stats")["ended"] is None
        bob = Client(server.url + "/ui/", auth=("bob", keys[1]), verbose=False)
        second = bob.predict(2.0, None, 512, "off", "", api_name="/start_session")
        assert _live_ids(theirs.get("/v1/sessions")) == {second["live_session_id"]}
        # a user name belongs to the key that first logged in with it
        assert theirs.post("/ui/login", data={"username": "alice", "password": keys[1]}).status_code >= 400


@pytest.mark.slow
def test_tab_sessions_end_when_the_server_stops(start_server: Any) -> None:
    from gradio_client import Client

    server = start_server(server={"ui": True})
    started = Client(server.url + "/ui/", verbose=False).predict(2.0, None, 512, "off", "", api_name="/start_session")
    live = server.service.orchestrator.sessions[started["live_session_id"]]
    ui_app = next(route.app for route in server.app.routes if getattr(route, "path", "") == "/ui")
    registry = ui_app.get_blocks().vigil_sessions
    assert list(registry.sessions) == [started["session_id"]]
    server.background.stop()
    assert live.closed and live.events.since(0)[-1].reason == "shutdown"
    assert not registry.sessions and registry.loop is None  # the app's sessions and reaper ended first
    assert not server.service.hosted and not server.service.orchestrator.sessions
