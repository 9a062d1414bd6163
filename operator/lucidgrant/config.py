"""Settings from the environment (and the command line, which overrides it).

`ENVIRONMENT` is the one list of the variables the operator reads: `Settings.from_env` parses
them and `lucidgrant run --help` prints them, so the help cannot drift from the code."""

from __future__ import annotations

import dataclasses
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from lucidgrant.authstate import DEFAULT_STATE_TTL
from lucidgrant.lucid import DEFAULT_API_URL, DEFAULT_APP_URL, DEFAULT_DEADLINE
from lucidgrant.lucid_answers import MIN_EXPIRES_IN
from lucidgrant.ratelimit import DEFAULT_BURST, DEFAULT_RATE, MIN_RATE


class SettingsError(ValueError):
    """An environment variable with a value the operator cannot use; the message names both."""


@dataclass(frozen=True)
class Settings:
    lucid_api_url: str = DEFAULT_API_URL
    lucid_app_url: str = DEFAULT_APP_URL
    http_host: str = "0.0.0.0"  # noqa: S104 - probes and scrapes come from outside the pod
    http_port: int = 8080
    concurrency: int = 32
    # The deadline of one Lucid call, answer read (at most lucid.MAX_DEADLINE).
    lucid_timeout: float = DEFAULT_DEADLINE
    # Shorter access-token lifetimes from Lucid are taken as this (emulators in tests lower it).
    min_token_lifetime: float = MIN_EXPIRES_IN
    # Calls a second to Lucid per client id, and the burst above it (ratelimit.TokenBucket).
    lucid_rate: float = DEFAULT_RATE
    lucid_burst: float = DEFAULT_BURST
    shutdown_grace: float = 25.0
    external_url: str | None = None
    # The web flow's own listener and its limits (authflow.py, listener.py, flowlimit.py).
    flow_host: str = "0.0.0.0"  # noqa: S104 - the flow is reached through an Ingress
    flow_port: int = 8081
    flow_max_connections: int = 256
    http_max_connections: int = 64
    header_timeout: float = 10.0
    idle_timeout: float = 30.0
    flow_client_rate: float = 30.0  # requests a minute per client address
    flow_grant_rate: float = 10.0  # requests a minute per grant
    flow_max_states: int = 1000
    flow_user_header: str | None = None
    flow_address_header: str | None = None
    # How long an authorization link of the web flow stays valid (authstate.StateSigner).
    state_ttl: float = DEFAULT_STATE_TTL
    pod_namespace: str = "lucidgrant-system"
    leader_election: bool = False
    lease_name: str = "lucidgrant-leader"
    lease_duration: float = 15.0
    # Where rotated refresh tokens wait between Lucid's answer and the state Secret (wal.py),
    # so that a restarted container stores what a killed one could not. None: no log.
    wal_dir: str | None = None
    # Seconds between re-lists of the grants and Secrets the cache holds (resync.py): the bound
    # on healing an event a watch gap lost.
    resync_interval: float = 300.0
    # Shards: this replica handles only grants whose labels match (key=value,...).
    selector: dict[str, str] = field(default_factory=dict)
    # Identifies this process in locks and the leader Lease: host, pid and a random part, so a
    # restarted process never mistakes an old lock for its own.
    identity: str = field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Raises SettingsError for a value that does not parse; unset or empty means default."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for var in ENVIRONMENT:
            text = environ.get(var.name, "").strip()
            if var.field is None or not text:
                continue
            try:
                values[var.field] = var.parse(text)
            except ValueError as exc:
                raise SettingsError(f"{var.name}={text!r} is not usable: {exc}") from None
        return cls(**values)


def parse_selector(text: str) -> dict[str, str]:
    """'team=a,tier=prod' -> {'team': 'a', 'tier': 'prod'} (equality only, as shards need)."""
    selector = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"not a key=value selector: {part!r}")
        selector[key.strip()] = value.strip()
    return selector


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError("use a port number from 1 to 65535")
    return int(text)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError("use a whole number of 1 or more")
    return int(text)


def _positive(use: str) -> Callable[[str], float]:
    """A parser of numbers above 0; `use` says what to give instead."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = 0.0
        if not 0 < value < float("inf"):
            raise ValueError(f"use {use}")
        return value

    return parse


_seconds = _positive("a number of seconds above 0, e.g. 15 or 2.5")
_per_minute = _positive("a number of requests a minute above 0, e.g. 30")


def _https_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(
            "use the https:// URL where the flow is reached (e.g. https://ops.example.com/"
            "lucidgrant): its cookie is Secure and its callback carries an authorization code"
        )
    return text


def _header(text: str) -> str:
    if not text.replace("-", "").isalnum():
        raise ValueError("use an HTTP header name, e.g. X-Auth-Request-Email")
    return text


def _calls(text: str) -> float:
    try:
        calls = float(text)
    except ValueError:
        calls = 0.0
    if not MIN_RATE <= calls < float("inf"):
        raise ValueError(f"use a number of calls of {MIN_RATE:g} or more, e.g. 100")
    return calls


def _bool(text: str) -> bool:
    value = text.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("use true or false")


@dataclass(frozen=True)
class EnvVar:
    name: str
    # The Settings field it sets; None for a variable another module reads itself.
    field: str | None
    help: str
    parse: Callable[[str], Any] = str
    # For a variable without a Settings field: its default as the reading module applies it.
    shown_default: str = "unset"

    def default(self) -> str:
        """The default as a person would write it, for the help text."""
        if self.field is None:
            return self.shown_default
        spec = next(f for f in dataclasses.fields(Settings) if f.name == self.field)
        value = spec.default
        if value is None or value is dataclasses.MISSING:
            return "unset"
        if isinstance(value, bool):
            return str(value).lower()
        return f"{value:g}" if isinstance(value, float) else str(value)


ENVIRONMENT: tuple[EnvVar, ...] = (
    EnvVar("LUCIDGRANT_LUCID_API_URL", "lucid_api_url", "Lucid's token, introspect and revoke API"),
    EnvVar("LUCIDGRANT_LUCID_APP_URL", "lucid_app_url", "Lucid's authorize pages"),
    EnvVar("LUCIDGRANT_HTTP_HOST", "http_host", "address of /healthz, /readyz, /metrics"),
    EnvVar("LUCIDGRANT_HTTP_PORT", "http_port", "port of /healthz, /readyz, /metrics", _port),
    EnvVar("LUCIDGRANT_CONCURRENCY", "concurrency", "grants reconciled at once", _positive_int),
    EnvVar("LUCIDGRANT_LUCID_TIMEOUT", "lucid_timeout", "seconds per Lucid call", _seconds),
    EnvVar(
        "LUCIDGRANT_MIN_TOKEN_LIFETIME",
        "min_token_lifetime",
        "seconds: a shorter access-token lifetime is taken as this",
        _seconds,
    ),
    EnvVar("LUCIDGRANT_LUCID_RATE", "lucid_rate", "calls a second to Lucid per client id", _calls),
    EnvVar("LUCIDGRANT_LUCID_BURST", "lucid_burst", "calls to Lucid at once above the rate",
           _calls),
    EnvVar(
        "LUCIDGRANT_SHUTDOWN_GRACE",
        "shutdown_grace",
        "seconds SIGTERM waits for refreshes in flight",
        _seconds,
    ),
    EnvVar(
        "LUCIDGRANT_LEADER_ELECTION",
        "leader_election",
        "take a Lease before refreshing (true/false)",
        _bool,
    ),
    EnvVar("LUCIDGRANT_LEASE_NAME", "lease_name", "the leader Lease's name"),
    EnvVar("LUCIDGRANT_LEASE_DURATION", "lease_duration", "seconds a Lease lasts", _seconds),
    EnvVar("LUCIDGRANT_POD_NAMESPACE", "pod_namespace", "namespace of the Lease and state key"),
    EnvVar("LUCIDGRANT_SELECTOR", "selector", "key=value,...: only grants with these labels",
           parse_selector),
    EnvVar("LUCIDGRANT_EXTERNAL_URL", "external_url",
           "public https:// URL of the web authorization flow (turns it on)", _https_url),
    EnvVar("LUCIDGRANT_FLOW_HOST", "flow_host", "address of the web flow's listener"),
    EnvVar("LUCIDGRANT_FLOW_PORT", "flow_port", "port of the web flow's listener", _port),
    EnvVar("LUCIDGRANT_FLOW_MAX_CONNECTIONS", "flow_max_connections",
           "open connections to the web flow at most", _positive_int),
    EnvVar("LUCIDGRANT_HTTP_MAX_CONNECTIONS", "http_max_connections",
           "open connections to the probes and /metrics at most", _positive_int),
    EnvVar("LUCIDGRANT_HEADER_TIMEOUT", "header_timeout",
           "seconds a new connection has to send a whole request head", _seconds),
    EnvVar("LUCIDGRANT_IDLE_TIMEOUT", "idle_timeout",
           "seconds a connection may idle between requests", _seconds),
    EnvVar("LUCIDGRANT_FLOW_CLIENT_RATE", "flow_client_rate",
           "web-flow requests a minute per client address (after a burst of 10)", _per_minute),
    EnvVar("LUCIDGRANT_FLOW_GRANT_RATE", "flow_grant_rate",
           "web-flow requests a minute per grant (after a burst of 10)", _per_minute),
    EnvVar("LUCIDGRANT_FLOW_MAX_STATES", "flow_max_states",
           "web-flow links outstanding at most (16 per grant)", _positive_int),
    EnvVar("LUCIDGRANT_FLOW_USER_HEADER", "flow_user_header",
           "header an authenticating proxy sets to the person (recorded; required when set)",
           _header),
    EnvVar("LUCIDGRANT_FLOW_ADDRESS_HEADER", "flow_address_header",
           "header a proxy sets to the client address, for the rate limits (its last value)",
           _header),
    EnvVar("LUCIDGRANT_STATE_KEY", None, "HMAC key of the web flow's state (32+ characters)"),
    EnvVar("LUCIDGRANT_STATE_TTL", "state_ttl", "seconds a web-flow link stays valid",
           _seconds),
    EnvVar("LUCIDGRANT_WAL_DIR", "wal_dir", "directory of the write-ahead log of rotated tokens"),
    EnvVar("LUCIDGRANT_RESYNC_INTERVAL", "resync_interval",
           "seconds between re-lists that heal events a watch gap lost", _seconds),
)  # fmt: skip
