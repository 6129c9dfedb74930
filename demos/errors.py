"""The one error type of the browser app."""

from __future__ import annotations


class UiError(ValueError):
    """A problem with one request from the page or a client: shown as a clear message, nothing else is harmed."""
