"""A Lucid outage at fleet scale, in process: the real reconcile of many grants, Lucid behind
httpx.MockTransport, and a simulated clock that moves only when every task waits (the work
queue's due times, the token bucket's waits, the probe interval). Nothing sleeps for real.

What it shows: during an outage Lucid sees probes only; every grant keeps its refresh token and
says ProviderUnavailable since when; when Lucid returns, every grant is refreshed within seconds,
most urgent first, under the rate limit; a 429 slows every grant of the client; a grant whose
token is still valid is refreshed at its own time, not later."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from types import SimpleNamespace

import httpx
import pytest

import lucidgrant.lucid
from lucidgrant.cache import Key
from lucidgrant.lucid_answers import ClientCredentials
from lucidgrant.lucid_gates import LucidGates
from lucidgrant.lucid_health import PROBE_INTERVAL, client_label
from lucidgrant.ratelimit import DEFAULT_BURST, DEFAULT_RATE
from lucidgrant.state_secret import parse_state
from lucidgrant.timing import rfc3339

from .world import NS, World, grant_body

CREDS = ClientCredentials("client-1", "secret-1")
TOKEN = "/oauth2/token"
INTROSPECT = "/oauth2/token/introspect"


class Sim:
    """Simulated time for a whole operator: the work queue's order (a grant never runs twice at
    once; a wake while it runs is kept for when it ends; a reconcile's answer is its next due
    time) and every sleep, on one clock that jumps to the next due moment once every task
    waits."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.gates = world.reconciler.gates
        self._seq = itertools.count()
        self._due: dict[Key, float] = {}
        self._heap: list[tuple[float, int, Key]] = []
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._running: dict[Key, asyncio.Task[None]] = {}
        self.calls: list[tuple[float, str, dict[str, str]]] = []  # every call to Lucid

    @property
    def now(self) -> float:
        return self.world.clock.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._seq), future))
        await future

    def wake(self, key: Key, at: float | None = None) -> None:
        at = self.now if at is None else at
        current = self._due.get(key)
        if current is not None and current <= at:
            return
        self._due[key] = at
        if key not in self._running:
            heapq.heappush(self._heap, (at, next(self._seq), key))

    async def _one(self, key: Key) -> None:
        try:
            next_at = await self.world.reconciler.reconcile(key)
        finally:
            del self._running[key]
        pending = self._due.pop(key, None)
        for at in (next_at, pending):
            if at is not None:
                self.wake(key, at)

    async def _settle(self) -> None:
        """Run every task until none can go on without the clock moving. The test looks at
        the event loop's ready queue (a CPython detail) for that: a task may wait on a lock
        that another, sleeping task holds."""
        loop = asyncio.get_running_loop()
        for _ in range(1_000_000):
            await asyncio.sleep(0)
            if not loop._ready:  # type: ignore[attr-defined]
                break
        else:
            raise AssertionError("the tasks never settle")
        seen = len(self.calls)
        self.calls += [(self.now, p, b) for p, b in self.world.lucid.requests[seen:]]

    def _start_due(self) -> bool:
        started = False
        while self._heap and self._heap[0][0] <= self.now:
            at, _, key = heapq.heappop(self._heap)
            if self._due.get(key) != at:
                continue  # superseded by an earlier wake
            del self._due[key]
            self._running[key] = asyncio.create_task(self._one(key))
            started = True
        return started

    async def run_until(self, end: float) -> None:
        while True:
            await self._settle()
            if self._start_due():
                continue
            upcoming = min([t for t, *_ in self._sleepers[:1]] + [t for t, *_ in self._heap[:1]])
            if upcoming > end:
                self.world.clock.now = max(self.now, end)
                return
            self.world.clock.now = max(self.now, upcoming)
            while self._sleepers and self._sleepers[0][0] <= self.now:
                heapq.heappop(self._sleepers)[2].set_result(None)

    def between(self, start: float, end: float, path: str | None = None) -> list[dict[str, str]]:
        """The bodies of the calls made in [start, end), to `path` or to any endpoint."""
        return [b for t, p, b in self.calls if start <= t < end and path in (None, p)]

    def peak(self, start: float, end: float) -> int:
        """The most calls in any one second (sliding by a tenth) within [start, end)."""
        times = [t for t, _, _ in self.calls if start <= t < end]
        return max((sum(1 for t in times if s <= t < s + 1) for s in _steps(start, end)), default=0)


def _steps(start: float, end: float) -> list[float]:
    return [start + i / 10 for i in range(int((end - start) * 10))]


@pytest.fixture
async def fleet(monkeypatch):
    world = World()
    # Lucid's answers are stamped with the time the request was sent (lucid.py reads the wall
    # clock): hours of simulated outage need that stamp on the simulated clock too.
    fake_time = SimpleNamespace(time=world.clock, perf_counter=time.perf_counter)
    monkeypatch.setattr(lucidgrant.lucid, "time", fake_time)
    sim = Sim(world)
    gates = LucidGates(
        world.reconciler.refresher.lucid, world.metrics, "", clock=world.clock, sleep=sim.sleep
    )
    world.reconciler.gates = sim.gates = gates
    gates.wake = sim.wake
    world.reconciler.refresher.sleep = sim.sleep
    yield world, sim
    await gates.stop()
    await world.http.aclose()


def add_grants(world: World, sim: Sim, n: int, prefix: str = "g", **spec: str) -> list[str]:
    world.put_secret("client", {"client_id": CREDS.client_id, "client_secret": CREDS.client_secret})
    names = []
    for i in range(n):
        name = f"{prefix}{i:03d}"
        world.put_secret(f"boot-{name}", {"refresh_token": world.lucid.issue()})
        world.put_grant(
            grant_body(
                name,
                authorization={"refreshTokenSecretRef": {"name": f"boot-{name}"}},
                accessTokenSecret={"name": f"tok-{name}"},
                **spec,
            )
        )
        sim.wake((NS, name))
        names.append(name)
    return names


def state_if_any(world: World, name: str):
    secret = world.kube.objects.get(f"/api/v1/namespaces/{NS}/secrets/{name}-lucidgrant-state")
    return parse_state(secret) if secret is not None else None


def state(world: World, name: str):
    found = state_if_any(world, name)
    assert found is not None, f"{name} has no state Secret"
    return found


def serving(world: World, name: str) -> bool:
    """The consumer Secret holds the access token of the grant's live refresh token."""
    live = state(world, name).refresh_token
    alive = live in world.lucid.grants and world.lucid.grants[live].alive
    return alive and world.secret(f"tok-{name}", "access_token") == f"at-{live}"


def ready(world: World, name: str) -> tuple[str, str, str]:
    (cond,) = [c for c in world.grant(name)["status"]["conditions"] if c["type"] == "Ready"]
    return cond["status"], cond["reason"], cond["message"]


def claims_a_person(world: World, name: str) -> bool:
    """ReauthorizationRequired=True in status, or its metric at 1."""
    conditions = world.grant(name).get("status", {}).get("conditions", [])
    if any(c["type"] == "ReauthorizationRequired" and c["status"] == "True" for c in conditions):
        return True
    return any(
        s.labels.get("name") == name and s.value == 1
        for metric in world.metrics.registry.collect()
        if metric.name == "lucidgrant_reauthorization_required"
        for s in metric.samples
    )


def gauge(world: World, name: str) -> float | None:
    labels = {"api_url": "", "client": client_label(CREDS.client_id)}
    return world.metrics.registry.get_sample_value(name, labels)


async def test_an_outage_of_three_lifetimes_costs_probes_only_and_recovers_in_seconds(fleet):
    world, sim = fleet
    n = 200
    names = add_grants(world, sim, n)
    t0 = sim.now
    await sim.run_until(t0 + 60)
    assert all(serving(world, name) for name in names)
    assert len(sim.between(t0, t0 + 60, TOKEN)) == n
    assert sim.peak(t0, t0 + 60) <= DEFAULT_RATE + DEFAULT_BURST, "adoption under the limit"

    # Lucid goes down before the first routine refresh and stays down three access lifetimes.
    down = t0 + 1800
    await sim.run_until(down)
    world.lucid.down = True
    up = down + 3 * world.lucid.access_ttl
    await sim.run_until(up - 1)
    closed_since = sim.gates.closed_since(CREDS)
    assert closed_since is not None and down < closed_since < down + 3600
    assert len(sim.between(down, up, TOKEN)) <= DEFAULT_BURST, "those in flight as it closed"
    probes = sim.between(closed_since, up, INTROSPECT)
    assert len(probes) <= (up - closed_since) / PROBE_INTERVAL + 1
    assert all(
        len(sim.between(t, t + 60)) <= 60 / PROBE_INTERVAL + 1
        for t in _steps(closed_since, up - 60)[::600]
    )
    # Every grant is held with its refresh token, and says since when.
    held = {state(world, name).refresh_token: name for name in names}
    expiry = {name: state(world, name).access_expires_at for name in names}
    for name in names:
        assert world.lucid.grants[state(world, name).refresh_token].alive
        status, reason, message = ready(world, name)
        assert (status, reason) == ("False", "ProviderUnavailable")
        assert f"Lucid has not answered since {rfc3339(closed_since)}" in message
        assert world.condition("ReauthorizationRequired", name)[0] == "False"
    assert gauge(world, "lucidgrant_lucid_gate_closed") == 1
    assert gauge(world, "lucidgrant_lucid_gate_closed_since_seconds") == closed_since
    assert gauge(world, "lucidgrant_lucid_gate_parked_grants") == n

    # Lucid returns: the next probe reopens the gate and every grant is served within seconds,
    # most urgent first (here: the oldest expiry first, all having expired), under the limit.
    await sim.run_until(up)
    world.lucid.down = False
    await sim.run_until(up + 60)
    back = [t for t, p, _ in sim.calls if t >= up and p == TOKEN]
    assert len(back) == n
    assert back[0] <= up + PROBE_INTERVAL
    assert back[-1] - back[0] <= (n - DEFAULT_BURST) / DEFAULT_RATE + 0.1
    assert sim.peak(up, up + 60) <= DEFAULT_RATE + DEFAULT_BURST + 1  # + the probe
    order = [held[body["refresh_token"]] for body in sim.between(up, up + 60, TOKEN)]
    assert [expiry[name] for name in order] == sorted(expiry.values())
    for name in names:
        assert serving(world, name), name
        assert ready(world, name)[:2] == ("True", "Refreshed")
    assert gauge(world, "lucidgrant_lucid_gate_closed") == 0
    assert gauge(world, "lucidgrant_lucid_gate_closed_since_seconds") is None
    assert gauge(world, "lucidgrant_lucid_gate_parked_grants") == 0


async def test_a_429_slows_every_grant_of_the_client(fleet):
    world, sim = fleet
    world.lucid.script = [429]  # the first call of all; no Retry-After
    names = add_grants(world, sim, 40)
    t0 = sim.now
    await sim.run_until(t0 + 60)
    first = [t for t, p, _ in sim.calls if p == TOKEN]
    # The burst went out at once (5 adoptions, two calls each), the first was answered 429:
    # then nobody calls for 2 s, and the rate restarts at half.
    assert first[0] == t0 and sum(1 for t in first if t == t0) <= DEFAULT_BURST / 2
    assert not sim.between(t0 + 0.001, t0 + 2.0)
    assert len(sim.between(t0 + 2.0, t0 + 3.0)) <= DEFAULT_RATE / 2 + 1
    assert all(serving(world, name) for name in names)
    # A minute after the pause the rate is nearly whole again, and then whole.
    rate = gauge(world, "lucidgrant_lucid_rate_limit_per_second")
    assert rate is not None and 90 < rate < DEFAULT_RATE
    await sim.run_until(t0 + 63)
    assert gauge(world, "lucidgrant_lucid_rate_limit_per_second") == DEFAULT_RATE


async def test_writes_that_take_time_cannot_bunch_calls_past_the_rate(fleet):
    """The API server is slow for two seconds (each state Secret write takes 1 s), then fast.
    The rate limit's turn is taken after the lock, just before the call, so that Lucid never
    sees more than the rate and the burst in any one second; taken before the lock, the calls
    admitted while writes were slow arrived together with those admitted once they were fast."""
    world, sim = fleet

    async def slow_state_writes(method: str, path: str) -> None:
        if path.endswith("-lucidgrant-state") and sim.now < slow_until:
            await sim.sleep(1.0)

    world.kube.latency = slow_state_writes
    names = add_grants(world, sim, 600)
    t0 = sim.now
    slow_until = t0 + 2
    await sim.run_until(t0 + 60)
    assert all(serving(world, name) for name in names)
    assert len(sim.between(t0, t0 + 60, TOKEN)) == len(names)
    assert sim.peak(t0, t0 + 60) <= DEFAULT_RATE + DEFAULT_BURST


async def test_a_429_pause_longer_than_a_turn_is_waited_out_with_the_locks_free(fleet):
    """A 429 with Retry-After: 30 pauses the client. A grant whose turn lies that far ahead
    does not wait for it holding its lock (which another replica could see expire while the
    calls it guards are still to come): it lets go and comes back when the bucket allows."""
    world, sim = fleet
    world.lucid.script = [httpx.Response(429, headers={"Retry-After": "30"})]
    names = add_grants(world, sim, 20)
    t0 = sim.now
    await sim.run_until(t0 + 15)
    held = [n for n in names if (s := state_if_any(world, n)) and s.locked_by_other("x", sim.now)]
    assert held == [], "locks held through the pause"
    assert not sim.between(t0 + 0.001, t0 + 30), "nobody called during the pause"
    # Their authorizations are on their way: none says a person must act (an alert that fires
    # at once), neither in status nor in the metric.
    assert [n for n in names if claims_a_person(world, n)] == []
    await sim.run_until(t0 + 90)
    assert all(serving(world, name) for name in names)


async def test_a_grant_whose_token_is_valid_is_refreshed_at_its_own_time(fleet):
    """Three grants due early fail and close the gate; a fourth, due after Lucid's return, is
    neither called during the outage nor delayed: it refreshes at its own due time."""
    world, sim = fleet
    # Due 20 minutes before expiry (a third of the lifetime), against the late one's 10.
    early = add_grants(world, sim, 3, prefix="early", refreshBefore="50m")
    (late,) = add_grants(world, sim, 1, prefix="late")
    t0 = sim.now
    await sim.run_until(t0 + 60)
    late_due = sim._due[(NS, late)]
    early_due = max(sim._due[(NS, name)] for name in early)
    assert early_due < late_due - 300
    world.lucid.down = True
    await sim.run_until(early_due + 1)
    closed_since = sim.gates.closed_since(CREDS)
    assert closed_since is not None
    up = early_due + 60
    await sim.run_until(up)
    world.lucid.down = False
    await sim.run_until(late_due + 60)
    refreshed = {body["refresh_token"]: t for t, p, body in sim.calls if p == TOKEN and t >= up}
    assert len(refreshed) == 4
    assert max(refreshed.values()) == pytest.approx(late_due), "the late grant on its own time"
    assert sorted(refreshed.values())[2] <= up + PROBE_INTERVAL, "the early ones at the return"
    assert all(serving(world, name) for name in [*early, late])
