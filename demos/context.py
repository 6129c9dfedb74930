"""What every handler of the app shares: the service, the tabs' sessions, who is asking, and input checks."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from assistant.config import VigilConfig
from demos.errors import UiError
from demos.login import KeyLogin
from demos.registry import TabRegistry
from demos.settings import SessionSettings
from demos.ui_sessions import UiSession
from serving.auth import ANONYMOUS
from serving.service import VigilService
from serving.uploads import UploadError, allowed_source

ANSWER_TIMEOUT_S = 120.0
STREAM_URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "rtmps://", "http://", "https://", "srt://", "udp://")
"""What a tab may enter as a stream URL (played only under an allowed prefix)."""


@contextlib.contextmanager
def shown_as_gradio_error() -> Iterator[None]:
    """Turn a UiError into the gr.Error gradio shows on the page (and returns to a client)."""
    try:
        yield
    except UiError as exc:
        raise gr.Error(str(exc)) from None


@dataclass
class AppContext:
    """The app's shared state; handlers of the page and of the plain endpoints take it."""

    service: VigilService
    config: VigilConfig
    registry: TabRegistry
    login: KeyLogin | None = None
    """Set when the server has API keys: who a logged-in user name acts as."""
    answer_options: dict[str, Any] = field(default_factory=dict)
    """Engine options sent with every question (e.g. ``min_new_tokens``)."""
    url_prefixes: tuple[str, ...] = ()
    """Stream URL prefixes a tab may ask the server to play (``STREAM_URL_SCHEMES``: any, for a local demo)."""
    model_name: str | None = None

    @property
    def defaults(self) -> SessionSettings:
        """The settings a new tab starts with."""
        return SessionSettings.defaults(self.config)

    def owner(self, request: gr.Request | None) -> str:
        """The service owner of a request: its login's API key owner, or anonymous without keys."""
        if self.login is None:
            return ANONYMOUS
        owner = self.login.owner_of(getattr(request, "username", None))
        if owner is None:
            raise UiError("log in with an API key of this server to use the app")
        return owner

    async def open(self, settings: SessionSettings, request: gr.Request | None) -> UiSession:
        """A new session for the tab or client of ``request`` (UiError when refused)."""
        tab = request.session_hash if request is not None else None
        return await self.registry.open(settings, tab=tab, owner=self.owner(request))

    def lookup(self, ui_id: str | None) -> UiSession:
        """A tab's session, or the gr.Error that says it ended."""
        with shown_as_gradio_error():
            return self.registry.get(ui_id)

    def playable(self, url: str | None, upload: str | None) -> tuple[str, str]:
        """What to play and its label: an uploaded file, or a stream URL this server allows."""
        if upload:
            return upload, Path(upload).name
        url = (url or "").strip()
        if not url:
            raise UiError("choose a video file or enter a stream URL")
        if not url.lower().startswith(STREAM_URL_SCHEMES):
            raise UiError(
                f"enter a stream URL ({', '.join(s.rstrip(':/') for s in STREAM_URL_SCHEMES)}) or upload a file"
            )
        if self.url_prefixes == STREAM_URL_SCHEMES:  # a local `vigil demo`: any stream URL
            return url, url
        try:  # the service's own check: scheme, host and path prefix, no `..`
            allowed_source(url, self.url_prefixes)
        except UploadError:
            raise UiError(
                "this server does not play stream URLs it was not told to allow (server.video_allow)"
            ) from None
        return url, url

    def read_frame(self, path: str | None) -> bytes:
        """The bytes of an uploaded frame image, within the server's frame size limit."""
        if not path:
            raise UiError("no frame image was sent")
        size = os.path.getsize(path)
        limit = self.config.server.limits.max_frame_bytes
        if size > limit:
            raise UiError(f"the frame has {size} bytes; at most {limit} are allowed")
        return Path(path).read_bytes()
