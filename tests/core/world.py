"""One operator's reconcile, in process: the real Reconciler, StateStore, cache and Lucid
client, wired to the fakes (Kubernetes in memory, Lucid behind httpx.MockTransport, a clock
that moves only when told). What the watches would deliver, `put_secret` and `put_grant` feed
into the cache by hand."""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx

from lucidgrant.cache import Cache, GrantRecord, SecretReader
from lucidgrant.lucid import LucidClient
from lucidgrant.metrics import Metrics
from lucidgrant.names import (
    LABEL_GRANT,
    LABEL_ROLE,
    ROLE_ACCESS_TOKEN,
    ROLE_CLIENT,
    grant_path,
    secret_path,
    state_secret_name,
)
from lucidgrant.reconcile import Reconciler
from lucidgrant.secretdata import secret_value
from lucidgrant.state_secret import parse_state
from lucidgrant.store import StateStore
from lucidgrant.wal import RotationLog

from .fakes import FakeClock, FakeKube, FakeLucid

NS = "ns"
# The labels by which a person lets grant "g" write into an existing Secret.
OPTED_IN = {LABEL_ROLE: ROLE_ACCESS_TOKEN, LABEL_GRANT: "g"}


OPERATOR_NS = "lucidgrant-system"


def grant_body(name: str = "g", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "lucidgrant.dev/v1alpha1",
        "kind": "LucidGrant",
        "metadata": {"name": name, "namespace": NS, "generation": 1},
        "spec": {
            "clientSecretRef": {"name": "client"},
            "scopes": ["a.b"],
            "authorization": {"refreshTokenSecretRef": {"name": "boot"}},
            "accessTokenSecret": {"name": "tok"},
            **spec,
        },
    }


class World:
    def __init__(self, wal: RotationLog | None = None, *, restart_of: World | None = None) -> None:
        """`wal`: the write-ahead log the store writes to. `restart_of`: a world whose cluster,
        Lucid and clock this one shares, as a restarted process does; its cache starts from
        what the watches' first listing would bring."""
        # LucidClient stamps answers with the real time: the fake clock starts there.
        self.clock: FakeClock = (
            restart_of.clock if restart_of else FakeClock(float(int(time.time())))
        )
        self.kube: FakeKube = restart_of.kube if restart_of else FakeKube()
        self.lucid: FakeLucid = restart_of.lucid if restart_of else FakeLucid(self.clock)
        self.http = httpx.AsyncClient(transport=self.lucid.transport())
        self.cache = Cache()
        for path, obj in self.kube.objects.items():
            if "/lucidgrants/" in path:
                self.cache.observe_grant(obj)
            elif "/secrets/" in path:
                self.cache.observe_secret(obj)
        self.metrics = Metrics()
        self.secrets = SecretReader(self.cache, self.kube)
        self.store = StateStore(self.secrets, "me", sleep=self.clock.sleep, wal=wal)
        self.reconciler = Reconciler(
            self.kube,
            LucidClient(self.http, "https://lucid.test"),
            self.secrets,
            self.store,
            self.metrics,
            clock=self.clock,
            rand=lambda: 0.0,
            sleep=self.clock.sleep,
            authorization_url=lambda grant: "https://ops.test/authorize",
            operator_namespace=OPERATOR_NS,
        )

    def put_secret(self, name: str, values: dict[str, str], **meta: Any) -> dict[str, Any]:
        """A Secret; labelled for lucidgrant to read unless `labels` are given."""
        data = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
        meta.setdefault("labels", {LABEL_ROLE: ROLE_CLIENT})
        body = {"metadata": {"name": name, "namespace": NS, **meta}, "data": data}
        stored = self.kube.put(secret_path(NS, name), body)
        self.cache.observe_secret(stored)
        return stored

    def put_grant(self, body: dict[str, Any]) -> GrantRecord:
        return self.cache.observe_grant(
            self.kube.put(grant_path(NS, body["metadata"]["name"]), body)
        )

    def authorized_grant(self, name: str = "g", **spec: Any) -> GrantRecord:
        """A grant whose bootstrap Secret holds a live refresh token, and its client Secret."""
        self.put_secret("client", {"client_id": "client-1", "client_secret": "secret-1"})
        self.put_secret("boot", {"refresh_token": self.lucid.issue()})
        return self.put_grant(grant_body(name, **spec))

    async def reconcile(self, name: str = "g") -> float | None:
        return await self.reconciler.reconcile((NS, name))

    def grant(self, name: str = "g") -> dict[str, Any]:
        return self.kube.objects[grant_path(NS, name)]

    def condition(self, type_: str, name: str = "g") -> tuple[str, str]:
        for cond in self.grant(name).get("status", {}).get("conditions", []):
            if cond["type"] == type_:
                return cond["status"], cond["reason"]
        raise AssertionError(f"no {type_} condition")

    def secret(self, name: str, key: str) -> str | None:
        return secret_value(self.kube.objects.get(secret_path(NS, name)), key)

    def state(self, name: str = "g"):
        return parse_state(self.kube.objects[secret_path(NS, state_secret_name(name))])

    def event_reasons(self) -> list[str]:
        return [e["reason"] for e in self.kube.events()]

    def refresh_calls(self) -> int:
        return self.lucid.calls("/oauth2/token")
