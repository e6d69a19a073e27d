"""Who is asking: operator logins checked against hashed passwords, signed session cookies for
the pages, signed bearer tokens for the API, CSRF tokens for every state-changing form, and a
brake on password guessing.

Passwords are only ever stored as Argon2 hashes (`tablesync web-user NAME` makes one). A session
cookie or a token is signed with TABLESYNC_WEB_SECRET_KEY, so every web replica sharing the key
accepts it, and nothing about sessions lives in the store.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

_hasher = PasswordHasher()
_DUMMY = _hasher.hash("not a password anyone has")  # unknown users cost the same time as known ones


class LoginError(Exception):
    """The credentials were refused; the message is safe to show (it never says which part was wrong)."""


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def is_password_hash(value: str) -> bool:
    return value.startswith("$argon2")


@dataclass
class Throttle:
    """At most `attempts` failed logins per user name within `window` seconds, then refusals until
    the oldest failure ages out: slows guessing to a crawl without locking anyone out for long."""

    attempts: int = 5
    window: float = 300.0
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def retry_after(self, name: str) -> float:
        now = time.monotonic()
        with self._lock:
            failures = self._failures.get(name.lower())
            while failures and now - failures[0] > self.window:
                failures.popleft()
            if failures is not None and len(failures) >= self.attempts:
                return self.window - (now - failures[0])
        return 0.0

    def failed(self, name: str) -> None:
        with self._lock:
            self._failures.setdefault(name.lower(), deque()).append(time.monotonic())

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(name.lower(), None)


@dataclass
class Auth:
    users: dict[str, str]  # name → Argon2 hash
    secret_key: str
    token_hours: float = 12.0
    throttle: Throttle = field(default_factory=Throttle)

    def check(self, name: str, password: str) -> str:
        """The operator's name if the password is theirs; LoginError otherwise."""
        wait = self.throttle.retry_after(name)
        if wait > 0:
            raise LoginError(f"too many failed logins for this name: try again in {int(wait) + 1} s")
        stored = self.users.get(name)
        try:
            ok = _hasher.verify(stored or _DUMMY, password) and stored is not None
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok:
            self.throttle.failed(name)
            raise LoginError("unknown user name or wrong password")
        self.throttle.succeeded(name)
        return name

    def _tokens(self) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self.secret_key, salt="tablesync-api-token")

    def issue_token(self, name: str) -> str:
        return self._tokens().dumps({"user": name})

    def token_user(self, token: str) -> str | None:
        """The operator a bearer token was issued to, if it is genuine, unexpired and they still exist."""
        try:
            data: Any = self._tokens().loads(token, max_age=int(self.token_hours * 3600))
        except (SignatureExpired, BadSignature):
            return None
        name = data.get("user") if isinstance(data, dict) else None
        return name if isinstance(name, str) and name in self.users else None


def csrf_token(session: dict[str, Any]) -> str:
    """The session's CSRF token, made on first use; forms carry it, and state changes compare it."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def csrf_ok(session: dict[str, Any], presented: str | None) -> bool:
    expected = session.get("csrf")
    return isinstance(expected, str) and isinstance(presented, str) and hmac.compare_digest(expected, presented)
