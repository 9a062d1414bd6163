"""The gate and the rate limit of each Lucid client at work: the refresh path asks here whether
Lucid is up and waits here for its turn, reports here what came of each call, and the grants
held during an outage are woken from here, most urgent first, when Lucid answers again.

The decisions are the pure lucid_health.Gate and ratelimit.TokenBucket; this module adds the
clock, the waiting, the probe task and the metrics. Keyed by client id (the API URL is one per
operator)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lucidgrant.lucid import LucidClient
from lucidgrant.lucid_answers import ClientCredentials, LucidError, TransientError
from lucidgrant.lucid_health import (
    Gate,
    GateSettings,
    Transition,
    client_label,
    lucid_answered,
)
from lucidgrant.metrics import Metrics
from lucidgrant.ratelimit import DEFAULT_BURST, DEFAULT_RATE, TokenBucket
from lucidgrant.timing import Sleep

log = logging.getLogger(__name__)

Key = tuple[str, str]

# Introspecting a token Lucid does not know answers {"active": false}: still an answer.
UNKNOWN_TOKEN = "lucidgrant-probe"


@dataclass
class _Client:
    creds: ClientCredentials
    label: str
    gate: Gate[Key]
    bucket: TokenBucket
    probe_token: str | None = field(default=None, repr=False)
    probe: asyncio.Task[None] | None = None
    # Callers wait for the bucket one at a time, first come first served (asyncio.Lock is
    # fair): grants woken most urgent first call Lucid in that order.
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)


class LucidGates:
    def __init__(
        self,
        lucid: LucidClient,
        metrics: Metrics,
        api_url: str,
        *,
        rate: float = DEFAULT_RATE,
        burst: float = DEFAULT_BURST,
        settings: GateSettings | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        TokenBucket(clock(), rate, burst)  # a bad rate or burst fails here, at start
        self._lucid = lucid
        self._metrics = metrics
        self._api_url = api_url
        self._rate = rate
        self._burst = burst
        self._settings = settings or GateSettings()
        self._clock = clock
        self._sleep = sleep
        self._clients: dict[str, _Client] = {}
        self._reopened: set[Key] = set()
        # Set by the runtime to its work queue's wake; the default serves in-process tests.
        self.wake: Callable[[Key], None] = lambda key: None

    def _client(self, creds: ClientCredentials) -> _Client:
        client = self._clients.get(creds.client_id)
        if client is None:
            client = _Client(
                creds,
                client_label(creds.client_id),
                Gate(self._settings),
                TokenBucket(self._clock(), self._rate, self._burst),
            )
            self._clients[creds.client_id] = client
            rate = self._metrics.rate_limit.labels(self._api_url, client.label)
            rate.set_function(lambda: client.bucket.rate_at(self._clock()))
        client.creds = creds  # the newest secret probes with
        return client

    def closed_since(self, creds: ClientCredentials) -> float | None:
        return self._client(creds).gate.closed_since

    def park(
        self, key: Key, creds: ClientCredentials, expires_at: float | None, token: str | None
    ) -> None:
        """Hold a grant whose refresh is due while Lucid is down, until it answers again."""
        client = self._client(creds)
        client.gate.park(key, expires_at)
        client.probe_token = token or client.probe_token
        self._publish(client)

    def reopened(self, key: Key) -> bool:
        """Whether the grant was woken by Lucid's return (once): its own backoff is void."""
        if key in self._reopened:
            self._reopened.discard(key)
            return True
        return False

    def forget(self, key: Key) -> None:
        self._reopened.discard(key)
        for client in self._clients.values():
            client.gate.forget(key)

    async def admit(self, creds: ClientCredentials, *, within: float = math.inf) -> float:
        """Wait until the client's token bucket allows one call to Lucid, first come first
        served, and answer 0; or, when the bucket's next turn lies further than `within`
        seconds ahead (a 429's pause), wait no more and answer how long until it. The wait
        in the queue before one's turn does not count: it is bounded by the callers ahead."""
        client = self._client(creds)
        try:
            async with client.turn:
                deadline = self._clock() + within
                while (wait := client.bucket.take(self._clock())) > 0:
                    if self._clock() + wait > deadline:
                        return wait
                    await self._sleep(wait)
            return 0.0
        finally:
            self._publish(client)

    def observe(
        self,
        key: Key,
        creds: ClientCredentials,
        error: LucidError | None,
        expires_at: float | None,
        token: str | None,
    ) -> None:
        """What came of one call made for `key`; `token` is an access token to probe with."""
        client = self._client(creds)
        now = self._clock()
        self._throttled(client, error, now)
        if error is None and token:
            client.probe_token = token
        transition = client.gate.record(key, lucid_answered(error), now, expires_at)
        self._transition(client, transition)

    def _throttled(self, client: _Client, error: LucidError | None, now: float) -> None:
        if isinstance(error, TransientError) and error.status == 429:
            client.bucket.throttled(now, error.retry_after)

    def _transition(self, client: _Client, transition: Transition | None) -> None:
        if transition is Transition.CLOSED:
            log.warning(
                "Lucid at %s (client %s) is unavailable: refreshes are held, probing every %.0f s",
                self._api_url,
                client.label,
                self._settings.probe_interval,
            )
            if client.probe is None or client.probe.done():
                client.probe = asyncio.create_task(
                    self._probe(client), name=f"probe Lucid for {client.label}"
                )
        elif transition is Transition.OPENED:
            woken = client.gate.release()
            log.info(
                "Lucid at %s (client %s) answers again: refreshing %d held grants, most urgent "
                "first",
                self._api_url,
                client.label,
                len(woken),
            )
            self._reopened.update(woken)
            for key in woken:
                self.wake(key)
        self._publish(client)

    async def _probe(self, client: _Client) -> None:
        """While the gate is closed: one introspection per probe interval (it cannot rotate or
        revoke anything); the first answer reopens the gate."""
        while (due := client.gate.probe_due_at()) is not None:
            if due > self._clock():
                await self._sleep(due - self._clock())
                continue
            await self.admit(client.creds)
            client.gate.probe_sent(self._clock())
            error: LucidError | None = None
            try:
                await self._lucid.introspect(client.creds, client.probe_token or UNKNOWN_TOKEN)
            except LucidError as exc:
                error = exc
            self._throttled(client, error, self._clock())
            self._transition(client, client.gate.probe_result(lucid_answered(error)))

    def _publish(self, client: _Client) -> None:
        self._metrics.set_gate(
            self._api_url,
            client.label,
            closed_since=client.gate.closed_since,
            parked=client.gate.parked,
        )

    async def stop(self) -> None:
        probes = [c.probe for c in self._clients.values() if c.probe is not None]
        for task in probes:
            task.cancel()
        await asyncio.gather(*probes, return_exceptions=True)
