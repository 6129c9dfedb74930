"""API keys: who is calling, as an owner id that never reveals the key."""

from __future__ import annotations

import hashlib
import hmac

ANONYMOUS = "anonymous"


class Unauthorized(Exception):
    """Missing or unknown API key."""


class KeyRing:
    """The configured bearer keys; without any, every caller is the anonymous owner."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = {key: "k" + hashlib.sha256(key.encode()).hexdigest()[:16] for key in keys}

    @property
    def enabled(self) -> bool:
        """Whether callers need a key."""
        return bool(self._keys)

    def owner(self, authorization: str | None, query_key: str | None = None) -> str:
        """The owner id of a request from its ``Authorization`` header (or a query key where headers are impossible)."""
        if not self._keys:
            return ANONYMOUS
        presented = None
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                presented = token.strip()
        presented = presented or query_key
        if not presented:
            raise Unauthorized("this server needs an API key: send 'Authorization: Bearer <key>'")
        for key, owner in self._keys.items():  # compare every key in constant time
            if hmac.compare_digest(key.encode(), presented.encode()):
                return owner
        raise Unauthorized("unknown API key")

    def check_password(self, username: str, password: str) -> bool:
        """For the browser app's login form: the password is an API key."""
        try:
            self.owner(f"Bearer {password}")
        except Unauthorized:
            return False
        return True
