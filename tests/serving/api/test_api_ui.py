"""The browser app mounted by the API server at /ui, on the same orchestrator."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.slow
def test_ui_is_mounted_beside_the_api(start_server: Any) -> None:
    server = start_server(server={"ui": True})
    with server.client() as c:
        page = c.get("/ui/", follow_redirects=True)
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert c.get("/health").json()["status"] == "ok"  # the API still answers beside it
        assert c.post("/v1/sessions").status_code == 201

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
