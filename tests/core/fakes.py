"""In-process fakes for the refresh path: a Kubernetes API in memory, Lucid behind
httpx.MockTransport, and a clock that only moves when told.

The fake API server keeps the rules the operator relies on, as the real one does:
- every write bumps a resourceVersion; a merge patch that carries metadata.resourceVersion
  fails with 409 Conflict when it is stale (the precondition of
  staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go, GuaranteedUpdate);
- a create of an existing name fails with 409 AlreadyExists (same file, Create);
- a JSON patch whose `test` operation fails answers 422 (the JSON-patch path of
  staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go);
- a merge patch with a null value removes the key (RFC 7386);
- a patch of the status subresource changes only `status`."""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from lucidgrant.kube import MERGE_PATCH, ConflictError, KubeError, NotFoundError
from lucidgrant_testbed.kube_patch import PatchError, json_patch, merge_patch

Fault = Callable[[str, str], None]


class FakeKube:
    """The `KubeClient` calls, against objects kept by path. `fail(method, path)` may raise to
    inject a fault before a call (an OSError for an outage, a ConflictError for a race);
    `latency(method, path)`, if set, is awaited before a PATCH (a write that takes time)."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.fault: Fault | None = None
        self.latency: Callable[[str, str], Awaitable[None]] | None = None
        self._rv = itertools.count(100)
        self._uid = itertools.count(1)

    def _enter(self, method: str, path: str) -> None:
        self.calls.append((method, path))
        if self.fault is not None:
            self.fault(method, path)

    def _stamp(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        return copy.deepcopy(obj)

    def put(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Seed an object (as a person's kubectl would), bypassing faults."""
        obj = copy.deepcopy(body)
        old = self.objects.get(path, {}).get("metadata", {}).get("uid")
        obj.setdefault("metadata", {}).setdefault("uid", old or f"uid-{next(self._uid)}")
        self.objects[path] = obj
        return self._stamp(obj)

    async def get(self, path: str) -> dict[str, Any] | None:
        self._enter("GET", path)
        obj = self.objects.get(path)
        return copy.deepcopy(obj) if obj is not None else None

    async def get_metadata(self, path: str) -> dict[str, Any] | None:
        self._enter("GET metadata", path)
        obj = self.objects.get(path)
        if obj is None:
            return None
        meta = copy.deepcopy(obj["metadata"])
        return {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": meta}

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"].get("name") or f"generated-{next(self._uid)}"
        full = f"{path}/{name}"
        self._enter("POST", full)  # recorded by the name it creates
        if full in self.objects:
            raise ConflictError("POST", path, 409, "AlreadyExists")
        return self.put(full, body)

    async def patch(
        self, path: str, patch: Any, *, content_type: str = MERGE_PATCH
    ) -> dict[str, Any]:
        self._enter("PATCH", path)
        if self.latency is not None:
            await self.latency("PATCH", path)
        base = path.removesuffix("/status")
        obj = self.objects.get(base)
        if obj is None:
            raise NotFoundError("PATCH", path, 404, "NotFound")
        if content_type == MERGE_PATCH:
            wanted = (patch.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != obj["metadata"]["resourceVersion"]:
                raise ConflictError("PATCH", path, 409, "Conflict")
            if path.endswith("/status"):
                patch = {"status": patch.get("status")}
            updated = merge_patch(obj, patch)
        else:
            try:  # the emulated API server's JSON patch: the real operations, with `test`
                updated = json_patch(copy.deepcopy(obj), patch)
            except PatchError:
                raise KubeError("PATCH", path, 422, "Invalid") from None
        self.objects[base] = updated
        return self._stamp(updated)

    async def delete(self, path: str) -> None:
        self._enter("DELETE", path)
        self.objects.pop(path, None)

    def events(self) -> list[dict[str, Any]]:
        return [o for p, o in self.objects.items() if "/events/" in p]


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Waiting costs nothing: the clock moves on instead."""
        self.slept.append(seconds)
        self.now += seconds


@dataclass
class LucidGrant:
    refresh_token: str
    scopes: list[str]
    alive: bool = True
    rotations: int = 0


@dataclass
class FakeLucid:
    """Lucid's token, introspect and revoke endpoints as an httpx.MockTransport handler.
    `script` holds answers to give instead of the real one, next first: an int status (with
    Lucid's error body for 400/401), a dict to send as a 200 JSON body, or a response as is."""

    clock: FakeClock
    client_id: str = "client-1"
    client_secret: str = "secret-1"
    access_ttl: float = 3600.0
    grants: dict[str, LucidGrant] = field(default_factory=dict)
    script: list[int | dict[str, Any] | httpx.Response] = field(default_factory=list)
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    introspect_active: bool | None = None  # None: the truth
    partial: int = 0  # answers to come that rotate but lack the access token
    before_token: Callable[[], None] | None = None  # runs once, before the next token answer
    down: bool = False  # an outage: every call answers 503 with a maintenance page
    issued: set[str] = field(default_factory=set)  # every token handed out, for leak scans
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def issue(self, scopes: list[str] | None = None) -> str:
        token = f"rt-{next(self._seq)}"
        self.grants[token] = LucidGrant(token, scopes or ["a.b", "offline_access"])
        self.issued.add(token)
        return token

    def live_refresh_token(self) -> str:
        (grant,) = [g for g in self.grants.values() if g.alive]
        return grant.refresh_token

    def calls(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.headers.get("content-type", "").startswith("application/json"):
            body = json.loads(request.content)
        else:
            body = dict(httpx.QueryParams(request.content.decode()))
        self.requests.append((path, body))
        if self.down:
            return httpx.Response(503, text="<html>maintenance</html>")
        if (body.get("client_id"), body.get("client_secret")) != (
            self.client_id,
            self.client_secret,
        ):
            return httpx.Response(401, json={"error": "invalid_client"})
        if path == "/oauth2/token/introspect":
            grant = self._grant_of(body["token"])
            active = grant is not None if self.introspect_active is None else self.introspect_active
            expires = {"expires_in": 86400 * 90} if active else {}
            return httpx.Response(200, json={"active": active, **expires})
        if path == "/oauth2/token/revoke":
            grant = self._grant_of(body["token"])
            if grant is not None:
                grant.alive = False
            return httpx.Response(200, json={})
        if self.before_token is not None:
            hook, self.before_token = self.before_token, None
            hook()
        if self.script:
            answer = self.script.pop(0)
            if isinstance(answer, httpx.Response):
                return answer
            if isinstance(answer, dict):
                return httpx.Response(200, json=answer)
            if answer in (400, 401):
                error = "invalid_grant" if answer == 400 else "invalid_client"
                return httpx.Response(answer, json={"error": error})
            return httpx.Response(answer, text="<html>maintenance</html>")
        token = body.get("refresh_token") or body.get("code")
        grant = self._grant_of(token)
        if grant is None:
            return httpx.Response(400, json={"error": "invalid_grant"})
        answer = self.rotate(grant)
        if self.partial:
            self.partial -= 1
            del answer["access_token"]
        return httpx.Response(200, json=answer)

    def _grant_of(self, token: str | None) -> LucidGrant | None:
        grant = self.grants.get(token or "")
        return grant if grant is not None and grant.alive else None

    def rotate(self, grant: LucidGrant) -> dict[str, Any]:
        """Rotation: the old refresh token dies, a new one lives."""
        del self.grants[grant.refresh_token]
        grant.rotations += 1
        grant.refresh_token = f"rt-{next(self._seq)}"
        self.grants[grant.refresh_token] = grant
        self.issued |= {grant.refresh_token, f"at-{grant.refresh_token}"}
        return {
            "access_token": f"at-{grant.refresh_token}",
            "refresh_token": grant.refresh_token,
            "expires_in": self.access_ttl,
            "scopes": grant.scopes,
            "token_type": "bearer",
            "user_id": 1001,
        }

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)
