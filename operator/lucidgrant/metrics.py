"""Prometheus metrics. Per-grant series are labelled with namespace and name only (plus a
reason from a small fixed set) and are removed when the grant goes away."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from lucidgrant import __version__
from lucidgrant.names import REAUTH_REASONS

REFRESH_RESULTS = (
    "success",
    "transient_error",
    "invalid_grant",
    "client_error",
    "invalid_scopes",
    "lock_busy",
    "store_error",
)
GRANT_STATES = ("ready", "not_ready", "reauthorization_required", "suspended", "invalid")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        grant = ["namespace", "name"]
        self.access_expiry = Gauge(
            "lucidgrant_access_token_expiry_timestamp_seconds",
            "When the access token in the grant's Secret expires (Unix time).",
            grant,
            registry=r,
        )
        self.refresh_expiry = Gauge(
            "lucidgrant_refresh_token_expiry_timestamp_seconds",
            "When the grant's stored refresh token expires (Unix time).",
            grant,
            registry=r,
        )
        self.last_refresh = Gauge(
            "lucidgrant_last_refresh_timestamp_seconds",
            "When the grant was last refreshed successfully (Unix time).",
            grant,
            registry=r,
        )
        self.ready = Gauge(
            "lucidgrant_ready",
            "1 when the grant's Secret holds a live access token, else 0.",
            grant,
            registry=r,
        )
        self.reauth = Gauge(
            "lucidgrant_reauthorization_required",
            "1 when a person must authorize the grant again, else 0; reason says why.",
            [*grant, "reason"],
            registry=r,
        )
        self.failures = Gauge(
            "lucidgrant_consecutive_failures",
            "Failed refresh attempts of the grant since its last success.",
            grant,
            registry=r,
        )
        self.suspended = Gauge(
            "lucidgrant_suspended",
            "1 when the grant is suspended (spec.suspend), else 0.",
            grant,
            registry=r,
        )
        self.refreshes = Counter(
            "lucidgrant_refresh",
            "Refresh attempts by result.",
            ["result"],
            registry=r,
        )
        self.refresh_duration = Histogram(
            "lucidgrant_refresh_duration_seconds",
            "Time of the refresh call to Lucid.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.lucid_requests = Counter(
            "lucidgrant_lucid_requests",
            "HTTP requests to Lucid by endpoint and status code (0: no answer).",
            ["endpoint", "code"],
            registry=r,
        )
        self.grants = Gauge(
            "lucidgrant_grants",
            "Grants known to this operator, by state.",
            ["state"],
            registry=r,
        )
        self.leader = Gauge(
            "lucidgrant_leader",
            "1 when this replica is the active one (holds the leader Lease), else 0.",
            registry=r,
        )
        gate = ["api_url", "client"]  # client: lucid_health.client_label, not the client id
        self.gate_closed = Gauge(
            "lucidgrant_lucid_gate_closed",
            "1 while refreshes are held because Lucid is unavailable (probes only), else 0.",
            gate,
            registry=r,
        )
        self.gate_closed_since = Gauge(
            "lucidgrant_lucid_gate_closed_since_seconds",
            "When the gate to Lucid closed (Unix time); absent while it is open.",
            gate,
            registry=r,
        )
        self.gate_parked = Gauge(
            "lucidgrant_lucid_gate_parked_grants",
            "Grants whose refresh waits for the gate to Lucid to reopen.",
            gate,
            registry=r,
        )
        self.rate_limit = Gauge(
            "lucidgrant_lucid_rate_limit_per_second",
            "Calls a second to Lucid the client's token bucket allows now (lower after a 429).",
            gate,
            registry=r,
        )
        self.build = Info("lucidgrant_build", "Build information.", registry=r)
        self.build.info({"version": __version__})
        for result in REFRESH_RESULTS:
            self.refreshes.labels(result)
        for state in GRANT_STATES:
            self.grants.labels(state).set(0)

    def observe_lucid(self, endpoint: str, code: int, seconds: float) -> None:
        self.lucid_requests.labels(endpoint, str(code)).inc()
        if endpoint == "token_refresh":
            self.refresh_duration.observe(seconds)

    def set_gate(
        self, api_url: str, client: str, *, closed_since: float | None, parked: int
    ) -> None:
        labels = (api_url, client)
        self.gate_closed.labels(*labels).set(0 if closed_since is None else 1)
        if closed_since is None:
            _remove(self.gate_closed_since, labels)
        else:
            self.gate_closed_since.labels(*labels).set(closed_since)
        self.gate_parked.labels(*labels).set(parked)

    def set_grant(
        self,
        namespace: str,
        name: str,
        *,
        access_expires_at: float | None,
        refresh_expires_at: float | None,
        last_refresh_at: float | None,
        ready: bool,
        reauth_reason: str | None,
        failures: int,
        suspended: bool,
    ) -> None:
        key = (namespace, name)
        for gauge, value in (
            (self.access_expiry, access_expires_at),
            (self.refresh_expiry, refresh_expires_at),
            (self.last_refresh, last_refresh_at),
        ):
            if value is None:
                _remove(gauge, key)
            else:
                gauge.labels(*key).set(value)
        self.ready.labels(*key).set(1 if ready else 0)
        self.failures.labels(*key).set(failures)
        self.suspended.labels(*key).set(1 if suspended else 0)
        for reason in REAUTH_REASONS:
            if reason == reauth_reason:
                self.reauth.labels(*key, reason).set(1)
            else:
                _remove(self.reauth, (*key, reason))
        if reauth_reason is None:
            self.reauth.labels(*key, "").set(0)
        else:
            _remove(self.reauth, (*key, ""))

    def forget_grant(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        for gauge in (
            self.access_expiry,
            self.refresh_expiry,
            self.last_refresh,
            self.ready,
            self.failures,
            self.suspended,
        ):
            _remove(gauge, key)
        for reason in ("", *REAUTH_REASONS):
            _remove(self.reauth, (*key, reason))


def _remove(gauge: Gauge, labels: tuple[str, ...]) -> None:
    try:
        gauge.remove(*labels)
    except KeyError:
        pass
