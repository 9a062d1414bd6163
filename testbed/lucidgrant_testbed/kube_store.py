"""The object store behind the emulated API: writes, resource versions, watch fan-out, GC.

Stored objects are never mutated after they are committed: every write builds a fresh dict.
That lets watch history, list answers and other threads share them without copying.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import itertools
import json
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from lucidgrant_testbed import kube_schema
from lucidgrant_testbed.kube_errors import (
    ApiError,
    Cause,
    already_exists,
    bad_request,
    conflict,
    invalid,
    not_found,
)
from lucidgrant_testbed.kube_meta import data_key_problems, metadata_problems
from lucidgrant_testbed.kube_patch import PatchError, json_patch, merge_patch
from lucidgrant_testbed.kube_select import Matcher
from lucidgrant_testbed.kube_types import (
    JSON,
    ResourceType,
    builtin_types,
    crd_problems,
    crd_status,
    from_crd,
)

Key = tuple[str, str]  # (group, plural)
Ref = tuple[Key, str, str]  # (type key, namespace or "" when cluster-scoped, name)
Signal = Literal["close", "drop", "initial-end"]
# Validating admission beyond the object's own rules: raises ApiError (403) to refuse a write.
Check = Callable[[JSON, JSON | None], None]
# A watcher's queue: events as it sees them, signals, or an error to send in-stream and end on.
QueueItem = tuple[str, "WatchEvent"] | Signal | ApiError

CRD_KEY: Key = ("apiextensions.k8s.io", "customresourcedefinitions")
NAMESPACES_KEY: Key = ("", "namespaces")
SECRETS_KEY: Key = ("", "secrets")

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"

# Metadata only the server writes; a client's values are ignored.
_SERVER_META = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "resourceVersion",
)
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the server's generateName suffix alphabet


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def render(obj: JSON, api_version: str) -> JSON:
    """The object as seen through one served version (no conversion: same fields)."""
    return obj if obj.get("apiVersion") == api_version else {**obj, "apiVersion": api_version}


class Gone(Exception):
    """A watch asked to resume from a resourceVersion older than the history holds."""


@dataclass(eq=False)
class WatchEvent:
    type: str  # ADDED, MODIFIED or DELETED as committed; watchers may see it differently
    obj: JSON
    old: JSON | None
    rv: int
    at: float = field(default_factory=time.monotonic)
    _encoded: dict[str, bytes] = field(default_factory=dict)
    _left: WatchEvent | None = None

    @property
    def namespace(self) -> str:
        ns: str = self.obj["metadata"].get("namespace", "")
        return ns

    def left(self) -> WatchEvent:
        """What a selecting watcher gets when the object leaves its selection: DELETED with the
        object as it was before, at this event's resourceVersion, as the API server's watch
        cache sends it (apiserver/pkg/storage/cacher/cache_watcher.go, convertToWatchEvent)."""
        if self._left is None:
            assert self.old is not None
            meta = {**self.old["metadata"], "resourceVersion": str(self.rv)}
            self._left = WatchEvent(
                "DELETED", {**self.old, "metadata": meta}, None, self.rv, self.at
            )
        return self._left

    def line(self, kind: str, api_version: str) -> bytes:
        """The event as one line of a watch stream; the object is encoded once per version."""
        body = self._encoded.get(api_version)
        if body is None:
            body = self._encoded[api_version] = dumps(render(self.obj, api_version))
        return b'{"type":"' + kind.encode() + b'","object":' + body + b"}\n"


@dataclass(eq=False)
class Watcher:
    key: Key
    namespace: str | None
    matcher: Matcher | None
    queue: asyncio.Queue[QueueItem] = field(default_factory=asyncio.Queue)

    def offer(self, event: WatchEvent) -> None:
        """Queue the event as this watcher sees it: selectors turn edits into ADDED/DELETED."""
        if self.namespace is not None and event.namespace != self.namespace:
            return
        if self.matcher is None:
            self.queue.put_nowait((event.type, event))
            return
        if event.type == "DELETED":
            if self.matcher(event.obj):
                self.queue.put_nowait(("DELETED", event))
            return
        now = self.matcher(event.obj)
        before = event.old is not None and self.matcher(event.old)
        if now:
            self.queue.put_nowait(("MODIFIED" if before else "ADDED", event))
        elif before:
            self.queue.put_nowait(("DELETED", event.left()))


@dataclass
class History:
    """How much watch history a resource keeps, like the API server's watch cache
    (storage/cacher/watch_cache.go): at least `least` events, events younger than `seconds`,
    never more than `most`. A resume from an older resourceVersion answers 410 Gone."""

    least: int = 100
    seconds: float = 75.0
    most: int = 100 * 1024


@dataclass
class FieldValidation:
    """A write's `fieldValidation` directive for unknown fields of a custom resource, as
    apiserver/pkg/endpoints/handlers/create.go, update.go and patch.go apply it: Strict refuses
    them (400 for create and update, 422 on `patch` for a patch), Warn (the default when the
    parameter is absent, handlers/rest.go) accepts and collects a warning each, Ignore prunes
    them silently."""

    directive: str = "Warn"
    patch: bool = False
    warnings: list[str] = field(default_factory=list)

    def unknown(self, rt: ResourceType, version: str, paths: list[str], given: JSON) -> None:
        if not paths or self.directive == "Ignore":
            return
        errors = [f'unknown field "{p}"' for p in paths]
        if self.directive == "Warn":
            self.warnings += errors
            return
        text = "strict decoding error: " + ", ".join(errors)
        if self.patch:
            value = json.dumps(json.dumps(given, separators=(",", ":")))
            raise invalid("", "", "", [Cause("patch", f"Invalid value: {value}: {text}")])
        raise bad_request(
            f'{rt.kind} in version "{version}" cannot be handled as a {rt.kind}: {text}'
        )


class Store:
    def __init__(self, history: History | None = None) -> None:
        self.history = history or History()
        self.rv = 0
        self.types: dict[Key, ResourceType] = {}
        self._objects: dict[Key, dict[str, dict[str, JSON]]] = {}
        self._history: dict[Key, deque[WatchEvent]] = {}
        self._compacted: dict[Key, int] = {}  # the newest rv that fell out of the history
        self.etcd_compacted = 0  # resourceVersions up to this are compacted away in etcd
        self._watchers: dict[Key, set[Watcher]] = {}
        self._uids: dict[str, Ref] = {}
        self._dependents: dict[str, set[Ref]] = {}  # owner uid -> objects naming it as owner
        # Held while the structure changes so that other threads can read a consistent view.
        self.lock = threading.RLock()
        for rt in builtin_types():
            self.register(rt)

    # --- types ---------------------------------------------------------------------------

    def register(self, rt: ResourceType) -> None:
        self.types[rt.key] = rt
        self._objects.setdefault(rt.key, {})
        self._history.setdefault(rt.key, deque())
        self._compacted.setdefault(rt.key, 0)
        self._watchers.setdefault(rt.key, set())

    def resolve(self, group: str, version: str, plural: str) -> ResourceType | None:
        rt = self.types.get((group, plural))
        return rt if rt is not None and version in rt.versions else None

    # --- reads ---------------------------------------------------------------------------

    def find(self, rt: ResourceType, namespace: str, name: str) -> JSON | None:
        return self._objects[rt.key].get(namespace, {}).get(name)

    def get(self, rt: ResourceType, namespace: str, name: str) -> JSON:
        obj = self.find(rt, namespace, name)
        if obj is None:
            raise not_found(rt.plural, rt.group, name)
        return obj

    def items(self, rt: ResourceType, namespace: str | None) -> Iterator[JSON]:
        """Objects in key order (namespace, name), as etcd lists them."""
        buckets = self._objects.get(rt.key, {})
        namespaces = sorted(buckets) if namespace is None else [namespace]
        for ns in namespaces:
            bucket = buckets.get(ns, {})
            for name in sorted(bucket):
                yield bucket[name]

    # --- writes --------------------------------------------------------------------------

    def create(
        self,
        rt: ResourceType,
        namespace: str,
        body: Any,
        version: str,
        check: Check | None = None,
        fields: FieldValidation | None = None,
    ) -> JSON:
        obj = self._incoming(rt, body, version)
        meta = obj["metadata"]
        self._check_namespace(rt, namespace, meta)
        name = meta.get("name") or ""
        if not name:
            prefix = meta.get("generateName")
            if not prefix:
                cause = Cause(
                    "metadata.name",
                    "Required value: name or generateName is required",
                    "FieldValueRequired",
                )
                raise invalid(rt.kind, rt.group, "", [cause])
            name = self._generate_name(rt, namespace, str(prefix))
            meta["name"] = name
        if self.find(rt, namespace, name) is not None:
            raise already_exists(rt.plural, rt.group, name)
        for key in _SERVER_META:
            meta.pop(key, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if rt.generation:
            meta["generation"] = 1
        if rt.status_subresource and rt.key != NAMESPACES_KEY:
            obj.pop("status", None)  # the server drops status on create when it is a subresource
        self._admit(rt, obj, None, version, check, fields)
        return self._commit(rt, namespace, name, obj, "ADDED", None)

    def update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: Any,
        version: str,
        subresource: str,
        check: Check | None = None,
        fields: FieldValidation | None = None,
    ) -> JSON:
        old = self.get(rt, namespace, name)
        obj = self._incoming(rt, body, version)
        given = obj["metadata"].get("name")
        if given and given != name:
            raise bad_request(
                f"the name of the object ({given}) does not match the name on the URL ({name})"
            )
        self._check_version(rt, obj, old)
        return self._replace(rt, namespace, name, old, obj, version, subresource, check, fields)

    def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        content_type: str,
        body: Any,
        version: str,
        subresource: str,
        check: Check | None = None,
        fields: FieldValidation | None = None,
    ) -> JSON:
        old = self.get(rt, namespace, name)
        base = copy.deepcopy(render(old, rt.api_version(version)))
        if content_type == MERGE or (content_type == STRATEGIC and not rt.custom):
            if not isinstance(body, dict):
                raise bad_request("a merge patch must be a JSON object")
            patched = merge_patch(base, body)
        elif content_type == JSON_PATCH:
            try:
                patched = json_patch(base, body)
            except PatchError as e:
                raise ApiError(422, "Invalid", str(e), name, rt.group, rt.plural) from e
        else:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types "
                f"include: {JSON_PATCH}, {MERGE}" + ("" if rt.custom else f", {STRATEGIC}"),
            )
        if not isinstance(patched, dict) or not isinstance(patched.get("metadata"), dict):
            raise ApiError(422, "Invalid", "the patch produced an object without metadata")
        self._check_version(rt, patched, old)
        return self._replace(rt, namespace, name, old, patched, version, subresource, check, fields)

    def delete(
        self, rt: ResourceType, namespace: str, name: str, options: JSON
    ) -> tuple[JSON, bool]:
        """Delete (or start deleting, with finalizers); returns the object and if it is gone."""
        old = self.get(rt, namespace, name)
        preconditions = options.get("preconditions") or {}
        for field_name in ("uid", "resourceVersion"):
            wanted = preconditions.get(field_name)
            actual = old["metadata"].get(field_name)
            if wanted is not None and wanted != actual:
                raise conflict(
                    rt.plural,
                    rt.group,
                    name,
                    f"Precondition failed: {field_name} in precondition: {wanted}, "
                    f"{field_name} in object meta: {actual}",
                )
        policy = _propagation(options)
        finalizers = list(old["metadata"].get("finalizers") or [])
        # The registry adds the garbage collector's finalizer for Foreground and Orphan and drops
        # it for Background (apiserver/pkg/registry/generic/registry/store.go,
        # deletionFinalizersForGarbageCollection).
        if policy is not None and rt.key != NAMESPACES_KEY:
            finalizers = [f for f in finalizers if f not in _GC_FINALIZERS.values()]
            if policy in _GC_FINALIZERS:
                finalizers.append(_GC_FINALIZERS[policy])
        terminating = rt.key == NAMESPACES_KEY
        if finalizers or terminating:
            if old["metadata"].get("deletionTimestamp"):
                return old, False
            obj = copy.deepcopy(old)
            obj["metadata"]["deletionTimestamp"] = now_rfc3339()
            obj["metadata"]["deletionGracePeriodSeconds"] = 0
            if finalizers:
                obj["metadata"]["finalizers"] = finalizers
            loop = asyncio.get_running_loop()
            if terminating:
                obj["status"] = {"phase": "Terminating"}
                loop.call_soon(self._drain_namespace, name)
            obj = self._commit(rt, namespace, name, obj, "MODIFIED", old)
            loop.call_soon(self._process_deleting, obj["metadata"]["uid"])
            return obj, False
        return self._remove(rt, namespace, name, copy.deepcopy(old), old), True

    # --- the write pipeline --------------------------------------------------------------

    def _incoming(self, rt: ResourceType, body: Any, version: str) -> JSON:
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        api_version = rt.api_version(version)
        for key, expected in (("kind", rt.kind), ("apiVersion", api_version)):
            if body.get(key) not in (None, "", expected):
                raise bad_request(
                    f"the API version in the data ({body.get('apiVersion')}) and kind "
                    f"({body.get('kind')}) do not match {api_version} {rt.kind}"
                )
        obj = copy.deepcopy(body)
        obj["apiVersion"], obj["kind"] = api_version, rt.kind
        if not isinstance(obj.get("metadata"), dict):
            obj["metadata"] = {}
        return obj

    def _check_namespace(self, rt: ResourceType, namespace: str, meta: JSON) -> None:
        if not rt.namespaced:
            meta.pop("namespace", None)
            return
        given = meta.get("namespace")
        if given and given != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        meta["namespace"] = namespace
        ns = self._objects[NAMESPACES_KEY].get("", {}).get(namespace)
        if ns is None:
            raise not_found("namespaces", "", namespace)
        if ns["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403,
                "Forbidden",
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated",
                namespace,
                "",
                "namespaces",
            )

    def _generate_name(self, rt: ResourceType, namespace: str, prefix: str) -> str:
        while True:
            name = prefix + "".join(secrets.choice(_NAME_ALPHABET) for _ in range(5))
            if self.find(rt, namespace, name) is None:
                return name

    def _check_version(self, rt: ResourceType, obj: JSON, old: JSON) -> None:
        """Optimistic concurrency: a stale resourceVersion in the write answers 409."""
        given = (obj.get("metadata") or {}).get("resourceVersion")
        if given and given != old["metadata"]["resourceVersion"]:
            raise conflict(rt.plural, rt.group, old["metadata"]["name"])

    def _replace(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        old: JSON,
        obj: JSON,
        version: str,
        subresource: str,
        check: Check | None = None,
        fields: FieldValidation | None = None,
    ) -> JSON:
        if subresource == "status":
            # Only status may change through the subresource; the rest is the stored object.
            status = obj.get("status")
            obj = copy.deepcopy(old)
            obj["apiVersion"] = rt.api_version(version)
            if status is None:
                obj.pop("status", None)
            else:
                obj["status"] = status
        else:
            if rt.status_subresource:
                if "status" in old:
                    obj["status"] = copy.deepcopy(old["status"])
                else:
                    obj.pop("status", None)
            meta, old_meta = obj["metadata"], old["metadata"]
            for key in (*_SERVER_META, "name", "namespace"):
                if key in old_meta:
                    meta[key] = old_meta[key]
                else:
                    meta.pop(key, None)
        self._admit(rt, obj, old, version, check, fields)
        meta = obj["metadata"]
        if rt.generation and _spec_part(obj, rt) != _spec_part(old, rt):
            meta["generation"] = old["metadata"].get("generation", 0) + 1
        if obj == render(old, obj["apiVersion"]):
            return old  # a no-op write: no new resourceVersion, no watch event
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            if rt.key == NAMESPACES_KEY and self._has_contents(name):
                return self._commit(rt, namespace, name, obj, "MODIFIED", old)
            return self._remove(rt, namespace, name, obj, old)
        return self._commit(rt, namespace, name, obj, "MODIFIED", old)

    def _admit(
        self,
        rt: ResourceType,
        obj: JSON,
        old: JSON | None,
        version: str,
        check: Check | None = None,
        fields: FieldValidation | None = None,
    ) -> None:
        """Type rules, schema defaults / pruning / validation (422 on any violation), then the
        validating admission `check`."""
        meta = obj["metadata"]
        name = meta.get("name", "")
        causes = metadata_problems(
            meta,
            name_rule="label" if rt.key == NAMESPACES_KEY else "subdomain",
            check_name=old is None,
        )
        if old is not None and old["metadata"].get("deletionTimestamp"):
            added = set(meta.get("finalizers") or ()) - set(old["metadata"].get("finalizers") or ())
            if added:
                causes.append(
                    Cause(
                        "metadata.finalizers",
                        f"Forbidden: no new finalizers can be added if the object is being "
                        f"deleted, found new finalizers {sorted(added)!r}",
                        "FieldValueForbidden",
                    )
                )
        if rt.key == SECRETS_KEY:
            causes += _admit_secret(obj, old)
        elif rt.key == NAMESPACES_KEY:
            obj["status"] = {"phase": "Terminating" if meta.get("deletionTimestamp") else "Active"}
        elif rt.key == CRD_KEY:
            causes += crd_problems(obj)
            if not causes:
                obj["status"] = crd_status(obj)
        elif rt.custom:
            # A Strict patch quotes the object as patched, before pruning.
            strict_patch = fields is not None and fields.patch and fields.directive == "Strict"
            given = copy.deepcopy(obj) if strict_patch else obj
            unknown, problems = kube_schema.admit(obj, rt.schemas[version])
            if fields is not None:
                fields.unknown(rt, version, unknown, given)
            causes += problems
        if causes:
            raise invalid(rt.kind, rt.group, name, causes)
        if check is not None:
            check(obj, old)

    def _commit(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        obj: JSON,
        kind: str,
        old: JSON | None,
    ) -> JSON:
        with self.lock:
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            buckets = self._objects[rt.key]
            uid = obj["metadata"]["uid"]
            if kind == "DELETED":
                bucket = buckets.get(namespace, {})
                bucket.pop(name, None)
                if not bucket:
                    buckets.pop(namespace, None)
                self._uids.pop(uid, None)
            else:
                buckets.setdefault(namespace, {})[name] = obj
                self._uids[uid] = (rt.key, namespace, name)
            ref: Ref = (rt.key, namespace, name)
            for owner in _owner_uids(old):
                self._dependents.get(owner, set()).discard(ref)
            if kind != "DELETED":
                for owner in _owner_uids(obj):
                    self._dependents.setdefault(owner, set()).add(ref)
        event = WatchEvent(kind, obj, old, self.rv)
        history = self._history[rt.key]
        history.append(event)
        self._trim(rt.key, history, event.at)
        for watcher in self._watchers[rt.key]:
            watcher.offer(event)
        if rt.key == CRD_KEY and kind != "DELETED":
            self.register(from_crd(obj))
        return obj

    def _remove(self, rt: ResourceType, namespace: str, name: str, obj: JSON, old: JSON) -> JSON:
        """The final removal: the object is gone, its dependents are collected in background,
        and an owner waiting in foreground deletion for it looks again."""
        obj = self._commit(rt, namespace, name, obj, "DELETED", old)
        loop = asyncio.get_running_loop()
        loop.call_soon(self._collect_garbage, obj["metadata"]["uid"])
        for owner in _owner_uids(obj):
            loop.call_soon(self._process_deleting, owner)
        if rt.key == CRD_KEY:
            self._drop_type(from_crd(obj).key)
        if rt.namespaced:
            loop.call_soon(self._finish_namespace, namespace)
        return obj

    def _trim(self, key: Key, history: deque[WatchEvent], now: float) -> None:
        limits = self.history
        while len(history) > limits.most or (
            len(history) > limits.least and now - history[0].at > limits.seconds
        ):
            self._compacted[key] = history.popleft().rv

    def compact(self) -> None:
        """Forget every resource's watch history, as an API server restart does: each resume
        from a resourceVersion before now answers 410 Gone and the client lists again."""
        for key, history in self._history.items():
            history.clear()
            self._compacted[key] = self.rv

    def compact_etcd(self) -> None:
        self.etcd_compacted = self.rv

    # --- background work: garbage collection, namespace and CRD cleanup ------------------

    def _collect_garbage(self, owner_uid: str) -> None:
        for key, namespace, name in sorted(self._dependents.pop(owner_uid, set())):
            rt = self.types.get(key)
            obj = self._objects.get(key, {}).get(namespace, {}).get(name)
            if rt is None or obj is None:
                continue
            owners = _owner_uids(obj)
            # Like the real collector: a dependent with another living owner stays.
            if owner_uid in owners and not any(uid in self._uids for uid in owners):
                self.delete(rt, namespace, name, {})

    def _process_deleting(self, owner_uid: str) -> None:
        """The garbage collector's work on an owner deleted with the `orphan` or
        `foregroundDeletion` finalizer (pkg/controller/garbagecollector/garbagecollector.go):
        orphan: drop the owner from its dependents' ownerReferences, then the finalizer.
        foreground: delete the dependents; drop the finalizer once no dependent that blocks
        owner deletion (`blockOwnerDeletion: true`) is left."""
        where = self._uids.get(owner_uid)
        rt = None if where is None else self.types.get(where[0])
        if where is None or rt is None:
            return
        owner = self.find(rt, where[1], where[2])
        meta = (owner or {}).get("metadata") or {}
        finalizers = list(meta.get("finalizers") or [])
        gc_finalizer = next((f for f in finalizers if f in _GC_FINALIZERS.values()), None)
        if owner is None or not meta.get("deletionTimestamp") or gc_finalizer is None:
            return
        blocking = False
        for key, namespace, name in sorted(self._dependents.get(owner_uid, set())):
            dep_rt = self.types.get(key)
            dep = self.find(dep_rt, namespace, name) if dep_rt is not None else None
            if dep_rt is None or dep is None:
                continue
            others = [uid for uid in _owner_uids(dep) if uid != owner_uid and uid in self._uids]
            if gc_finalizer == _GC_FINALIZERS["Orphan"] or others:
                self._drop_owner(dep_rt, namespace, name, dep, owner_uid)
                continue
            dep, _ = self.delete(dep_rt, namespace, name, {})
            if self.find(dep_rt, namespace, name) is not None and _blocks(dep, owner_uid):
                blocking = True
        if not blocking:
            updated = copy.deepcopy(owner)
            updated["metadata"]["finalizers"] = [f for f in finalizers if f != gc_finalizer]
            version = owner["apiVersion"].rpartition("/")[2]
            self._replace(rt, where[1], where[2], owner, updated, version, "")

    def _drop_owner(
        self, rt: ResourceType, namespace: str, name: str, obj: JSON, owner_uid: str
    ) -> None:
        updated = copy.deepcopy(obj)
        refs = [
            r for r in obj["metadata"].get("ownerReferences") or [] if r.get("uid") != owner_uid
        ]
        if refs:
            updated["metadata"]["ownerReferences"] = refs
        else:
            updated["metadata"].pop("ownerReferences", None)
        version = obj["apiVersion"].rpartition("/")[2]
        self._replace(rt, namespace, name, obj, updated, version, "")

    def _has_contents(self, namespace: str) -> bool:
        return any(namespace in buckets for buckets in self._objects.values())

    def _drain_namespace(self, namespace: str) -> None:
        for key in list(self._objects):
            rt = self.types[key]
            if rt.namespaced:
                for name in list(self._objects[key].get(namespace, {})):
                    self.delete(rt, namespace, name, {})
        self._finish_namespace(namespace)

    def _finish_namespace(self, namespace: str) -> None:
        """Remove a terminating namespace once nothing is left in it."""
        rt = self.types[NAMESPACES_KEY]
        ns = self.find(rt, "", namespace)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        if ns["metadata"].get("finalizers") or self._has_contents(namespace):
            return
        self._remove(rt, "", namespace, copy.deepcopy(ns), ns)

    def _drop_type(self, key: Key) -> None:
        """A CRD is gone: so are its objects, its watch streams and its endpoints."""
        rt = self.types.get(key)
        if rt is None:
            return
        for namespace, bucket in list(self._objects[key].items()):
            for name, obj in list(bucket.items()):
                self._commit(rt, namespace, name, copy.deepcopy(obj), "DELETED", obj)
        for watcher in self._watchers.pop(key, set()):
            watcher.queue.put_nowait("close")
        with self.lock:
            del self.types[key]
            del self._objects[key]
        del self._history[key], self._compacted[key]

    # --- watches -------------------------------------------------------------------------

    def watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        matcher: Matcher | None,
        since: str | None,
        *,
        initial_end: bool,
    ) -> Watcher:
        """Register a watcher and queue what it must see first (current objects or history)."""
        watcher = Watcher(rt.key, namespace, matcher)
        if not since or since == "0":
            for obj in self.items(rt, namespace):
                if matcher is None or matcher(obj):
                    rv = int(obj["metadata"]["resourceVersion"])
                    watcher.queue.put_nowait(("ADDED", WatchEvent("ADDED", obj, None, rv)))
            if initial_end:
                watcher.queue.put_nowait("initial-end")
        else:
            try:
                start = int(since)
            except ValueError:
                raise bad_request(f"invalid resource version {since!r}") from None
            if start < self._compacted[rt.key]:
                raise Gone(f"too old resource version: {start} ({self._compacted[rt.key] + 1})")
            replay = itertools.takewhile(lambda ev: ev.rv > start, reversed(self._history[rt.key]))
            for event in reversed(list(replay)):
                watcher.offer(event)
        self._watchers[rt.key].add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.get(watcher.key, set()).discard(watcher)

    def signal_watchers(self, signal: Signal | ApiError) -> int:
        count = 0
        for watchers in self._watchers.values():
            for watcher in watchers:
                watcher.queue.put_nowait(signal)
                count += 1
        return count


def _spec_part(obj: JSON, rt: ResourceType) -> JSON:
    """What metadata.generation tracks: everything but metadata (and status if separate)."""
    skip = {"metadata", "apiVersion", "kind"}
    if rt.status_subresource:
        skip.add("status")
    return {k: v for k, v in obj.items() if k not in skip}


_GC_FINALIZERS = {"Foreground": "foregroundDeletion", "Orphan": "orphan"}


def _propagation(options: JSON) -> str | None:
    """The deletion's propagationPolicy (or the deprecated orphanDependents); 422 if unknown
    (apimachinery/pkg/apis/meta/v1/validation/validation.go, ValidateDeleteOptions)."""
    policy = options.get("propagationPolicy")
    if policy is None and options.get("orphanDependents") is not None:
        policy = "Orphan" if options["orphanDependents"] else "Background"
    if policy not in (None, "Foreground", "Background", "Orphan"):
        cause = Cause(
            "propagationPolicy",
            f'Unsupported value: "{policy}": supported values: "Foreground", "Background", '
            '"Orphan", "nil"',
            "FieldValueNotSupported",
        )
        raise invalid("DeleteOptions", "meta.k8s.io", "", [cause])
    return None if policy is None else str(policy)


def _blocks(dependent: JSON, owner_uid: str) -> bool:
    refs = dependent["metadata"].get("ownerReferences") or []
    return any(r.get("uid") == owner_uid and r.get("blockOwnerDeletion") is True for r in refs)


def _owner_uids(obj: JSON | None) -> list[str]:
    if obj is None:
        return []
    refs = obj["metadata"].get("ownerReferences") or []
    return [ref["uid"] for ref in refs if isinstance(ref, dict) and "uid" in ref]


def _admit_secret(obj: JSON, old: JSON | None) -> list[Cause]:
    """stringData folds into base64 data and is never stored; data must be valid base64."""
    causes: list[Cause] = []
    data = obj.get("data") or {}
    string_data = obj.pop("stringData", None) or {}
    if not isinstance(data, dict) or not isinstance(string_data, dict):
        return [Cause("data", "Invalid value: must be a map of strings")]
    for key, value in string_data.items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    causes += data_key_problems(data)
    for key, value in data.items():
        try:
            if not isinstance(value, str):
                raise binascii.Error("not a string")
            base64.b64decode(value, validate=True)
        except binascii.Error:
            causes.append(
                Cause(
                    f"data[{key}]",
                    'Invalid value: "<secret contents redacted>": illegal base64 data',
                )
            )
    if data:
        obj["data"] = data
    else:
        obj.pop("data", None)
    obj.setdefault("type", "Opaque")
    if old is not None and old.get("type", "Opaque") != obj["type"]:
        causes.append(Cause("type", f'Invalid value: "{obj["type"]}": field is immutable'))
    if old is not None and old.get("immutable") and old.get("data") != obj.get("data"):
        causes.append(
            Cause(
                "data",
                "Forbidden: field is immutable when `immutable` is set",
                "FieldValueForbidden",
            )
        )
    return causes
