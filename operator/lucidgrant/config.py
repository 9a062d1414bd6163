"""Settings from the environment (and the command line, which overrides it)."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field

from lucidgrant.lucid import DEFAULT_API_URL, DEFAULT_APP_URL, DEFAULT_DEADLINE, MIN_EXPIRES_IN


def _float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


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
    shutdown_grace: float = 25.0
    external_url: str | None = None
    pod_namespace: str = "lucidgrant-system"
    leader_election: bool = False
    lease_name: str = "lucidgrant-leader"
    lease_duration: float = 15.0
    # Shards: this replica handles only grants whose labels match (key=value,...).
    selector: dict[str, str] = field(default_factory=dict)
    # Identifies this process in locks and the leader Lease: host, pid and a random part, so a
    # restarted process never mistakes an old lock for its own.
    identity: str = field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    )

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ.get
        return cls(
            lucid_api_url=env("LUCIDGRANT_LUCID_API_URL", DEFAULT_API_URL),
            lucid_app_url=env("LUCIDGRANT_LUCID_APP_URL", DEFAULT_APP_URL),
            http_host=env("LUCIDGRANT_HTTP_HOST", "0.0.0.0"),  # noqa: S104
            http_port=int(env("LUCIDGRANT_HTTP_PORT", "8080")),
            concurrency=int(env("LUCIDGRANT_CONCURRENCY", "32")),
            lucid_timeout=_float("LUCIDGRANT_LUCID_TIMEOUT", DEFAULT_DEADLINE),
            min_token_lifetime=_float("LUCIDGRANT_MIN_TOKEN_LIFETIME", MIN_EXPIRES_IN),
            shutdown_grace=_float("LUCIDGRANT_SHUTDOWN_GRACE", 25.0),
            external_url=env("LUCIDGRANT_EXTERNAL_URL") or None,
            pod_namespace=env("LUCIDGRANT_POD_NAMESPACE", "lucidgrant-system"),
            leader_election=env("LUCIDGRANT_LEADER_ELECTION", "false").lower()
            in ("1", "true", "yes"),
            lease_name=env("LUCIDGRANT_LEASE_NAME", "lucidgrant-leader"),
            lease_duration=_float("LUCIDGRANT_LEASE_DURATION", 15.0),
            selector=parse_selector(env("LUCIDGRANT_SELECTOR", "")),
        )


def parse_selector(text: str) -> dict[str, str]:
    """'team=a,tier=prod' -> {'team': 'a', 'tier': 'prod'} (equality only, as shards need)."""
    selector = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"not a key=value selector: {part!r}")
        selector[key.strip()] = value.strip()
    return selector
