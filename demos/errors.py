"""The one error type of the browser app."""

from __future__ import annotations


class UiError(ValueError):
    """A problem with one request from the page or a client: shown as a clear message, nothing else is harmed."""


class SessionRefused(UiError):
    """The service would not start a session now: a limit (sessions per key or per worker) was reached."""
