"""The browser app's tabs and clients, each with its own session on the service, and the idle reaper of tabs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from dataclasses import dataclass, field

from demos.errors import SessionRefused, UiError
from demos.settings import SessionSettings
from demos.ui_sessions import UiSession
from serving.auth import ANONYMOUS
from serving.service import ServiceError, VigilService

log = logging.getLogger(__name__)


@dataclass(slots=True)
class TabRegistry:
    """The app's tabs and API clients, each with its own session created through the service.

    A tab's session ends when the tab closes (``close_tab``) or after ``idle_timeout_s`` without a sign of life
    (a vanished client: the page polls twice a second, so only a dead tab goes quiet). The service's own idle
    timeout (``server.idle_timeout_s``) applies as well, since the tab's polls are what keeps it alive there.
    """

    service: VigilService
    idle_timeout_s: float = 120.0
    reap_every_s: float = 5.0
    sessions: dict[str, UiSession] = field(default_factory=dict)
    _reaper: asyncio.Task | None = None

    def __post_init__(self) -> None:
        if not self.idle_timeout_s > 0 or not self.reap_every_s > 0:
            raise ValueError("idle_timeout_s and reap_every_s must be positive")

    async def open(self, settings: SessionSettings, tab: str | None = None, owner: str = ANONYMOUS) -> UiSession:
        """A new tab session with its own service session (UiError when a limit refuses it or the engine fails)."""
        self.ensure_reaper()
        ui = UiSession(f"u{uuid.uuid4().hex[:16]}", tab, owner, self.service)
        await self._start_live(ui, settings)
        self.sessions[ui.ui_id] = ui
        return ui

    async def restart(self, ui: UiSession, settings: SessionSettings) -> UiSession:
        """Replace a tab's session by one with new settings (the chat stays)."""
        self.ensure_reaper()
        await ui.stop_playback()
        await self._close_live(ui, "restarted")
        await self._start_live(ui, settings)
        self.sessions[ui.ui_id] = ui
        return ui

    async def _start_live(self, ui: UiSession, settings: SessionSettings) -> None:
        try:
            # the app ends its tabs' sessions itself (tab closed, or not seen for ui_idle_timeout_s)
            view = await self.service.create(ui.owner, settings.spec(), idle_timeout_s=math.inf)
        except ServiceError as exc:  # a limit (sessions per key, per worker) or options the model cannot take
            raise (SessionRefused if exc.status in (429, 503) else UiError)(exc.message) from None
        except Exception as exc:
            log.warning("could not start a session: %s", exc)
            raise UiError(f"the engine could not start a session: {exc}") from None
        ui.attach(await self.service.get(ui.owner, view.id), settings)
        ui.note(f"Session started: {settings.describe()}")
        ui.touch()

    def get(self, ui_id: str | None) -> UiSession:
        """A tab's session by its id (UiError when it ended or expired)."""
        ui = self.sessions.get(ui_id or "")
        if ui is None:
            raise UiError(f"no session {ui_id!r} (it ended or expired); start a new one")
        ui.touch()
        return ui

    async def _close_live(self, ui: UiSession, reason: str) -> None:
        """End the tab's service session, its close event carrying ``reason``."""
        live = ui.live
        if live is None:
            return
        await live.close(reason)  # no-op when the service already closed it (its idle timeout)
        with contextlib.suppress(ServiceError):  # gone already: nothing to delete
            await self.service.delete(ui.owner, live.session_id)
        ui.sync()

    async def close(self, ui_id: str, reason: str = "closed") -> bool:
        """End a tab's session; False when there was none."""
        ui = self.sessions.pop(ui_id, None)
        if ui is None:
            return False
        await ui.stop_playback()
        await self._close_live(ui, reason)
        return True

    async def close_tab(self, tab: str, reason: str = "tab closed") -> int:
        """End every session a browser tab (gradio session hash) opened; returns how many."""
        ids = [ui_id for ui_id, ui in self.sessions.items() if ui.tab == tab]
        for ui_id in ids:
            await self.close(ui_id, reason)
        return len(ids)

    async def reap(self, now: float | None = None) -> list[str]:
        """End the sessions of clients not seen for ``idle_timeout_s``."""
        now = time.monotonic() if now is None else now
        stale = [ui_id for ui_id, ui in self.sessions.items() if now - ui.last_seen > self.idle_timeout_s]
        for ui_id in stale:
            await self.close(ui_id, "idle timeout")
        return stale

    def ensure_reaper(self) -> None:
        """Start the idle reaper on the running loop (once; again if that loop changed)."""
        loop = asyncio.get_running_loop()
        task = self._reaper
        if task is not None and not task.done() and task.get_loop() is loop:
            return
        self._reaper = loop.create_task(self._reap_forever(), name="vigil-ui-reaper")

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop the sessions run on (known once the first session opened)."""
        return self._reaper.get_loop() if self._reaper is not None else None

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reap_every_s)
            try:
                await self.reap()
            except Exception:  # the reaper must outlive one bad close
                log.exception("closing idle sessions failed")

    async def close_all(self, reason: str = "shutdown") -> None:
        """End every session and the reaper."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reaper
            self._reaper = None
        for ui_id in list(self.sessions):
            await self.close(ui_id, reason)
