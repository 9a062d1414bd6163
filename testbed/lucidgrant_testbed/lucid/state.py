"""What the Lucid emulator remembers and the OAuth rules over it, without HTTP: clients, codes,
grants and their tokens; issuing, rotating, introspecting and revoking."""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

Kind = Literal["user", "account"]
Subject = int | str

# Prefixes make every issued secret recognizable, so tests can scan logs and events for leaks.
ACCESS_PREFIX = "lat_"
REFRESH_PREFIX = "lrt_"
CODE_PREFIX = "lac_"

INVALID_GRANT: dict[str, str] = {
    "error": "invalid_grant",
    "error_description": "Invalid client id, client secret, or refresh token",
}
INVALID_CODE: dict[str, str] = {
    "error": "invalid_grant",
    "error_description": "Invalid, expired or already used authorization code",
}
INVALID_CLIENT: dict[str, str] = {
    "error": "invalid_client",
    "error_description": "Invalid client id or client secret",
}
DISABLED_CLIENT: dict[str, str] = {
    "error": "invalid_client",
    "error_description": "This client has been disabled",
}


@dataclass
class _Client:
    client_id: str
    client_secret: str
    redirect_uris: frozenset[str] | None
    disabled: bool = False


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    kind: Kind
    subject: Subject
    expires_at: float
    used: bool = False


class RefreshRecord(NamedTuple):
    """One successful refresh: when it happened and when the access token it replaced expired
    (a benchmark reads punctuality as `previous_access_expires_at - at`)."""

    grant_id: str
    at: float
    previous_access_expires_at: float


@dataclass
class _Grant:
    id: str
    client_id: str
    kind: Kind
    subject: Subject
    scopes: tuple[str, ...]
    created_at: float
    access_token: str = ""
    access_expires_at: float = 0.0
    refresh_token: str | None = None
    refresh_expires_at: float | None = None
    rotations: int = 0
    revoked: bool = False
    refreshes: list[RefreshRecord] = field(default_factory=list)


@dataclass(frozen=True)
class GrantInfo:
    """A snapshot of one grant, safe to keep while the server goes on rotating it."""

    id: str
    client_id: str
    kind: Kind
    subject: Subject
    scopes: tuple[str, ...]
    created_at: float
    access_token: str
    access_expires_at: float
    refresh_token: str | None
    refresh_expires_at: float | None
    rotations: int
    revoked: bool
    refreshes: tuple[RefreshRecord, ...]


class GrantBook:
    """Lucid's clients, codes and grants. Public methods may be called from any thread."""

    def __init__(
        self, access_ttl: float, refresh_ttl: float, code_ttl: float, clock: Callable[[], float]
    ) -> None:
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.code_ttl = code_ttl
        self.clock = clock
        # Lucid's docs show numeric user ids (`"user_id": 1001`); account ids are assumed alike.
        self.consenting_user_id: Subject = 1001
        self.consenting_account_id: Subject = 2002
        # Called with (grant id, new refresh token) after each rotation, under the book's lock:
        # lets a test note the moment a token was born without reaching into the book.
        self.on_rotation: Callable[[str, str], None] | None = None

        self.calls: Counter[tuple[str, int]] = Counter()
        self.refresh_count = 0
        self.invalid_grant_count = 0
        self.flaky_invalid_grant_count = 0

        # The server's loop thread and test threads both mutate state; one lock keeps each
        # request's read-check-rotate step atomic. It is never held across an await.
        self._lock = threading.RLock()
        self._clients: dict[str, _Client] = {}
        self._codes: dict[str, _Code] = {}
        self._grants: dict[str, _Grant] = {}
        # Old tokens stay indexed after rotation so grant_of() and revocation still find them.
        self._by_access: dict[str, _Grant] = {}
        self._by_refresh: dict[str, _Grant] = {}
        self._secrets: set[str] = set()
        self._refresh_log: list[RefreshRecord] = []
        self._grant_seq = 0

    # ---------------------------------------------------------------- clients and grants

    def add_client(
        self, client_id: str, client_secret: str, redirect_uris: list[str] | None = None
    ) -> None:
        """Register an OAuth client; `redirect_uris=None` accepts any redirect URI."""
        with self._lock:
            uris = None if redirect_uris is None else frozenset(redirect_uris)
            self._clients[client_id] = _Client(client_id, client_secret, uris)
            self._secrets.add(client_secret)

    def disable_client(self, client_id: str, disabled: bool = True) -> None:
        """As a Lucid admin disabling the app: every endpoint answers 401 invalid_client."""
        with self._lock:
            self._clients[client_id].disabled = disabled

    def issue_grant(self, client_id: str, scopes: list[str], kind: Kind = "user") -> dict[str, Any]:
        """Create a grant as if a person had consented and the code was exchanged; returns the
        token response that `/oauth2/token` would have given."""
        with self._lock:
            if client_id not in self._clients:
                raise KeyError(f"unknown client {client_id!r}")
            now = self.clock()
            grant = self._new_grant(
                client_id, as_kind(kind), self._subject(kind), tuple(scopes), now
            )
            return self._token_body(grant, now)

    def issue_code(
        self, client_id: str, redirect_uri: str, scopes: list[str], kind: Kind = "user"
    ) -> str:
        """An authorization code as the authorize page would have redirected with."""
        with self._lock:
            if client_id not in self._clients:
                raise KeyError(f"unknown client {client_id!r}")
            return self._new_code(client_id, redirect_uri, tuple(scopes), as_kind(kind))

    def revoke_grant_of(self, token: str) -> str | None:
        """Revoke the grant that any token (even a rotated-away one) belongs to; its id or None."""
        with self._lock:
            grant = self._grant_by_token(token)
            if grant is None:
                return None
            grant.revoked = True
            return grant.id

    def expire_token(self, token: str) -> bool:
        """Make the current access or refresh token, or an unused code, expire now."""
        with self._lock:
            now = self.clock()
            grant = self._by_access.get(token)
            if grant is not None and grant.access_token == token:
                grant.access_expires_at = now
                return True
            grant = self._by_refresh.get(token)
            if grant is not None and grant.refresh_token == token:
                grant.refresh_expires_at = now
                return True
            code = self._codes.get(token)
            if code is not None:
                code.expires_at = now
                return True
            return False

    def grant_of(self, token: str) -> str | None:
        with self._lock:
            grant = self._grant_by_token(token)
            return None if grant is None else grant.id

    def grant_info(self, grant_id: str) -> GrantInfo:
        with self._lock:
            return _snapshot(self._grants[grant_id])

    def grant_infos(self) -> list[GrantInfo]:
        with self._lock:
            return [_snapshot(grant) for grant in self._grants.values()]

    def all_issued_secrets(self) -> set[str]:
        """Every access token, refresh token and code ever issued, and every client secret."""
        with self._lock:
            return set(self._secrets)

    def live_refresh_tokens(self) -> set[str]:
        with self._lock:
            now = self.clock()
            return {
                grant.refresh_token
                for grant in self._grants.values()
                if grant.refresh_token is not None and self._refresh_live(grant, now)
            }

    def refresh_records(self, since: int = 0) -> list[RefreshRecord]:
        """Successful refreshes in order, from index `since` (for incremental polling)."""
        with self._lock:
            return self._refresh_log[since:]

    # ---------------------------------------------------------------- the OAuth rules
    # Called by the server with the lock held.

    def _client_of(self, fields: dict[str, str]) -> str | dict[str, str]:
        """The client id the request's credentials prove, or the error body refusing them."""
        client = self._clients.get(fields.get("client_id", ""))
        if client is None or client.client_secret != fields.get("client_secret"):
            return INVALID_CLIENT
        if client.disabled:
            return DISABLED_CLIENT
        return client.client_id

    def _redirect_refusal(self, client_id: str, redirect_uri: str | None) -> str | None:
        # Never redirect to an unverified URI: that would hand codes to whoever asked.
        client = self._clients.get(client_id)
        if client is None:
            return "Unknown client."
        if client.disabled:
            return "This application has been disabled."
        if not redirect_uri:
            return "Missing redirect_uri."
        if client.redirect_uris is not None and redirect_uri not in client.redirect_uris:
            return "The redirect_uri is not registered for this application."
        return None

    def _exchange_code(self, client_id: str, fields: dict[str, str]) -> dict[str, Any] | None:
        """The token body for a valid code, which is used up; None for any bad code."""
        code = self._codes.get(fields.get("code", ""))
        now = self.clock()
        if (
            code is None
            or code.used
            or code.client_id != client_id
            or code.redirect_uri != fields.get("redirect_uri")
            or now >= code.expires_at
        ):
            return None
        code.used = True
        grant = self._new_grant(client_id, code.kind, code.subject, code.scopes, now)
        return self._token_body(grant, now)

    def _refreshable(self, client_id: str, token: str, now: float) -> _Grant | None:
        """The grant whose current, live refresh token this is, for this client."""
        grant = self._by_refresh.get(token)
        if (
            grant is None
            or grant.client_id != client_id
            or grant.refresh_token != token
            or not self._refresh_live(grant, now)
        ):
            return None
        return grant

    def _rotate(self, grant: _Grant, now: float) -> dict[str, Any]:
        record = RefreshRecord(grant.id, now, grant.access_expires_at)
        self._mint(grant, now)  # replaces both tokens at once: the old pair is dead from here on
        grant.rotations += 1
        grant.refreshes.append(record)
        self._refresh_log.append(record)
        self.refresh_count += 1
        if self.on_rotation is not None and grant.refresh_token is not None:
            self.on_rotation(grant.id, grant.refresh_token)
        return self._token_body(grant, now)

    def _introspection(self, client_id: str, token: str) -> dict[str, Any]:
        now = self.clock()
        expires_at: float | None = None
        grant = self._by_access.get(token)
        if grant is not None and grant.access_token == token:
            expires_at = grant.access_expires_at
        else:
            grant = self._by_refresh.get(token)
            if grant is not None and grant.refresh_token == token:
                expires_at = grant.refresh_expires_at
        if (
            grant is None
            or expires_at is None
            or grant.revoked
            or grant.client_id != client_id
            or now >= expires_at
        ):
            return {"active": False}
        subject_key = "account_id" if grant.kind == "account" else "user_id"
        return {
            "active": True,
            "client_id": grant.client_id,
            "expires_in": max(0, int(expires_at - now)),
            "expires": int(expires_at * 1000),
            "scope": " ".join(grant.scopes),
            "token_type": "bearer",
            subject_key: grant.subject,
        }

    def _revoke(self, client_id: str, token: str) -> None:
        grant = self._grant_by_token(token)
        # As RFC 7009: an unknown or rotated-away token changes nothing.
        if (
            grant is not None
            and grant.client_id == client_id
            and token in (grant.access_token, grant.refresh_token)
        ):
            grant.revoked = True

    # ---------------------------------------------------------------- internals

    def _subject(self, kind: str) -> Subject:
        return self.consenting_account_id if kind == "account" else self.consenting_user_id

    def _issue(self, prefix: str) -> str:
        secret = prefix + secrets.token_urlsafe(32)
        self._secrets.add(secret)
        return secret

    def _new_code(
        self, client_id: str, redirect_uri: str, scopes: tuple[str, ...], kind: Kind
    ) -> str:
        code = self._issue(CODE_PREFIX)
        self._codes[code] = _Code(
            client_id, redirect_uri, scopes, kind, self._subject(kind), self.clock() + self.code_ttl
        )
        return code

    def _new_grant(
        self, client_id: str, kind: Kind, subject: Subject, scopes: tuple[str, ...], now: float
    ) -> _Grant:
        self._grant_seq += 1
        grant = _Grant(f"g-{self._grant_seq}", client_id, kind, subject, scopes, now)
        self._grants[grant.id] = grant
        self._mint(grant, now)
        return grant

    def _mint(self, grant: _Grant, now: float) -> None:
        """Give the grant a fresh access token, and a fresh refresh token when offline_access was
        granted; each token's lifetime runs from its own creation."""
        grant.access_token = self._issue(ACCESS_PREFIX)
        grant.access_expires_at = now + self.access_ttl
        self._by_access[grant.access_token] = grant
        if "offline_access" in grant.scopes:
            grant.refresh_token = self._issue(REFRESH_PREFIX)
            grant.refresh_expires_at = now + self.refresh_ttl
            self._by_refresh[grant.refresh_token] = grant

    def _grant_by_token(self, token: str) -> _Grant | None:
        return self._by_access.get(token) or self._by_refresh.get(token)

    @staticmethod
    def _refresh_live(grant: _Grant, now: float) -> bool:
        return (
            not grant.revoked
            and grant.refresh_token is not None
            and grant.refresh_expires_at is not None
            and now < grant.refresh_expires_at
        )

    def _live_count(self, now: float) -> int:
        return sum(1 for grant in self._grants.values() if self._refresh_live(grant, now))

    def _token_body(self, grant: _Grant, now: float) -> dict[str, Any]:
        body: dict[str, Any] = {"access_token": grant.access_token}
        if grant.refresh_token is not None:
            body["refresh_token"] = grant.refresh_token
        body.update(
            client_id=grant.client_id,
            # Rounded down: a client that trusts expires_in must never believe in a dead token.
            expires_in=max(0, int(grant.access_expires_at - now)),
            expires=int(grant.access_expires_at * 1000),
            scopes=list(grant.scopes),
            token_type="bearer",
        )
        body["account_id" if grant.kind == "account" else "user_id"] = grant.subject
        return body


def as_kind(kind: str) -> Kind:
    if kind == "user":
        return "user"
    if kind == "account":
        return "account"
    raise ValueError(f"kind must be user or account, not {kind!r}")


def _snapshot(grant: _Grant) -> GrantInfo:
    return GrantInfo(
        id=grant.id,
        client_id=grant.client_id,
        kind=grant.kind,
        subject=grant.subject,
        scopes=grant.scopes,
        created_at=grant.created_at,
        access_token=grant.access_token,
        access_expires_at=grant.access_expires_at,
        refresh_token=grant.refresh_token,
        refresh_expires_at=grant.refresh_expires_at,
        rotations=grant.rotations,
        revoked=grant.revoked,
        refreshes=tuple(grant.refreshes),
    )
