"""What the operator knows between events: each grant's latest object and bookkeeping, and the
Secrets that matter (the state, client, bootstrap and consumer Secrets that some grant of this
replica references). Fed by the watches, and by the answers of the operator's own writes, so
that a routine refresh reads nothing from the API server.

The Secret watch selects Secrets labelled for lucidgrant (names.SECRET_SELECTOR). A Secret
outside that selection is never kept: no event would say when it changes or goes, so it is read
afresh each time it matters."""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from lucidgrant.grant import GrantSpec, SpecError, parse_spec
from lucidgrant.kube import KubeClient
from lucidgrant.names import LABEL_ROLE, WATCHED_ROLES, secret_path, state_secret_name

Key = tuple[str, str]  # (namespace, name)


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace", "")), str(meta.get("name", "")))


def _rv(obj: Mapping[str, Any] | None) -> int:
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion", 0))
    except (TypeError, ValueError):
        return 0


_META_KEPT = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "deletionTimestamp",
)


def slim(obj: Mapping[str, Any], keep: tuple[str, ...]) -> dict[str, Any]:
    """The parts of an object the operator reads, without managedFields and the like: at
    10,000 grants and three Secrets each, what the cache holds is most of the memory."""
    meta = obj.get("metadata") or {}
    result = {k: obj[k] for k in keep if k in obj}
    result["metadata"] = {k: meta[k] for k in _META_KEPT if k in meta}
    return result


def newer(candidate: Mapping[str, Any], current: Mapping[str, Any] | None) -> bool:
    """Whether `candidate` is at least as new as `current`. resourceVersions are opaque to
    clients in principle, but integers in every API server in practice; a non-integer one is
    taken as newer so that the cache never gets stuck."""
    return current is None or _rv(candidate) >= _rv(current) or _rv(candidate) == 0


@dataclass(frozen=True, slots=True)
class Facts:
    """What the operator learned about a grant that is stored nowhere else: consecutive failed
    refreshes, when to retry, the last error (for status), and the client Secret version Lucid
    rejected (so that the same credentials are not tried again, and a change is tried at once).
    Lost on restart on purpose: a restart retries at once."""

    failures: int = 0
    retry_at: float | None = None
    last_error: str | None = None
    client_rejected_rv: str | None = None

    def after_success(self) -> Facts:
        return replace(self, failures=0, retry_at=None, last_error=None)


@dataclass(slots=True)
class GrantRecord:
    """A grant as the cache holds it: the latest object (the watch and our writes replace
    `body`) and the facts, replaced as a whole at the end of each reconcile."""

    body: dict[str, Any]
    facts: Facts = field(default_factory=Facts)
    jitter: float = 0.0
    spec_cache: tuple[int, GrantSpec | SpecError] | None = None

    @property
    def uid(self) -> str:
        return str(self.body["metadata"].get("uid", ""))

    @property
    def generation(self) -> int:
        return int(self.body["metadata"].get("generation") or 0)

    def spec(self) -> GrantSpec | SpecError:
        """The parsed spec, parsed once per generation."""
        if self.spec_cache is None or self.spec_cache[0] != self.generation:
            try:
                parsed: GrantSpec | SpecError = parse_spec(self.body.get("spec"))
            except SpecError as exc:
                parsed = exc
            self.spec_cache = (self.generation, parsed)
        return self.spec_cache[1]


def referenced_secrets(name: str, spec: GrantSpec | SpecError) -> set[str]:
    names = {state_secret_name(name)}
    if isinstance(spec, GrantSpec):
        names.add(spec.client_secret_name)
        names.add(spec.consumer.name)
        if spec.bootstrap_ref:
            names.add(spec.bootstrap_ref.name)
    return names


def watched(secret: Mapping[str, Any]) -> bool:
    """Whether the Secret watch's label selector (names.SECRET_SELECTOR) selects it."""
    return ((secret.get("metadata") or {}).get("labels") or {}).get(LABEL_ROLE) in WATCHED_ROLES


@dataclass
class Cache:
    grants: dict[Key, GrantRecord] = field(default_factory=dict)
    # Secret by key; None means "known to be absent".
    secrets: dict[Key, dict[str, Any] | None] = field(default_factory=dict)
    # Secret key -> grants that reference it, to know whom a Secret event concerns.
    _refs: dict[Key, set[Key]] = field(default_factory=lambda: defaultdict(set))
    _refs_of: dict[Key, set[Key]] = field(default_factory=dict)

    def observe_grant(self, body: Mapping[str, Any]) -> GrantRecord:
        body = slim(body, ("apiVersion", "kind", "spec", "status"))
        key = key_of(body)
        record = self.grants.get(key)
        if record is None:
            uid = str(body["metadata"].get("uid", ""))
            record = GrantRecord(body=body, jitter=(zlib.crc32(uid.encode()) % 10_000) / 10_000)
            self.grants[key] = record
        elif newer(body, record.body):
            record.body = body
        self._index(key, referenced_secrets(key[1], record.spec()))
        return record

    def forget_grant(self, key: Key) -> None:
        self.grants.pop(key, None)
        self._index(key, set())
        self.secrets.pop((key[0], state_secret_name(key[1])), None)

    def _index(self, grant: Key, names: set[str]) -> None:
        wanted = {(grant[0], n) for n in names}
        old = self._refs_of.get(grant, set())
        for secret in old - wanted:
            self._refs[secret].discard(grant)
            if not self._refs[secret]:
                del self._refs[secret]
                self.secrets.pop(secret, None)
        for secret in wanted - old:
            self._refs[secret].add(grant)
        if wanted:
            self._refs_of[grant] = wanted
        else:
            self._refs_of.pop(grant, None)

    def is_relevant(self, secret: Mapping[str, Any]) -> bool:
        """Secrets some grant of ours references (its state Secret included)."""
        return key_of(secret) in self._refs

    def grants_of_secret(self, secret: Mapping[str, Any]) -> Iterable[Key]:
        return set(self._refs.get(key_of(secret), ()))

    def observe_secret(self, secret: Mapping[str, Any], deleted: bool = False) -> bool:
        """Remember a Secret from a watch event, a read or a write's answer; True if it
        concerns us."""
        if not self.is_relevant(secret):
            return False
        key = key_of(secret)
        if deleted or not watched(secret):
            # Gone, or it left the selection (a selecting watch says DELETED for both), or it
            # was never in it: the next read asks the API server.
            self.secrets.pop(key, None)
        elif newer(secret, self.secrets.get(key)):
            self.secrets[key] = slim(secret, ("data", "type"))
        return True

    # -- what a fresh list says that a watch may have missed (resync.py) -------------------

    def secret_changed(self, listed: Mapping[str, Any]) -> bool:
        """A listed Secret the cache holds as absent, or holds older."""
        known, cached = self.secret(key_of(listed))
        return known and (cached is None or _rv(listed) > _rv(cached))

    def grant_changed(self, listed: Mapping[str, Any]) -> bool:
        """A listed grant the cache lacks, or holds older."""
        record = self.grants.get(key_of(listed))
        return record is None or _rv(listed) > _rv(record.body)

    def secrets_gone(self, namespace: str, listed: set[Key], list_rv: int) -> list[dict[str, Any]]:
        """Secrets of this namespace the cache holds that a list at `list_rv` did not: deleted
        unseen. One written after the list began (a newer resourceVersion) is not."""
        return [
            secret
            for key, secret in self.secrets.items()
            if key[0] == namespace
            and secret is not None
            and key not in listed
            and _rv(secret) <= list_rv
        ]

    def grants_gone(self, namespace: str, listed: set[Key], list_rv: int) -> list[dict[str, Any]]:
        """The same for grants."""
        return [
            record.body
            for key, record in self.grants.items()
            if key[0] == namespace and key not in listed and _rv(record.body) <= list_rv
        ]

    def secret(self, key: Key) -> tuple[bool, dict[str, Any] | None]:
        """(known, secret): known is False when the cache has never seen it."""
        if key in self.secrets:
            return True, self.secrets[key]
        return False, None


class SecretReader:
    """Secrets through the cache: the API server is asked only the first time one matters,
    after that the watch (and the answers of our own writes) keep the cache current."""

    def __init__(self, cache: Cache, kube: KubeClient) -> None:
        self.cache = cache
        self.kube = kube

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        key = (namespace, name)
        known, secret = self.cache.secret(key)
        if known:
            return secret
        # Its metadata first: a Secret not labelled for lucidgrant (a grant may name a password
        # it must not see) answers with its metadata alone: its `data` never reaches us.
        head = await self.kube.get_metadata(secret_path(namespace, name))
        if head is None:
            self.cache.secrets[key] = None
            return None
        if not watched(head):
            return slim(head, ())
        fetched = await self.kube.get(secret_path(namespace, name))
        if fetched is None:
            self.cache.secrets[key] = None
            return None
        self.cache.observe_secret(fetched)
        # The watch may have brought a newer version while we read, or the label gone.
        known, secret = self.cache.secret(key)
        return secret if known and secret is not None else slim(fetched, ("type",))
