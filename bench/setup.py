"""Creating the benchmark's grants over plain HTTP, concurrently: a grant at the Lucid emulator
(as a person's one-time authorization would), its refresh token in a bootstrap Secret, and the
LucidGrant that points at it. Also the one-shot baseline's Secrets, in a namespace of their own
that the operator does not watch.

aiohttp rather than httpx: measured on this machine, an httpx request costs about 2.8 ms of
client CPU and an aiohttp one 0.14 ms, and 40,000 setup requests add up."""

from __future__ import annotations

import asyncio
import base64
import json
import zlib
from dataclasses import dataclass
from typing import Any

import aiohttp

CLIENT_ID = "bench-client"
CLIENT_SECRET = "bench-client-secret"
SCOPES = ["lucidchart.document.content:readonly", "offline_access"]
NAMESPACE = "default"
ONESHOT_NAMESPACE = "oneshot"
GRANTS = "/apis/lucidgrant.dev/v1alpha1/namespaces/{ns}/lucidgrants"
SECRETS = "/api/v1/namespaces/{ns}/secrets"


@dataclass(frozen=True)
class BenchGrant:
    name: str
    lucid_id: str
    uid: str

    @property
    def jitter(self) -> float:
        """The operator's per-grant jitter in [0, 1), as lucidgrant.cache computes it."""
        return (zlib.crc32(self.uid.encode()) % 10_000) / 10_000


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


class Http:
    """Just enough of a client: POST JSON to a base URL, get a JSON object back."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base = base_url.rstrip("/")

    async def post(self, path: str, body: Any) -> dict[str, Any]:
        async with self.session.post(self.base + path, json=body) as response:
            text = await response.text()
            if response.status >= 300:
                raise RuntimeError(f"POST {path}: {response.status} {text}")
            return dict(json.loads(text))


async def _issue(lucid: Http) -> tuple[str, str]:
    """A grant at Lucid: (its id, its refresh token)."""
    tokens = await lucid.post("/_emulator/grants", {"client_id": CLIENT_ID, "scopes": SCOPES})
    info = await lucid.post("/_emulator/lookup", {"token": tokens["refresh_token"]})
    return str(info["id"]), str(tokens["refresh_token"])


async def _secret(kube: Http, ns: str, name: str, values: dict[str, str]) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        # Marked for lucidgrant to read, as a person labels a client or bootstrap Secret.
        "metadata": {"name": name, "labels": {"lucidgrant.dev/role": "client"}},
        "data": {k: _b64(v) for k, v in values.items()},
    }
    await kube.post(SECRETS.format(ns=ns), body)


async def _one_grant(kube: Http, lucid: Http, name: str, refresh_before: str) -> BenchGrant:
    lucid_id, refresh_token = await _issue(lucid)
    await _secret(kube, NAMESPACE, f"{name}-bootstrap", {"refresh_token": refresh_token})
    body = {
        "apiVersion": "lucidgrant.dev/v1alpha1",
        "kind": "LucidGrant",
        "metadata": {"name": name, "labels": {"bench": "true"}},
        "spec": {
            "clientSecretRef": {"name": "lucid-client"},
            "scopes": SCOPES,
            "authorization": {"refreshTokenSecretRef": {"name": f"{name}-bootstrap"}},
            "accessTokenSecret": {"name": f"{name}-token"},
            "refreshBefore": refresh_before,
        },
    }
    created = await kube.post(GRANTS.format(ns=NAMESPACE), body)
    return BenchGrant(name, lucid_id, str(created["metadata"]["uid"]))


async def _bounded(n: int, make: Any, concurrency: int) -> list[Any]:
    slots = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Any:
        async with slots:
            return await make(i)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def _create_grants(
    kube_url: str, lucid_url: str, n: int, refresh_before: str, concurrency: int
) -> list[BenchGrant]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        kube, lucid = Http(session, kube_url), Http(session, lucid_url)
        await _secret(
            kube,
            NAMESPACE,
            "lucid-client",
            {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        )
        return await _bounded(
            n,
            lambda i: _one_grant(kube, lucid, f"bench-{i:05d}", refresh_before),
            concurrency,
        )


def create_grants(
    kube_url: str, lucid_url: str, n: int, refresh_before: str, concurrency: int = 32
) -> list[BenchGrant]:
    return asyncio.run(_create_grants(kube_url, lucid_url, n, refresh_before, concurrency))


async def _create_oneshot(kube_url: str, lucid_url: str, n: int) -> list[tuple[str, str]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        kube, lucid = Http(session, kube_url), Http(session, lucid_url)
        await kube.post(
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ONESHOT_NAMESPACE}},
        )
        out = []
        for i in range(n):
            lucid_id, refresh_token = await _issue(lucid)
            name = f"oneshot-{i:03d}"
            await _secret(kube, ONESHOT_NAMESPACE, name, {"refresh_token": refresh_token})
            out.append((name, lucid_id))
        return out


def create_oneshot_secrets(kube_url: str, lucid_url: str, n: int) -> list[tuple[str, str]]:
    """(Secret name, Lucid grant id) for each one-shot sample grant."""
    return asyncio.run(_create_oneshot(kube_url, lucid_url, n))
