"""The app's login when the API has keys: the password is an API key, the user name is bound to its owner."""

from __future__ import annotations

from serving.auth import KeyRing, Unauthorized


class KeyLogin:
    """gradio's ``auth`` callable for a server with API keys, and the owner of each logged-in user name.

    gradio hands a handler the user name of the login (``request.username``), never the password. So a user name
    belongs to the owner of the first key that logged in with it: a login with another key under that name is
    refused, and a tab's sessions are those of the key its user name belongs to (what ``/v1/sessions`` lists with
    that key). The bindings live as long as the process, like gradio's login tokens.
    """

    def __init__(self, keys: KeyRing) -> None:
        self.keys = keys
        self._owners: dict[str, str] = {}

    def __call__(self, username: str, password: str) -> bool:
        """True when ``password`` is a known API key and ``username`` is free or already that key's."""
        try:
            owner = self.keys.owner(f"Bearer {password}")
        except Unauthorized:
            return False
        return self._owners.setdefault(username, owner) == owner

    def owner_of(self, username: str | None) -> str | None:
        """The owner a logged-in user name acts as (None for a name that never logged in)."""
        return self._owners.get(username or "")
