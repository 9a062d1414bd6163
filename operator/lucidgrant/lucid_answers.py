"""What Lucid's answers mean, without any I/O: the token set, an introspection, the client
credentials, and the failure classes that say what the operator should do about an answer
(`classify_error`, `parse_token_response`). The client that talks to Lucid is lucid.py's.

No exception raised here carries a token, a client secret or a response body: bodies may echo
what was sent, and exception texts end up in logs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from lucidgrant.timing import parse_retry_after

# An access token lifetime above this is not believed: it is clamped, so that an absurd (or
# infinite) expires_in makes the operator refresh early rather than never, and its expiry can
# always be written as a date. Lucid's access tokens live one hour.
MAX_EXPIRES_IN = 86400.0
# Nor is one below this: a lifetime of one second would make the grant refresh (four writes)
# several times a second. Tests against an emulator with short lifetimes lower it.
MIN_EXPIRES_IN = 60.0


class LucidError(Exception):
    """Base of every failure talking to Lucid; `reason` is a short fixed word (metric-safe)."""

    reason = "error"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransientError(LucidError):
    """Timeouts, connection errors, 5xx, 429, HTML or malformed bodies: retry later."""

    reason = "transient_error"

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class ContradictedInvalidGrantError(TransientError):
    """Lucid answered invalid_grant for a refresh token its introspection reports active: a
    flaky answer, retried like a transient error, but still an answer (not an outage signal)."""


class InvalidGrantError(LucidError):
    """Lucid refused the refresh token or code (expired, revoked, rotated away, or flaky)."""

    reason = "invalid_grant"


class PartialAnswerError(TransientError):
    """A successful answer with a usable new refresh token but another field unusable. Lucid
    has rotated already, so the refresh token must be stored even though the answer is bad."""

    def __init__(self, refresh_token: str) -> None:
        super().__init__("Lucid's token answer lacks a valid field (its refresh token is kept)")
        self.refresh_token = refresh_token


class ClientRejectedError(LucidError):
    """Lucid refused the client credentials (wrong secret, or an admin disabled the client)."""

    reason = "client_error"


class ScopesRejectedError(LucidError):
    reason = "invalid_scopes"


@dataclass(frozen=True)
class TokenSet:
    """One answer of the token endpoint. `issued_at` is our clock when the request was sent,
    so expiries are computed from `expires_in` and immune to clock skew with Lucid."""

    access_token: str
    refresh_token: str
    token_type: str
    expires_in: float
    scopes: tuple[str, ...]
    issued_at: float
    user_id: str | None = None
    account_id: str | None = None

    @property
    def access_expires_at(self) -> float:
        return self.issued_at + self.expires_in

    def __repr__(self) -> str:  # never print tokens, even in a debugger or a traceback
        return f"TokenSet(expires_in={self.expires_in}, scopes={self.scopes})"


@dataclass(frozen=True)
class Introspection:
    active: bool
    expires_at: float | None = None
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str
    client_secret: str

    def __repr__(self) -> str:
        return "ClientCredentials(<redacted>)"


def json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def classify_error(response: httpx.Response, now: float) -> LucidError:
    """Turn a non-2xx answer into the exception that says what to do."""
    status = response.status_code
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(response.headers.get("Retry-After"), now)
        return TransientError(
            f"Lucid answered HTTP {status}", status=status, retry_after=retry_after
        )
    body = json_object(response)
    error = body.get("error") if body else None
    if error == "invalid_grant":
        return InvalidGrantError("Lucid answered invalid_grant", status=status)
    if error == "invalid_client" or status in (401, 403):
        return ClientRejectedError(
            f"Lucid rejected the client credentials (HTTP {status})", status=status
        )
    if error == "invalid_scopes":
        return ScopesRejectedError("Lucid answered invalid_scopes", status=status)
    # An unexpected 4xx (often an HTML page from a proxy) is not evidence about the grant.
    return TransientError(f"Lucid answered HTTP {status} with no known error", status=status)


def parse_token_response(
    body: Any, issued_at: float, min_expires_in: float = MIN_EXPIRES_IN
) -> TokenSet:
    """Validate a token endpoint answer; a missing or mistyped field is a malformed answer. The
    lifetime is held between `min_expires_in` and MAX_EXPIRES_IN."""
    if not isinstance(body, dict):
        raise TransientError("Lucid answered with a body that is not a JSON object")
    access = body.get("access_token")
    refresh = body.get("refresh_token")
    expires_in = body.get("expires_in")
    scopes = body.get("scopes", [])
    if isinstance(scopes, str):
        scopes = scopes.split()
    if not (
        isinstance(access, str)
        and access
        and isinstance(refresh, str)
        and refresh
        and isinstance(expires_in, int | float)
        and not isinstance(expires_in, bool)
        and expires_in > 0
        and isinstance(scopes, list)
        and all(isinstance(s, str) for s in scopes)
    ):
        if isinstance(refresh, str) and refresh:
            raise PartialAnswerError(refresh)
        raise TransientError("Lucid's token answer lacks a valid field")
    user_id = body.get("user_id")
    account_id = body.get("account_id")
    return TokenSet(
        access_token=access,
        refresh_token=refresh,
        token_type=str(body.get("token_type") or "bearer"),
        # Compared before converting: float() of a huge JSON integer raises OverflowError.
        expires_in=(
            MAX_EXPIRES_IN
            if expires_in > MAX_EXPIRES_IN
            else max(min_expires_in, float(expires_in))
        ),
        scopes=tuple(scopes),
        issued_at=issued_at,
        user_id=None if user_id is None else str(user_id),
        account_id=None if account_id is None else str(account_id),
    )
