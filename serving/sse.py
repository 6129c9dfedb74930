"""Server-Sent Events framing."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import StreamingResponse

KEEPALIVE = b": keepalive\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(data: Any, *, event: str | None = None, id: int | None = None) -> bytes:
    """One SSE message; ``data`` is sent as JSON unless it is already a string."""
    lines = []
    if id is not None:
        lines.append(f"id: {id}")
    if event is not None:
        lines.append(f"event: {event}")
    text = data if isinstance(data, str) else to_json(data)
    lines.extend(f"data: {line}" for line in text.split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


def to_json(data: Any) -> str:
    """Strict JSON (no ``Infinity`` or ``NaN``: a non-finite number is sent as null)."""
    try:
        return json.dumps(data, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(_finite(data), separators=(",", ":"), allow_nan=False)


def _finite(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data


def sse_response(body: AsyncIterator[bytes]) -> StreamingResponse:
    """A streaming ``text/event-stream`` response that proxies do not buffer."""
    return StreamingResponse(body, media_type="text/event-stream", headers=HEADERS)
