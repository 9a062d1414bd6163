"""Lists again, at an interval, what the watches feed the cache, so that an event lost in a
watch gap heals within a bound.

A real API server keeps minutes of watch history; a watch resumed from before it answers 410 and
kopf lists again. That list reports the objects that exist, never a DELETED for those removed in
the gap: a consumer Secret deleted then stayed deleted until the next refresh wrote it, and a
deleted grant lingered. Each round lists the grants and Secrets of every namespace the cache
holds grants in (in chunks, kube.LIST_CHUNK), feeds what changed to the runtime as events, and
reports what the cache holds but the list does not as DELETED."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from lucidgrant.cache import Cache, Key, key_of
from lucidgrant.kube import Kube, KubeError, error_text
from lucidgrant.names import SECRET_SELECTOR, grants_path, secret_path

log = logging.getLogger(__name__)

OnEvent = Callable[[str, dict[str, Any]], None]
# What to list and how to compare: (what, path, query, changed, gone, on_event).
Relist = tuple[
    str,
    str,
    dict[str, str] | None,
    Callable[[dict[str, Any]], bool],
    Callable[[str, set[Key], int], list[dict[str, Any]]],
    OnEvent,
]


def _list_rv(page: Mapping[str, Any]) -> int:
    try:
        return int((page.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class Resync:
    def __init__(
        self,
        kube: Kube,
        cache: Cache,
        on_grant: OnEvent,
        on_secret: OnEvent,
        selector: Mapping[str, str],
    ) -> None:
        self.kube = kube
        self.cache = cache
        self.on_grant = on_grant
        self.on_secret = on_secret
        self.selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.once()

    async def once(self) -> None:
        grants_query = {"labelSelector": self.selector} if self.selector else None
        secrets_query = {"labelSelector": SECRET_SELECTOR}  # what the Secret watch selects
        cache = self.cache
        for namespace in sorted({ns for ns, _ in cache.grants}):
            relists: tuple[Relist, ...] = (
                ("grant", grants_path(namespace), grants_query, cache.grant_changed,
                 cache.grants_gone, self.on_grant),
                ("Secret", secret_path(namespace), secrets_query, cache.secret_changed,
                 cache.secrets_gone, self.on_secret),
            )  # fmt: skip
            try:
                for relist in relists:
                    await self._relist(namespace, *relist)
            except (KubeError, OSError) as exc:
                log.warning(
                    "re-listing namespace %s failed: %s; again in the next round",
                    namespace,
                    error_text(exc),
                )

    async def _relist(
        self,
        namespace: str,
        what: str,
        path: str,
        query: dict[str, str] | None,
        changed: Callable[[dict[str, Any]], bool],
        gone: Callable[[str, set[Key], int], list[dict[str, Any]]],
        on_event: OnEvent,
    ) -> None:
        """One list in pages: what changed goes to `on_event` as MODIFIED, what the cache holds
        and the list lacks as DELETED."""
        listed: set[Key] = set()
        list_rv = None
        async for page in self.kube.pages(path, query):
            list_rv = list_rv or _list_rv(page)
            for item in page.get("items") or []:
                listed.add(key_of(item))
                if changed(item):
                    on_event("MODIFIED", item)
        for obj in gone(namespace, listed, list_rv or 0):
            log.info("%s %s/%s is gone (its deletion was not seen)", what, *key_of(obj))
            on_event("DELETED", obj)
