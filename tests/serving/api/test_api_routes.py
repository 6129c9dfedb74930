"""The app is assembled from the routers in ``serving.routes``: every route is mounted and documented."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from fastapi.routing import APIRoute, APIWebSocketRoute

import serving.routes


def _router_modules() -> list[Any]:
    modules = [
        importlib.import_module(f"serving.routes.{m.name}") for m in pkgutil.iter_modules(serving.routes.__path__)
    ]
    return [m for m in modules if hasattr(m, "router")]


def test_every_router_is_mounted_with_its_error_responses(api: Any) -> None:
    with api.client() as c:
        schema = c.get("/openapi.json").json()
    modules = _router_modules()
    assert len(modules) >= 8
    for module in modules:
        routes = module.router.routes
        assert routes, module.__name__
        for route in routes:
            if isinstance(route, APIWebSocketRoute):  # not in OpenAPI: it must answer a real connection
                _assert_websocket_served(api.url, route.path)
                continue
            assert isinstance(route, APIRoute)
            for method in route.methods:
                operation = schema["paths"].get(route.path, {}).get(method.lower())
                assert operation is not None, (module.__name__, method, route.path)
                for code, response in operation["responses"].items():  # every error has the one error body
                    if code.isdigit() and int(code) >= 400 and int(code) != 422:  # 422 may be FastAPI's own
                        ref = response["content"]["application/json"]["schema"]["$ref"]
                        assert ref.endswith("/ErrorResponse"), (route.path, method, code, ref)


def _assert_websocket_served(url: str, path: str) -> None:
    import json

    from websockets.sync.client import connect

    with connect(url.replace("http", "ws") + path.replace("{session_id}", "no-such-session")) as ws:
        assert json.loads(ws.recv(timeout=10))["code"] == "session_not_found"


def test_session_routes_document_their_errors_with_the_error_body(api: Any) -> None:
    with api.client() as c:
        paths = c.get("/openapi.json").json()["paths"]
    for path, method in (
        ("/v1/sessions/{session_id}/frames", "post"),
        ("/v1/sessions/{session_id}/video", "post"),
        ("/v1/sessions/{session_id}/messages", "post"),
        ("/v1/sessions/{session_id}/memory", "get"),
    ):
        responses = paths[path][method]["responses"]
        for code in ("404", "410", "422", "429"):
            ref = responses[code]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/ErrorResponse"), (path, code)
    assert paths["/v1/sessions/{session_id}/memory"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ]["$ref"].endswith("/MemoryView")


def test_a_session_made_without_http_is_listed_counted_and_served(start_server: Any, tools: Any) -> None:
    """A front end (the browser app) creates sessions through the service: the API sees them like its own."""
    from serving.schemas import SessionCreate

    server = start_server(server={"limits": {"max_sessions_per_key": 1}})
    view = server.call(server.service.create("anonymous", SessionCreate(fps=2, metadata={"via": "app"})))
    with server.client() as c:
        assert [s["id"] for s in c.get("/v1/sessions").json()["data"]] == [view.id]
        assert c.get(f"/v1/sessions/{view.id}").json()["options"]["metadata"] == {"via": "app"}
        r = c.post("/v1/sessions")  # the key's limit counts the session made in-process
        assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_sessions"
        r = tools.post_frame(c, view.id, tools.jpeg(0), 0.0)
        assert r.status_code == 200 and r.json()["accepted"] == 1 and r.json()["t"] == [0.0]
        assert server.service.hosted[view.id].frames_in == 1
        sessions = [line for line in c.get("/metrics").text.splitlines() if line.startswith("vigil_sessions ")]
        assert float(sessions[0].split()[-1]) == 1.0
        server.call(server.service.delete("anonymous", view.id))
        assert c.get(f"/v1/sessions/{view.id}").status_code == 404
        assert c.post("/v1/sessions").status_code == 201  # room again
