"""``CliError``: a user's mistake on the command line."""

from __future__ import annotations

from serving.runtime import SetupError


class CliError(SetupError):
    """A user-facing error in the command line: printed as one line, exit code 2."""
