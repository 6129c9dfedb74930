"""Property-based requests generated from the OpenAPI schema: whatever the input, never a 5xx."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

pytestmark = pytest.mark.slow


def test_no_server_errors_for_any_schema_input(start_server: Any) -> None:
    server = start_server(server={"limits": {"max_sessions_per_key": 10_000}})
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    calls = {"n": 0, "4xx": 0}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=20, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            response = case.call(base_url=server.url, timeout=30)
            calls["n"] += 1
            assert response.status_code < 500, (case.as_curl_command(), response.status_code, response.text[:300])
            if response.status_code >= 400:
                calls["4xx"] += 1
                error = response.json()["error"]
                assert error["code"] and error["message"]

        check()
    assert calls["n"] >= 10 * len(operations) and calls["4xx"] > 0
    with server.client() as c:  # still serving normally afterwards
        assert c.get("/health").json()["status"] == "ok"
