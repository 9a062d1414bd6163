"""One view of Lucid's health per API URL and client id: a gate (a circuit breaker) fed with the
outcome of every call to Lucid, so that during an outage the operator sends one probe every few
seconds instead of one refresh per grant, and wakes every grant within seconds of Lucid's
return, most urgent first.

The gate closes when calls for several distinct grants fail with outage-class errors
(connection errors, timeouts, 5xx, 429, HTML or malformed answers) within a short window and no
call got an answer in between, so that one grant's bad answers cannot stop refreshes for all.
While it is closed, grants that come due are parked here (they keep their refresh tokens) and a
probe is due every `probe_interval`. Any answer from Lucid, to a probe or to a refresh still in
flight, reopens it at once.

The probe introspects an access token the operator issued (see docs/lucid-outages.md): an
introspection cannot rotate or revoke anything, so probing every few seconds for hours cannot
lose a grant, whereas a canary refresh would rotate one grant's token at every probe and lose
it to the first answer that Lucid sends but the operator does not receive.

Pure: every time comes in as an argument."""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from lucidgrant.lucid_answers import ContradictedInvalidGrantError, LucidError, TransientError
from lucidgrant.timing import rfc3339

K = TypeVar("K", bound=Hashable)

# Lucid's return is seen at most this long after it happens: with the token bucket's time for
# 1,000 held grants (ratelimit.DEFAULT_RATE), within issue 14's 10 s. 30 probes a minute,
# whatever the number of grants.
PROBE_INTERVAL = 2.0
# Outage-class failures of this many distinct grants within WINDOW seconds, with no answer in
# between, close the gate. One grant alone never does (its answers may be bad for it only).
DISTINCT_GRANTS = 3
WINDOW = 60.0


class Transition(enum.Enum):
    CLOSED = "closed"
    OPENED = "opened"


@dataclass(frozen=True)
class GateSettings:
    distinct_grants: int = DISTINCT_GRANTS
    window: float = WINDOW
    probe_interval: float = PROBE_INTERVAL

    def __post_init__(self) -> None:
        if self.distinct_grants < 2:
            raise ValueError(
                f"distinct_grants={self.distinct_grants}: must be at least 2, so that one "
                "grant's bad answers cannot close the gate for every grant"
            )
        if self.window <= 0 or self.probe_interval <= 0:
            raise ValueError(
                f"window={self.window}, probe_interval={self.probe_interval}: both must be > 0"
            )


def lucid_answered(error: LucidError | None) -> bool:
    """Whether a call's outcome shows that Lucid is answering. Success, invalid_grant, a
    rejected client or rejected scopes are answers about one grant or client; only
    outage-class errors (TransientError: no answer, timeout, 5xx, 429, HTML, malformed) are
    evidence of an outage. An invalid_grant that introspection contradicts is flaky, but it is
    an answer."""
    return not isinstance(error, TransientError) or isinstance(error, ContradictedInvalidGrantError)


def client_label(client_id: str) -> str:
    """A short, stable name for a client id in metric labels and logs: client ids are not
    secret, but they sit in the same Secret as the client secret, so none is printed whole.
    `printf %s "$CLIENT_ID" | sha256sum | cut -c1-12` gives the same value."""
    return hashlib.sha256(client_id.encode()).hexdigest()[:12]


def unavailable_message(closed_since: float) -> str:
    """What a held grant's status says (reason ProviderUnavailable)."""
    return (
        f"Lucid has not answered since {rfc3339(closed_since)}: the refresh waits for it, the "
        "refresh token is kept, and the refresh runs within seconds of Lucid's return."
    )


def recovery_order(access_expires_at: Mapping[K, float | None]) -> list[K]:
    """Grants in the order to refresh them after an outage: those without a live access token
    first (no token known, then the longest expired), then the ones expiring soonest."""
    return sorted(
        access_expires_at,
        key=lambda k: -math.inf if (at := access_expires_at[k]) is None else at,
    )


class Gate(Generic[K]):
    """The gate of one API URL and client id. `K` identifies a grant."""

    def __init__(self, settings: GateSettings | None = None) -> None:
        self.settings = settings or GateSettings()
        self.closed_since: float | None = None
        self._failing: dict[K, float] = {}  # grant -> its latest outage-class failure
        # grant -> its access token's expiry, for every grant that failed since the last answer:
        # they are parked when the gate closes, so that their own backoff cannot hold them back
        # once Lucid returns.
        self._unanswered: dict[K, float | None] = {}
        self._last_probe: float | None = None
        self._parked: dict[K, float | None] = {}  # grant -> its access token's expiry

    @property
    def is_open(self) -> bool:
        return self.closed_since is None

    def record(
        self, grant: K, answered: bool, now: float, access_expires_at: float | None = None
    ) -> Transition | None:
        """Feed the outcome of one call made for `grant`; say whether it opened or closed."""
        if answered:
            self._failing.clear()
            self._unanswered.clear()
            return self._open()
        if self.closed_since is not None:
            self.park(grant, access_expires_at)  # a call sent before the gate closed
            return None
        horizon = now - self.settings.window
        self._failing[grant] = now
        self._failing = {k: t for k, t in self._failing.items() if t >= horizon}
        self._unanswered[grant] = access_expires_at
        if len(self._failing) < self.settings.distinct_grants:
            return None
        self._parked.update(self._unanswered)
        self._failing.clear()
        self._unanswered.clear()
        self.closed_since = now
        self._last_probe = None
        return Transition.CLOSED

    def probe_due_at(self) -> float | None:
        """When the next probe should be sent; None while the gate is open."""
        if self.closed_since is None:
            return None
        last = self.closed_since if self._last_probe is None else self._last_probe
        return last + self.settings.probe_interval

    def probe_sent(self, now: float) -> None:
        self._last_probe = now

    def probe_result(self, answered: bool) -> Transition | None:
        """A probe that got an answer reopens the gate; one that did not changes nothing (the
        next one is due `probe_interval` after this one was sent)."""
        return self._open() if answered else None

    def park(self, grant: K, access_expires_at: float | None) -> None:
        """Hold a grant that came due while the gate is closed, until it reopens."""
        self._parked[grant] = access_expires_at

    def forget(self, grant: K) -> None:
        self._parked.pop(grant, None)
        self._failing.pop(grant, None)
        self._unanswered.pop(grant, None)

    @property
    def parked(self) -> int:
        return len(self._parked)

    def release(self) -> list[K]:
        """The parked grants, most urgent first, to wake now that the gate is open."""
        order = recovery_order(self._parked)
        self._parked = {}
        return order

    def _open(self) -> Transition | None:
        if self.closed_since is None:
            return None
        self.closed_since = None
        self._last_probe = None
        return Transition.OPENED
