"""An emulated Kubernetes API server on aiohttp, for tests, the demo and the benchmark.

The real `kubernetes` client and kopf talk to it over HTTP through a kubeconfig, unpatched.
docs/testing.md says where it is simpler than the real API server.

Standalone: `python -m lucidgrant_testbed.kubeapi --port 8001 --kubeconfig k.yaml` (the LucidGrant
CRD unless `--crds` names others) prints the URL once listening and serves until SIGTERM or
SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import json
import logging
import pathlib
import re
import secrets
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar
from urllib.parse import unquote

import yaml
from aiohttp import web

from lucidgrant_testbed import CRDS, kube_openapi
from lucidgrant_testbed.kube_errors import ApiError, Cause, bad_request, for_code, invalid
from lucidgrant_testbed.kube_rbac import (
    ADMIN,
    OWNER_REFERENCES_PERMISSION_ENFORCEMENT,
    RBAC_GROUP,
    Attributes,
    User,
    authorize,
    denied,
    owner_reference_check,
)
from lucidgrant_testbed.kube_select import combine, field_matcher, label_matcher
from lucidgrant_testbed.kube_store import (
    CRD_KEY,
    JSON_PATCH,
    NAMESPACES_KEY,
    Check,
    FieldValidation,
    Gone,
    History,
    Signal,
    Store,
    Watcher,
    dumps,
    render,
)
from lucidgrant_testbed.kube_table import partial_object_metadata, table, wanted_as
from lucidgrant_testbed.kube_types import JSON, ResourceType

logger = logging.getLogger(__name__)
T = TypeVar("T")

_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_KUBE_VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-lucidgrant-emulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}


@dataclass
class RequestRecord:
    """One resource request as RBAC sees it, with the answer's status code."""

    verb: str
    group: str
    resource: str
    subresource: str
    namespace: str
    name: str
    code: int = 0
    # Tells the operator's calls from a test's own in an RBAC check.
    user_agent: str = ""
    user: str = ""
    label_selector: str = ""  # of a list or watch
    query: str = ""  # the query string: a test sees `limit` and `continue` on lists
    warnings: tuple[str, ...] = ()  # the answer's Warning headers (fieldValidation=Warn)
    accept: str = ""  # the Accept header: a test sees what a get asked the object as


@dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    remaining: int  # answers left; unlimited until `until` when that is set
    delay: float
    verbs: frozenset[str]  # empty: any verb
    until: float | None  # time.monotonic() deadline of a window fault
    message: str

    def matches(self, method: str, path: str, verb: str) -> bool:
        return (
            self.method in ("*", method)
            and (not self.verbs or verb in self.verbs)
            and bool(self.pattern.search(path))
        )


class Faults:
    """Faults a test switches on; safe to call from the test's thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        # While true, every request is cut at the connection level, with no answer.
        self.unreachable = False

    def add(
        self,
        method: str,
        path_regex: str,
        status: int = 500,
        count: int = 1,
        delay: float = 0.0,
        *,
        verbs: Sequence[str] = (),
        seconds: float | None = None,
        message: str = "",
    ) -> None:
        """Answer the next `count` requests matching method ("*" for any), the regex (searched
        in path and query) and, if given, the verbs ("list", "watch", ...) with `status`, after
        `delay` seconds; status 0 only delays them. With `seconds`, every matching request
        answers so for that long instead of `count` times."""
        until = None if seconds is None else time.monotonic() + seconds
        fault = Fault(
            method.upper(),
            re.compile(path_regex),
            status,
            count,
            delay,
            frozenset(verbs),
            until,
            message,
        )
        with self._lock:
            self._faults.append(fault)

    def storage_unavailable(self, seconds: float, status: int = 503, path_regex: str = "") -> None:
        """Lists and watches fail for `seconds`, as while the API server's watch cache is not
        ready (storage/cacher/cacher.go: 429 `storage is (re)initializing` with
        retryAfterSeconds 1 on current servers, 503 on older ones and behind a load balancer
        with the server gone) or etcd fails (500)."""
        message = (
            "storage is (re)initializing"
            if status == 429
            else "the server is currently unable to handle the request"
        )
        self.add(
            "GET", path_regex, status, verbs=("list", "watch"), seconds=seconds, message=message
        )

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self.unreachable = False

    def take(self, method: str, path: str, verb: str) -> Fault | None:
        now = time.monotonic()
        with self._lock:
            self._faults = [f for f in self._faults if f.until is None or f.until > now]
            for fault in self._faults:
                if fault.matches(method, path, verb):
                    if fault.until is None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self._faults.remove(fault)
                    return fault
        return None


@dataclass
class Target:
    """A parsed resource URL."""

    rt: ResourceType
    version: str
    namespace: str | None  # None: cluster-scoped object, or a list across all namespaces
    name: str | None
    subresource: str


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=dumps(body), status=status, content_type="application/json")


def _error(e: ApiError) -> web.Response:
    response = _json(e.status(), e.code)
    if e.retry_after is not None:
        response.headers["Retry-After"] = str(e.retry_after)
    return response


def _not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource")


def _documents(paths: Sequence[pathlib.Path]) -> list[JSON]:
    """Every YAML/JSON object in these files (directories: their files, sorted)."""
    files: list[pathlib.Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
        else:
            files.append(path)
    return [
        doc
        for file in files
        for doc in yaml.safe_load_all(file.read_text())
        if isinstance(doc, dict) and doc.get("kind")
    ]


class KubeAPI:
    """The emulated API server. Start it with `await start()`, or in a thread with
    `lucidgrant_testbed.threaded.running_in_thread(KubeAPI(...))`.

    `manifests` are created at start, after the CRDs (kinds the emulator does not serve, such
    as Deployments, are skipped). Requests are authorized by RBAC from the RBAC objects stored;
    a request with no credentials is the cluster admin (the tests' own clients), a bearer token
    from `token_for()` is that user. `admission` names optional admission plugins to switch on
    (OwnerReferencesPermissionEnforcement; kube-apiserver has it off by default, OpenShift on).
    """

    def __init__(
        self,
        crd_paths: Sequence[pathlib.Path] = (),
        *,
        manifests: Sequence[pathlib.Path] = (),
        admission: Sequence[str] = (),
        history: History | None = None,
        bookmark_interval: float = 60.0,
        namespaces: Sequence[str] = ("default", "kube-system", "kube-public"),
    ) -> None:
        self.store = Store(history)
        self.faults = Faults()
        self.requests: list[RequestRecord] = []
        self.bookmark_interval = bookmark_interval
        self._crd_paths = list(crd_paths)
        self._manifests = list(manifests)
        self.admission = set(admission)
        self._tokens: dict[str, User] = {}
        self._namespaces = list(namespaces)
        self._runner: web.AppRunner | None = None
        self._url = ""
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._loop = asyncio.get_running_loop()
        namespaces = self.store.types[NAMESPACES_KEY]
        for name in self._namespaces:
            self.store.create(namespaces, "", {"metadata": {"name": name}}, "v1")
        crds = self.store.types[CRD_KEY]
        for doc in _documents(self._crd_paths):
            if doc["kind"] == "CustomResourceDefinition":
                self.store.create(crds, "", doc, "v1")
        self._apply(_documents(self._manifests))
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_get("/_emulator/stats", self._emulator_stats)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that hangs up ends its watch handler at once.
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        bound_port = server.sockets[0].getsockname()[1]
        self._url = f"http://{host}:{bound_port}"

    async def stop(self) -> None:
        """Stop serving; open watch streams end cleanly instead of hanging."""
        self.store.signal_watchers("close")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return self._url

    def token_for(self, user: User) -> str:
        """A bearer token that authenticates as `user`."""
        for token, known in self._tokens.items():
            if known == user:
                return token
        token = secrets.token_urlsafe(16)
        self._tokens[token] = user
        return token

    def write_kubeconfig(
        self, path: pathlib.Path, namespace: str = "default", user: User = ADMIN
    ) -> pathlib.Path:
        """A kubeconfig with a token user that the `kubernetes` client and kopf accept as is;
        `user` is whom the token authenticates as (`kube_rbac.service_account(ns, name)` for
        an operator held to its RBAC)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": {"token": self.token_for(user)}}],
            "contexts": [
                {
                    "name": "emulator",
                    "context": {"cluster": "emulator", "user": "emulator", "namespace": namespace},
                }
            ],
            "current-context": "emulator",
        }
        path = pathlib.Path(path)
        path.write_text(yaml.safe_dump(config))
        return path

    def apply(self, documents: Sequence[JSON]) -> None:
        """Create these objects as the admin would (kinds not served are skipped). Callable
        from any thread."""
        self._call(lambda: self._apply(documents))

    def _apply(self, documents: Sequence[JSON]) -> None:
        for doc in documents:
            api_version = str(doc.get("apiVersion", ""))
            group, _, version = api_version.rpartition("/")
            rt = next((t for t in self.store.types.values() if t.kind == doc.get("kind")), None)
            if rt is None or rt.group != group or version not in rt.versions:
                continue
            namespace = (doc.get("metadata") or {}).get("namespace") or "default"
            self.store.create(rt, namespace if rt.namespaced else "", doc, version)

    # --- direct access for tests ---------------------------------------------------------

    def get_object(
        self, group: str, resource: str, namespace: str | None, name: str
    ) -> JSON | None:
        with self.store.lock:
            rt = self.store.types.get((group, resource))
            obj = None if rt is None else self.store.find(rt, namespace or "", name)
            return copy.deepcopy(obj)

    def list_objects(self, group: str, resource: str, namespace: str | None = None) -> list[JSON]:
        with self.store.lock:
            rt = self.store.types.get((group, resource))
            if rt is None:
                return []
            return copy.deepcopy(list(self.store.items(rt, namespace)))

    def counts(self) -> Counter[tuple[str, str]]:
        return Counter((r.verb, r.resource) for r in list(self.requests))

    async def _emulator_stats(self, _: web.Request) -> web.Response:
        """Request counts for processes that cannot call `counts()` (the benchmark): one row per
        (verb, resource, subresource, code). Not a Kubernetes path, and not recorded itself."""
        rows = Counter((r.verb, r.resource, r.subresource, r.code) for r in list(self.requests))
        return _json(
            {
                "requests": [[*row, n] for row, n in sorted(rows.items())],
                "resource_version": self.store.rv,
            }
        )

    def drop_watches(self) -> int:
        """Cut every open watch stream abruptly; returns how many. Callable from any thread."""
        return self._signal("drop")

    def watch_error(self, code: int = 500, message: str = "") -> int:
        """End every open watch stream with an in-stream `ERROR` event, as the API server does
        when etcd fails under a watch (storage/etcd3/watcher.go sends the error, then closes);
        returns how many. Callable from any thread."""
        error = for_code(code, message or "etcdserver: request timed out")
        error.message = (
            f"Internal error occurred: {error.message}" if code == 500 else error.message
        )
        return self._signal(error)

    def restart(self) -> int:
        """What a restart of the API server does to watchers: every stream is cut and the watch
        history is gone, so each resume from an older resourceVersion answers 410 Gone and the
        client lists again. Returns how many streams were cut. Callable from any thread."""
        return self._call(self._restart)

    def compact(self) -> None:
        """What etcd's compaction does to chunked lists (the API server compacts every 5
        minutes, storage/etcd3/compact.go): a continue token from before now answers 410.
        Callable from any thread."""
        self._call(self.store.compact_etcd)

    def _restart(self) -> int:
        self.store.compact()
        return self.store.signal_watchers("drop")

    def _signal(self, item: Signal | ApiError) -> int:
        return self._call(lambda: self.store.signal_watchers(item))

    def _call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the server's loop (the store is not thread-safe) and return its result."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the emulated API server is not running")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return fn()

        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=10)

    # --- HTTP ----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.faults.unreachable:
            self._cut(request)
        parsed: Target | JSON | ApiError
        try:
            parsed = self._parse(request.path)
        except ApiError as e:
            parsed = e
        record = self._record(request, parsed) if isinstance(parsed, Target) else None
        verb = record.verb if record is not None else request.method.lower()
        fault = self.faults.take(request.method, request.path_qs, verb)
        try:
            if fault is not None:
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.status:
                    raise for_code(fault.status, fault.message)
                if self.faults.unreachable:  # switched on while this request was delayed
                    self._cut(request)
            user = self._authenticate(request)
            if record is not None:
                record.user = user.name
            if isinstance(parsed, ApiError):
                raise parsed
            attrs = self._attributes(request, user, record)
            allowed, reason = self._allowed(attrs)
            if not allowed:
                raise denied(attrs, reason)
            if isinstance(parsed, Target):
                response = await self._dispatch(request, parsed, record, attrs)
            else:
                response = _json(parsed)
        except ApiError as e:
            response = _error(e)
        if record is not None and not record.code:
            record.code = response.status
        if record is not None:
            record.warnings = tuple(response.headers.getall("Warning", ()))
        return response

    def _authenticate(self, request: web.Request) -> User:
        header = request.headers.get("Authorization")
        if header is None:
            return ADMIN  # the tests' own clients
        scheme, _, token = header.partition(" ")
        user = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        return user

    def _attributes(
        self, request: web.Request, user: User, record: RequestRecord | None
    ) -> Attributes:
        if record is None:
            return Attributes(user, request.method.lower(), path=request.path)
        name = record.name
        if not name and record.verb in ("list", "watch"):
            # A list or watch of one object by name is authorized as for that name.
            fields = request.query.get("fieldSelector", "")
            if fields.startswith("metadata.name=") and "," not in fields:
                name = fields.removeprefix("metadata.name=")
        return Attributes(
            user,
            record.verb,
            record.group,
            record.resource,
            record.subresource,
            record.namespace,
            name,
        )

    def _allowed(self, attrs: Attributes) -> tuple[bool, str]:
        store = self.store

        def lookup(kind: str, namespace: str, name: str) -> JSON | None:
            rt = store.types[(RBAC_GROUP, kind.lower() + "s")]
            return store.find(rt, namespace, name)

        def listing(kind: str, namespace: str) -> list[JSON]:
            rt = store.types[(RBAC_GROUP, kind.lower() + "s")]
            return list(store.items(rt, namespace or None))

        return authorize(attrs, lookup, listing)

    def _admission(self, attrs: Attributes) -> Check | None:
        """The validating admission plugins switched on, for writes by `attrs.user`."""
        if OWNER_REFERENCES_PERMISSION_ENFORCEMENT not in self.admission:
            return None

        def resource_of(api_version: str, kind: str) -> str | None:
            group, _, version = api_version.rpartition("/")
            for rt in self.store.types.values():
                if rt.group == group and rt.kind == kind and version in rt.versions:
                    return rt.plural
            return None

        def check(obj: JSON, old: JSON | None) -> None:
            owner_reference_check(attrs, obj, old, resource_of, self._allowed)

        return check

    def _cut(self, request: web.Request) -> NoReturn:
        """Close the connection without an answer, as an unreachable server would."""
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError

    def _record(self, request: web.Request, target: Target) -> RequestRecord:
        if request.method == "GET":
            watch = request.query.get("watch") in ("true", "1")
            verb = "get" if target.name else "watch" if watch else "list"
        elif request.method == "DELETE" and not target.name:
            verb = "deletecollection"
        else:
            verb = _VERBS.get(request.method, request.method.lower())
        record = RequestRecord(
            verb,
            target.rt.group,
            target.rt.plural,
            target.subresource,
            target.namespace or "",
            target.name or "",
            user_agent=request.headers.get("User-Agent", ""),
            label_selector=request.query.get("labelSelector", ""),
            query=request.query_string,
            accept=request.headers.get("Accept", ""),
        )
        self.requests.append(record)
        return record

    def _parse(self, path: str) -> Target | JSON:
        """A resource target, or the discovery document the path asks for."""
        parts = [unquote(p) for p in path.split("/") if p]
        if parts == ["version"]:
            return dict(_KUBE_VERSION)
        if parts == ["openapi", "v3"]:
            return kube_openapi.discovery(list(self.store.types.values()))
        if parts[:2] == ["openapi", "v3"]:
            root = parts[2:]
            if len(root) == 3 and root[0] == "apis":
                group, version = root[1], root[2]
            elif len(root) == 2 and root[0] == "api":
                group, version = "", root[1]
            else:
                raise _not_found()
            doc = kube_openapi.document(list(self.store.types.values()), group, version)
            if doc is None:
                raise _not_found()
            return doc
        if parts == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if parts == ["apis"]:
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": self._groups()}
        if len(parts) == 2 and parts[0] == "apis":
            for entry in self._groups():
                if entry["name"] == parts[1]:
                    return {"kind": "APIGroup", "apiVersion": "v1", **entry}
            raise _not_found()
        if len(parts) >= 2 and parts[0] == "api" and parts[1] == "v1":
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise _not_found()
        if not rest:
            return self._resource_list(group, version)
        # /api/v1/namespaces/{name}[/status] is the Namespace itself, not a namespaced path.
        is_namespace_object = group == "" and (
            len(rest) == 2 or (len(rest) == 3 and rest[2] in ("status", "finalize"))
        )
        if rest[0] == "namespaces" and len(rest) >= 3 and not is_namespace_object:
            namespace: str | None = rest[1]
            rest = rest[2:]
        else:
            namespace = None
        if len(rest) > 3:
            raise _not_found()
        plural, name, subresource = [*rest, "", ""][:3]
        rt = self.store.resolve(group, version, plural)
        if rt is None or (namespace is not None and not rt.namespaced):
            raise _not_found()
        if namespace is None and name and rt.namespaced:
            raise _not_found()
        if subresource and (subresource != "status" or not rt.status_subresource):
            raise _not_found()
        return Target(rt, version, namespace, name or None, subresource)

    def _groups(self) -> list[JSON]:
        groups: dict[str, list[str]] = {}
        for rt in self.store.types.values():
            if rt.group:
                known = groups.setdefault(rt.group, [])
                known += [v for v in rt.versions if v not in known]
        result = []
        for name, versions in sorted(groups.items()):
            entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
            result.append({"name": name, "versions": entries, "preferredVersion": entries[0]})
        return result

    def _resource_list(self, group: str, version: str) -> JSON:
        resources = [
            entry
            for rt in self.store.types.values()
            if rt.group == group and version in rt.versions
            for entry in rt.discovery()
        ]
        if not resources:
            raise _not_found()
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            raise bad_request("the request body is not valid JSON") from None

    async def _dispatch(
        self,
        request: web.Request,
        target: Target,
        record: RequestRecord | None,
        attrs: Attributes,
    ) -> web.StreamResponse:
        store, rt = self.store, target.rt
        check = self._admission(attrs)
        namespace = target.namespace or ""
        method = request.method
        api_version = rt.api_version(target.version)
        as_kind, as_version = wanted_as(request.headers.get("Accept", "")) or (None, "")
        if method == "GET" and target.name:
            obj = render(store.get(rt, namespace, target.name), api_version)
            if as_kind == "Table":
                meta = {"resourceVersion": obj["metadata"]["resourceVersion"]}
                include = request.query.get("includeObject", "")
                return _json(table(rt, target.version, [obj], meta, include))
            if as_kind == "PartialObjectMetadata":
                return _json(partial_object_metadata(obj, as_version))
            return _json(obj)
        if method == "GET" and request.query.get("watch") in ("true", "1"):
            return await self._watch(request, target, record)
        if method == "GET":
            if as_kind == "PartialObjectMetadata":  # response.go: a list is refused
                raise ApiError(
                    406,
                    "NotAcceptable",
                    "you requested PartialObjectMetadata, but the requested object is a list",
                )
            listed = self._list(request, target)
            if as_kind == "Table":
                include = request.query.get("includeObject", "")
                listed = table(rt, target.version, listed["items"], listed["metadata"], include)
            return _json(listed)
        if method == "POST" and not target.name:
            if rt.namespaced and target.namespace is None:
                raise _not_found()
            fields = _field_validation(request, "CreateOptions")
            body = await self._body(request)
            obj = store.create(rt, namespace, body, target.version, check, fields)
            return _warned(_json(render(obj, api_version), 201), fields)
        if method == "PUT" and target.name:
            fields = _field_validation(request, "UpdateOptions")
            body = await self._body(request)
            obj = store.update(
                rt, namespace, target.name, body, target.version, target.subresource, check, fields
            )
            return _warned(_json(render(obj, api_version)), fields)
        if method == "PATCH" and target.name:
            fields = _field_validation(request, "PatchOptions")
            content_type = request.headers.get("Content-Type", JSON_PATCH).split(";")[0].strip()
            body = await self._body(request)
            obj = store.patch(
                rt,
                namespace,
                target.name,
                content_type,
                body,
                target.version,
                target.subresource,
                check,
                fields,
            )
            return _warned(_json(render(obj, api_version)), fields)
        if method == "DELETE" and target.name and not target.subresource:
            options = await self._body(request)
            if request.query.get("propagationPolicy"):
                options["propagationPolicy"] = request.query["propagationPolicy"]
            obj, gone = store.delete(rt, namespace, target.name, options)
            if gone and not rt.custom and rt.key != CRD_KEY:
                return _json(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "details": {
                            "name": target.name,
                            "group": rt.group,
                            "kind": rt.plural,
                            "uid": obj["metadata"]["uid"],
                        },
                    }
                )
            return _json(render(obj, api_version))
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method: {method}")

    def _list(self, request: web.Request, target: Target) -> JSON:
        """A list, in chunks with `limit` and `continue` as apiserver/pkg/storage/etcd3/store.go
        (GetList) serves them: the token is storage/continue.go's (base64 of the list's
        resourceVersion and the key to start from), `remainingItemCount` only without
        selectors, 400 on a token it cannot read, and 410 once etcd compacted the token's
        resourceVersion (etcd3/errors.go), with a token that continues at the latest state."""
        rt, query = target.rt, request.query
        selectors = query.get("labelSelector") or query.get("fieldSelector")
        matcher = combine(
            label_matcher(query.get("labelSelector")),
            field_matcher(query.get("fieldSelector"), rt.plural),
        )
        api_version = rt.api_version(target.version)
        list_rv = self.store.rv
        cross_namespace = rt.namespaced and target.namespace is None
        items = [
            render(obj, api_version)
            for obj in self.store.items(rt, target.namespace)
            if matcher is None or matcher(obj)
        ]
        token = query.get("continue")
        if token:
            start, token_rv = _decode_continue(token)
            if 0 < token_rv <= self.store.etcd_compacted:
                raise ApiError(
                    410,
                    "Expired",
                    _INCONSISTENT_CONTINUE,
                    list_continue=_encode_continue(start, -1),
                )
            list_rv = token_rv if token_rv > 0 else list_rv
            items = [o for o in items if _list_key(o, cross_namespace) >= start]
        metadata: JSON = {"resourceVersion": str(list_rv)}
        limit = int(_number(query.get("limit") or "0"))
        if limit and len(items) > limit:
            if not selectors:
                metadata["remainingItemCount"] = len(items) - limit
            items = items[:limit]
            last = _list_key(items[-1], cross_namespace)
            metadata["continue"] = _encode_continue(last + "\x00", list_rv)
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": api_version,
            "metadata": metadata,
            "items": items,
        }

    async def _watch(
        self, request: web.Request, target: Target, record: RequestRecord | None
    ) -> web.StreamResponse:
        rt, query = target.rt, request.query
        matcher = combine(
            label_matcher(query.get("labelSelector")),
            field_matcher(query.get("fieldSelector"), rt.plural),
        )
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        send_initial = query.get("sendInitialEvents") in ("true", "1")
        timeout = _number(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        api_version = rt.api_version(target.version)
        gone: Gone | None = None
        watcher: Watcher | None = None
        try:
            watcher = self.store.watch(
                rt,
                target.namespace,
                matcher,
                query.get("resourceVersion"),
                initial_end=send_initial and bookmarks,
            )
        except Gone as e:
            gone = e
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        if record is not None:
            record.code = 200
        if watcher is None:
            error = ApiError(410, "Expired", str(gone))
            await response.write(dumps({"type": "ERROR", "object": error.status()}) + b"\n")
            return response
        try:
            await self._stream(request, response, watcher, api_version, bookmarks, timeout)
        finally:
            self.store.unwatch(watcher)
        return response

    async def _stream(
        self,
        request: web.Request,
        response: web.StreamResponse,
        watcher: Watcher,
        api_version: str,
        bookmarks: bool,
        timeout: float | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else float("inf")
        next_bookmark = loop.time() + self.bookmark_interval if bookmarks else float("inf")
        while True:
            if loop.time() >= deadline:
                return
            wait = min(deadline, next_bookmark) - loop.time()
            try:
                if watcher.queue.empty():
                    item = await asyncio.wait_for(watcher.queue.get(), max(wait, 0.0))
                else:  # a burst: skip wait_for's per-call cost
                    item = watcher.queue.get_nowait()
            except TimeoutError:
                if loop.time() >= deadline:
                    continue
                # The queue is empty: every event up to the current resourceVersion is sent.
                await response.write(self._bookmark(watcher, api_version))
                next_bookmark = loop.time() + self.bookmark_interval
                continue
            if isinstance(item, ApiError):
                await response.write(dumps({"type": "ERROR", "object": item.status()}) + b"\n")
                return
            if item == "close":
                return
            if item == "drop":
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError
            if item == "initial-end":
                await response.write(self._bookmark(watcher, api_version, initial_end=True))
                continue
            kind, event = item
            await response.write(event.line(kind, api_version))

    def _bookmark(self, watcher: Watcher, api_version: str, *, initial_end: bool = False) -> bytes:
        metadata: JSON = {"resourceVersion": str(self.store.rv)}
        if initial_end:
            metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
        rt = self.store.types.get(watcher.key)
        kind = rt.kind if rt is not None else ""
        event = {
            "type": "BOOKMARK",
            "object": {"kind": kind, "apiVersion": api_version, "metadata": metadata},
        }
        return dumps(event) + b"\n"


_FIELD_VALIDATION = ("Ignore", "Strict", "Warn")


def _field_validation(request: web.Request, options: str) -> FieldValidation:
    """The `fieldValidation` parameter; Warn when absent (apiserver/pkg/endpoints/handlers/
    rest.go); any other value answers 422 as the options' validation does
    (apimachinery/pkg/apis/meta/v1/validation/validation.go)."""
    directive = request.query.get("fieldValidation") or "Warn"
    if directive not in _FIELD_VALIDATION:
        supported = ", ".join(f'"{d}"' for d in _FIELD_VALIDATION)
        cause = Cause(
            "fieldValidation",
            f'Unsupported value: "{directive}": supported values: {supported}',
            "FieldValueNotSupported",
        )
        raise invalid(options, "meta.k8s.io", "", [cause])
    return FieldValidation(directive, patch=options == "PatchOptions")


def _warned(response: web.Response, fields: FieldValidation) -> web.Response:
    """One `Warning` header per warning, as apimachinery/pkg/util/net/http.go writes them."""
    for text in fields.warnings:
        response.headers.add("Warning", f"299 - {json.dumps(text)}")
    return response


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise bad_request(f"invalid number {text!r}") from None


_INCONSISTENT_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted between "
    "the time the first chunk was returned and now may show up in the list."
)


def _list_key(obj: JSON, cross_namespace: bool) -> str:
    """The object's etcd key after the list's prefix: `<namespace>/<name>` across namespaces,
    else `<name>` (the order etcd lists in)."""
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}" if cross_namespace else str(meta["name"])


def _encode_continue(start: str, rv: int) -> str:
    token = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[str, int]:
    """The start key and resourceVersion of a continue token; 400 as etcd3/store.go answers a
    token it cannot read."""
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        version, rv, start = decoded["v"], int(decoded["rv"]), str(decoded["start"])
    except (ValueError, TypeError, KeyError):
        raise bad_request("invalid continue token: continue key is not valid") from None
    if version != "meta.k8s.io/v1" or rv == 0 or not start:
        raise bad_request("invalid continue token: continue key is not valid")
    return start, rv


# --- standalone ------------------------------------------------------------------------------


async def _serve(args: argparse.Namespace) -> None:
    kube = KubeAPI(
        [pathlib.Path(p) for p in args.crds] or [CRDS],
        history=History(most=args.history_size, seconds=args.history_seconds),
        bookmark_interval=args.bookmark_interval,
    )
    await kube.start(args.host, args.port)
    if args.kubeconfig:
        kube.write_kubeconfig(pathlib.Path(args.kubeconfig), args.namespace)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    print(kube.url, flush=True)
    started = time.monotonic()
    await stopping.wait()
    await kube.stop()
    logger.info(
        "Stopped after %.1fs; %d requests served.", time.monotonic() - started, len(kube.requests)
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve an emulated Kubernetes API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--crds",
        action="append",
        default=[],
        help="CRD file or directory (repeatable; default: the LucidGrant CRD)",
    )
    parser.add_argument("--kubeconfig", help="write a kubeconfig pointing here to this path")
    parser.add_argument("--namespace", default="default", help="the kubeconfig's namespace")
    parser.add_argument(
        "--history-size", type=int, default=History.most, help="most watch events kept per type"
    )
    parser.add_argument(
        "--history-seconds",
        type=float,
        default=History.seconds,
        help="watch events older than this may be forgotten (resumes then answer 410 Gone)",
    )
    parser.add_argument("--bookmark-interval", type=float, default=60.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
