"""``/docs`` without internet, and the token counters of ``/metrics`` (open to scrapers when configured)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.support import wait_until


def test_docs_load_with_no_external_url(api: Any) -> None:
    with api.client() as c:
        page = c.get("/docs")
        assert page.status_code == 200 and "swagger-ui" in page.text
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text) + re.findall(r"url: '([^']+)'", page.text)
        assert urls and all(u.startswith("/") for u in urls), urls  # every asset and the schema from this server
        assert "cdn" not in page.text and "https://" not in page.text
        for url in urls:
            r = c.get(url)
            assert r.status_code == 200 and len(r.content) > 100, url
        assert "SwaggerUIBundle" in c.get("/docs/assets/swagger-ui-bundle.js").text
        assert c.get("/docs/assets/../../etc/passwd").status_code == 404
        assert c.get("/docs/assets/index.html").status_code == 404  # only the page's own assets
        assert c.get("/redoc").status_code == 404  # ReDoc would need a CDN


def test_metrics_count_prompt_cached_and_generated_tokens(api: Any, tools: Any) -> None:
    def counters() -> dict[str, float]:
        with api.client() as c:
            text = c.get("/metrics").text
        found = {}
        for name in ("prompt", "cached", "generated"):
            values = re.findall(rf'^vigil_{name}_tokens_total{{kind="question"}} (\S+)$', text, re.M)
            found[name] = float(values[0]) if values else 0.0
        return found

    before = counters()
    with api.client() as c:
        sid = c.post("/v1/sessions", json={}).json()["id"]
        try:
            tools.post_frame(c, sid, tools.jpeg(0), 0.0)
            tools.post_frame(c, sid, tools.jpeg(1), 1.0)
            body = {"question": "What?", "min_new_tokens": 2}
            answer = c.post(f"/v1/sessions/{sid}/messages", params={"stream": "false"}, json=body).json()
        finally:
            c.delete(f"/v1/sessions/{sid}")
    # the counters follow the session's events: wait until the answer is counted
    after = wait_until(lambda: (n := counters())["generated"] > before["generated"] and n, what="counted answer")
    assert after["generated"] - before["generated"] == answer["generated_tokens"] >= 2
    assert after["cached"] - before["cached"] == answer["cached_tokens"]
    grew = after["prompt"] - before["prompt"]
    assert grew >= answer["prompt_tokens"] + answer["cached_tokens"] and grew > after["cached"] - before["cached"]


@pytest.fixture(scope="module")
def guarded_open_metrics(start_server: Any) -> Any:
    return start_server(server={"api_keys": ["metrics-key-1"], "metrics_open": True})


def test_metrics_open_to_scrapers_while_the_api_needs_a_key(guarded_open_metrics: Any) -> None:
    with guarded_open_metrics.client() as c:
        assert c.get("/metrics").status_code == 200 and "vigil_generated_tokens" in c.get("/metrics").text
        assert c.get("/v1/sessions").status_code == 401
