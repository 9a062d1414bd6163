"""The chaos harness: the emulated API server and Lucid in threads, the real operator as
subprocesses, many grants, and the bookkeeping that says what a fault cost.

Hooks record the moments that matter, without touching the operator:
- the Lucid emulator's rotation observer notes, for each new refresh token, when Lucid minted
  it (the old one is dead from that instant), and its answer observer when the answer carrying
  it was handed to the socket;
- the API server's commit is wrapped to note when each refresh token first reached a state
  Secret. The difference is the window in which a dying process loses a grant."""

from __future__ import annotations

import base64
import json
import math
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from lucidgrant_testbed import CRDS
from lucidgrant_testbed.kubeapi import KubeAPI
from lucidgrant_testbed.lucid import LucidEmulator
from lucidgrant_testbed.threaded import running_in_thread
from tests.e2e.harness import (
    CLIENT_ID,
    CLIENT_SECRET,
    GRANTS,
    SCOPES,
    Cluster,
    OperatorProcess,
    dump,
    grant_spec,
    leaked,
    wait_for,
)
from tests.e2e.install import OPERATOR, installed

from .results import report

NS = "default"
STATE_SUFFIX = "-lucidgrant-state"
# The operator's schedule (operator/lucidgrant/timing.py) and lock (store.py), restated here
# so that a change there shows up as a failing bound instead of a silently moved goalpost.
BACKOFF_BASE = 2.0
BACKOFF_CAP = 300.0
PULL_IN_MARGIN = 5.0
LOCK_TTL = 60.0


@dataclass(frozen=True)
class Size:
    """How big a run is: the short one runs in `make test`, the long one in `make chaos`."""

    label: str
    grants: int
    access_ttl: float
    fault_s: float
    outage_s: float
    rotations: int
    kills: int

    @property
    def long(self) -> bool:
        return self.label == "long"


SHORT = Size("short", grants=10, access_ttl=4.0, fault_s=4.0, outage_s=9.0, rotations=30, kills=3)
LONG = Size("long", grants=50, access_ttl=8.0, fault_s=30.0, outage_s=40.0, rotations=400, kills=30)


def max_attempts(window: float, retry_after: float | None = None, access_ttl: float = 0.0) -> int:
    """The most refresh attempts one grant can make inside a fault window of `window` seconds.

    After the k-th consecutive failure the operator waits at least half the backoff ceiling
    (equal jitter): base * 2**(k-1) / 2 = 2**(k-1) s, and at least Retry-After when one was
    sent. N attempts therefore span at least sum_{k<N} max(2**(k-1), R) seconds. One extra try
    is allowed when a still-valid access token pulls a retry in to expiry - 5 s, which only
    happens when the refresh margin (a third of the lifetime, plus 10 % jitter) exceeds 5 s."""
    attempts, spent = 1, 0.0
    while True:
        ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** (attempts - 1))
        gap = max(ceiling / 2.0, retry_after or 0.0)
        if spent + gap > window:
            break
        spent += gap
        attempts += 1
    pull_in = 1 if access_ttl / 3.0 * 1.1 > PULL_IN_MARGIN else 0
    return attempts + pull_in


def recovery_bound(window: float, retry_after: float | None = None, slack: float = 6.0) -> float:
    """Seconds after a fault ends by which every grant must be Ready again: the longest wait
    the backoff can have scheduled (the ceiling after the most failures the window allows, or
    Retry-After), plus slack for the refresh itself, its writes and our polling."""
    n = max_attempts(window, retry_after)
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** (n - 1))
    return max(ceiling, retry_after or 0.0) + slack


@dataclass
class GrantView:
    name: str
    grant_id: str
    ready: bool
    reauth: bool
    ready_reason: str
    stored_refresh: str | None
    consumer_access: str | None
    live_refresh: str | None
    live_access: str
    live_access_expires_at: float
    now_lucid: float

    @property
    def serving(self) -> bool:
        """Ready, and the Secret pods mount holds the token Lucid considers live."""
        return (
            self.ready
            and not self.reauth
            and self.consumer_access == self.live_access
            and self.now_lucid < self.live_access_expires_at
        )

    @property
    def lost(self) -> bool:
        """The stored refresh token is not the live one: nobody can refresh this grant again."""
        return self.stored_refresh != self.live_refresh


def _b64(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return base64.b64decode(value).decode()
    except (ValueError, UnicodeDecodeError):
        return None


@dataclass
class World:
    kube: KubeAPI
    kubeconfig: Path
    lucid: LucidEmulator
    tmp: Path
    size: Size
    cluster: Cluster = field(init=False)
    grants: dict[str, str] = field(default_factory=dict)  # grant name -> Lucid grant id
    procs: list[OperatorProcess] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # everything the operator said, to scan
    rotated_at: dict[str, float] = field(default_factory=dict)  # new refresh token -> when
    rotated_grant: dict[str, str] = field(default_factory=dict)  # new refresh token -> grant id
    stored_at: dict[str, float] = field(default_factory=dict)  # refresh token -> first stored
    answered_at: dict[str, float] = field(default_factory=dict)  # refresh token -> answer sent
    arrivals: list[float] = field(default_factory=list)  # when each call reached Lucid
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.cluster = Cluster(self.kube.url)
        self._hook_lucid()
        self._hook_kube()
        self.cluster.put_secret(
            "lucid-client", {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
        )

    # -- hooks ----------------------------------------------------------------------------

    def _hook_lucid(self) -> None:
        def rotated(grant_id: str, refresh_token: str) -> None:
            with self._lock:
                self.rotated_at[refresh_token] = time.time()
                self.rotated_grant[refresh_token] = grant_id

        def arrived() -> None:
            # Once per token/introspect/revoke request as it arrives, before any fault or
            # delay: counts calls made during a fault even if answered after it.
            self.arrivals.append(time.time())

        def answered(endpoint: str, body: bytes) -> None:
            # Token answers that rotated carry a JSON object; faults may send anything else.
            if endpoint.startswith("token") and body.startswith(b"{"):
                token = json.loads(body).get("refresh_token")
                if token:
                    with self._lock:
                        self.answered_at[token] = time.time()

        self.lucid.on_rotation = rotated
        self.lucid.on_arrival = arrived
        self.lucid.on_answered = answered

    def _hook_kube(self) -> None:
        store = self.kube.store
        original = store._commit

        def recording(rt: Any, namespace: str, name: str, obj: Any, kind: str, old: Any) -> Any:
            result = original(rt, namespace, name, obj, kind, old)
            if kind != "DELETED" and name.endswith(STATE_SUFFIX) and obj.get("kind") == "Secret":
                token = _b64((obj.get("data") or {}).get("refresh_token"))
                if token:
                    with self._lock:
                        self.stored_at.setdefault(token, time.time())
            return result

        setattr(store, "_commit", recording)  # noqa: B010 - an instance hook, tests only

    # -- grants -----------------------------------------------------------------------------

    def add_grants(self, n: int | None = None, prefix: str = "g", **spec: Any) -> list[str]:
        names = []
        for i in range(self.size.grants if n is None else n):
            name = f"{prefix}{i:03d}"
            tokens = self.lucid.issue_grant(CLIENT_ID, SCOPES)
            self.cluster.put_secret(f"boot-{name}", {"refresh_token": tokens["refresh_token"]})
            body = grant_spec(
                authorization={"refreshTokenSecretRef": {"name": f"boot-{name}"}},
                accessTokenSecret={"name": f"tok-{name}"},
                **spec,
            )
            response = self.cluster.create_grant(name, body)
            assert response.status_code == 201, response.text
            self.grants[name] = str(self.lucid.grant_of(tokens["refresh_token"]))
            names.append(name)
        return names

    def views(self) -> dict[str, GrantView]:
        """One consistent-enough look at every grant: two list calls and the emulator."""
        http = self.cluster.http
        grants = http.get(GRANTS.format(ns=NS)).json().get("items") or []
        secrets = http.get(f"/api/v1/namespaces/{NS}/secrets").json().get("items") or []
        by_secret = {s["metadata"]["name"]: s.get("data") or {} for s in secrets}
        by_grant = {g["metadata"]["name"]: g for g in grants}
        now = self.lucid.clock()
        out = {}
        for name, grant_id in self.grants.items():
            status = (by_grant.get(name) or {}).get("status") or {}
            conds = {c["type"]: c for c in status.get("conditions") or []}
            info = self.lucid.grant_info(grant_id)
            out[name] = GrantView(
                name=name,
                grant_id=grant_id,
                ready=(conds.get("Ready") or {}).get("status") == "True",
                reauth=(conds.get("ReauthorizationRequired") or {}).get("status") == "True",
                ready_reason=str((conds.get("Ready") or {}).get("reason", "")),
                stored_refresh=_b64(
                    by_secret.get(f"{name}{STATE_SUFFIX}", {}).get("refresh_token")
                ),
                consumer_access=_b64(by_secret.get(f"tok-{name}", {}).get("access_token")),
                live_refresh=info.refresh_token,
                live_access=info.access_token,
                live_access_expires_at=info.access_expires_at,
                now_lucid=now,
            )
        return out

    def wait_serving(
        self,
        timeout: float,
        what: str = "every grant serving",
        *,
        skip: Callable[[GrantView], bool] | None = None,
    ) -> float:
        """Seconds until every grant is Ready with Lucid's live access token in its Secret.
        A grant flagged for re-authorization will not recover by waiting: fail at once, unless
        `skip` says to leave it out."""
        started = time.monotonic()

        def check() -> bool:
            views = [v for v in self.views().values() if not (skip and skip(v))]
            flagged = [v.name for v in views if v.reauth]
            if flagged:
                raise AssertionError(f"{what}: flagged for re-authorization: {flagged}")
            return all(v.serving for v in views)

        wait_for(check, timeout=timeout, interval=0.25, what=what)
        return time.monotonic() - started

    def refresh_calls(self) -> Counter[int]:
        """Calls to Lucid's refresh endpoint so far, by HTTP status."""
        return Counter(
            {s: n for (ep, s), n in list(self.lucid.calls.items()) if ep == "token_refresh"}
        )

    def calls_between(self, start: float, end: float) -> int:
        """Calls that reached Lucid between two time.time() moments."""
        return sum(1 for t in list(self.arrivals) if start <= t <= end)

    def rotations(self) -> int:
        return sum(self.lucid.grant_info(g).rotations for g in self.grants.values())

    # -- operators ----------------------------------------------------------------------------

    def start_operator(self, **env: str) -> OperatorProcess:
        proc = OperatorProcess(
            self.kubeconfig,
            self.lucid.url,
            self.tmp / f"operator-{len(self.procs)}.log",
            LUCIDGRANT_SHUTDOWN_GRACE="20",
            **env,
        )
        self.procs.append(proc)
        return proc

    def scrape(self, proc: OperatorProcess) -> str:
        """/metrics of a live operator, kept for the leak scan."""
        try:
            text = proc.metrics()
        except httpx.HTTPError:
            return ""
        self.texts.append(text)
        return text

    def stop(self, proc: OperatorProcess, sig: int = signal.SIGTERM) -> int:
        if proc.proc.poll() is None:
            self.scrape(proc)
        return proc.stop(sig)

    def stop_all(self) -> list[int]:
        return [self.stop(p) for p in self.procs if p.proc.poll() is None]

    # -- what was lost ----------------------------------------------------------------------

    def lost_for_good(self, views: dict[str, GrantView], settle: float = 5.0) -> list[str]:
        """The grants of `views` whose stored refresh token is not the live one and stays so. A
        snapshot can fall between Lucid rotating a grant and the operator storing the new token:
        milliseconds when the process runs, longer on a busy machine; a lost grant stays lost."""
        return self._still(views, lambda v: v.lost, settle)

    def stuck_for_good(self, views: dict[str, GrantView], settle: float = 10.0) -> list[str]:
        """The grants of `views` not serving a live token and not doing so within `settle`. A
        snapshot can fall between Lucid rotating a grant and the consumer Secret's write, or catch
        a token a moment past its expiry with the refresh under way; a stuck grant stays stuck."""
        return self._still(views, lambda v: not v.serving, settle)

    def _still(
        self, views: dict[str, GrantView], wrong: Callable[[GrantView], bool], settle: float
    ) -> list[str]:
        """The grants `wrong` holds for in `views` and in every look until `settle` seconds."""
        suspects = {name for name, v in views.items() if wrong(v)}
        deadline = time.monotonic() + settle
        while suspects and time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.views()
            suspects = {name for name in suspects if wrong(now[name])}
        return sorted(suspects)

    def windows(self) -> list[float]:
        """Seconds from Lucid minting each refresh token to its first store, for tokens stored."""
        with self._lock:
            return [
                self.stored_at[t] - at for t, at in self.rotated_at.items() if t in self.stored_at
            ]

    def unstored(self) -> dict[str, float]:
        """Refresh tokens Lucid minted that never reached a state Secret, with when."""
        with self._lock:
            return {t: at for t, at in self.rotated_at.items() if t not in self.stored_at}

    def scan(self) -> list[str]:
        """Every token Lucid issued and the client secret, searched in every log, /metrics
        output, event and status the run produced."""
        texts = list(self.texts)
        for proc in self.procs:
            texts += proc.said()
        texts.append(dump(self.cluster.events()))
        grants = self.cluster.http.get(GRANTS.format(ns=NS)).json().get("items") or []
        texts.append(dump([g.get("status") for g in grants]))
        secrets = self.lucid.all_issued_secrets() | {CLIENT_SECRET}
        return leaked(secrets, texts)


@contextmanager
def world(
    tmp: Path, size: Size, *, clock: Callable[[], float] = time.time, refresh_ttl: float = 3600.0
) -> Iterator[World]:
    """A fresh API server, Lucid emulator and namespace; at the end every operator is stopped
    and everything they said is scanned for tokens."""
    with running_in_thread(KubeAPI([CRDS])) as (kube, _):
        # deploy/'s namespaced install for NS, enforced: the operator runs as its ServiceAccount.
        kube.apply(installed("namespaced", (NS,)))
        kubeconfig = kube.write_kubeconfig(tmp / "kubeconfig", user=OPERATOR)
        lucid = LucidEmulator(access_ttl=size.access_ttl, refresh_ttl=refresh_ttl, clock=clock)
        lucid.add_client(CLIENT_ID, CLIENT_SECRET)
        with running_in_thread(lucid) as (emulator, _):
            w = World(kube, kubeconfig, emulator, tmp, size)
            try:
                yield w
            finally:
                w.stop_all()
            hits = w.scan()
            assert not hits, f"tokens or the client secret leaked: {hits}"


def run_scenarios(
    tmp: Path, size: Size, scenarios: list[str], one_fault: Callable[[World, Size, str], None]
) -> None:
    """Run the scenarios one after another against one set of grants and one operator (the
    short run shares them to stay quick; the long run gives each scenario its own)."""
    with world(tmp, size) as w:
        w.add_grants()
        w.start_operator()
        w.wait_serving(60, "every grant serving before the faults")
        failures = []
        for scenario in scenarios:
            try:
                one_fault(w, size, scenario)
            except AssertionError as exc:
                failures.append(f"{scenario}: {exc}")
        assert not failures, "\n".join(failures)


def summary(
    w: World,
    scenario: str,
    *,
    fault: str,
    injection: str,
    count: int | str,
    lost: int,
    flagged: int,
    recovery_s: float | None,
    calls: int | None = None,
    bound: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Print and keep the one-line JSON summary of a scenario. `calls` (Lucid calls during the
    fault) and `bound` (their bound) only where the scenario counts them."""
    row: dict[str, Any] = {
        "scenario": scenario,
        "size": w.size.label,
        "grants": len(w.grants),
        "fault": fault,
        "injection": injection,
        "count": count,
        "lost": lost,
        "flagged": flagged,
        "recovery_s": None if recovery_s is None else round(recovery_s, 1),
        "calls_during_fault": calls,
        "bound": bound,
        "invalid_grant": w.lucid.invalid_grant_count - w.lucid.flaky_invalid_grant_count,
        "rotations": w.rotations(),
        "leaks": len(w.scan()),
        **extra,
    }
    report(row)
    return row


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]
