"""A thin JSON client for the few Kubernetes calls the operator makes itself, on the
`kubernetes.aio` ApiClient (configuration, auth, connection pool) without model objects:
raw dicts are what the store and status code work with, and they are cheaper at scale.

Errors become `KubeError` with the HTTP status and the Status reason only: response bodies of
Secret calls hold tokens and must never reach an exception text."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any, Protocol
from urllib.parse import urlencode

import aiohttp
from kubernetes.aio import client as kclient
from kubernetes.aio import config as kconfig

MERGE_PATCH = "application/merge-patch+json"
# What `get_metadata` asks for: the object's metadata alone (every API server since 1.15).
PARTIAL_METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
JSON_PATCH = "application/json-patch+json"
# Items per page of a list, as client-go's informers ask (tools/pager's default): a namespace
# with thousands of Secrets never arrives as one answer.
LIST_CHUNK = 500


class KubeError(Exception):
    def __init__(
        self, method: str, path: str, status: int, reason: str, fields: tuple[str, ...] = ()
    ) -> None:
        super().__init__(f"{method} {path}: HTTP {status} {reason}")
        self.path = path
        self.status = status
        self.reason = reason
        # The fields a 422 names (details.causes): the object written was invalid. A 422
        # without them is a failed JSON-patch test, a conflict. Paths only: causes' messages
        # quote the values.
        self.fields = fields


def error_text(exc: BaseException) -> object:
    """What a log line may say of a failed Kubernetes call: a KubeError as it is (method, path,
    status and reason only), any other exception by its type alone (its text may quote a body)."""
    return exc if isinstance(exc, KubeError) else type(exc).__name__


class ConflictError(KubeError):
    """409: a stale resourceVersion or an object that already exists."""


class NotFoundError(KubeError):
    """404."""


class UnreachableError(ConnectionError):
    """No answer from the API server (connection refused, reset or closed mid-request). An
    OSError, so that every `except OSError` retry path covers it: aiohttp's own
    ServerDisconnectedError is not one, and escaping as it would drop a rotated refresh token."""

    def __init__(self, method: str, path: str, cause: BaseException) -> None:
        super().__init__(f"{method} {path}: {type(cause).__name__}")


def _error(method: str, path: str, status: int, body: bytes) -> KubeError:
    try:
        answer = json.loads(body)
        reason = str(answer.get("reason") or "")
        causes = (answer.get("details") or {}).get("causes") or []
        fields = tuple(str(c.get("field")) for c in causes if c.get("field"))
    except (ValueError, AttributeError, UnicodeDecodeError):
        reason, fields = "", ()
    cls = ConflictError if status == 409 else NotFoundError if status == 404 else KubeError
    return cls(method, path, status, reason or "Error", fields)


class KubeConfigError(Exception):
    """No usable cluster configuration; the message says which file or setting, and the fix."""


def kubeconfig_paths(kubeconfig: str | None = None) -> list[str]:
    """The files kubectl would read: --kubeconfig, else KUBECONFIG's list, else ~/.kube/config;
    raises KubeConfigError when none of them exists."""
    text = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    paths = [os.path.expanduser(p) for p in text.split(os.pathsep) if p]
    if not any(os.path.isfile(p) for p in paths):
        fix = "give an existing file" if kubeconfig else "set KUBECONFIG to your cluster's"
        raise KubeConfigError(
            f"no kubeconfig at {os.pathsep.join(paths)} and not in a pod "
            f"(KUBERNETES_SERVICE_HOST unset): {fix}"
        )
    return paths


async def load_configuration(
    kubeconfig: str | None = None, context: str | None = None
) -> kclient.Configuration:
    configuration = kclient.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and kubeconfig is None and context is None:
        try:
            kconfig.load_incluster_config(client_configuration=configuration)
        except kconfig.ConfigException as exc:
            raise KubeConfigError(
                f"in-cluster configuration: {exc} Mount the pod's service account token "
                "(automountServiceAccountToken), or unset KUBERNETES_SERVICE_HOST to use KUBECONFIG"
            ) from None
        return configuration
    paths = kubeconfig_paths(kubeconfig)
    try:
        # The paths as KUBECONFIG says now: the client's own default is KUBECONFIG as it was
        # when the client was imported.
        await kconfig.load_kube_config(
            config_file=os.pathsep.join(paths), context=context, client_configuration=configuration
        )
    except (kconfig.ConfigException, OSError, ValueError, TypeError) as exc:
        where = f"context {context!r} in " if context else ""
        raise KubeConfigError(f"cannot use {where}{os.pathsep.join(paths)}: {exc}") from None
    return configuration


class KubeClient(Protocol):
    """The handful of calls the refresh path makes: what `Kube` offers, and what the in-process
    tests fake. `get` answers None for a missing object; writes raise KubeError (ConflictError on
    a stale resourceVersion or an existing name), and every call may raise OSError."""

    async def get(self, path: str) -> dict[str, Any] | None: ...

    async def get_metadata(self, path: str) -> dict[str, Any] | None:
        """The object's metadata alone (a PartialObjectMetadata), None for a missing one."""

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]: ...

    async def patch(
        self, path: str, patch: Any, *, content_type: str = MERGE_PATCH
    ) -> dict[str, Any]: ...

    async def delete(self, path: str) -> None: ...


class Kube:
    """The real client (`KubeClient` plus `request` for the leader election's PUT)."""

    def __init__(self, api: kclient.ApiClient) -> None:
        self.api = api

    @classmethod
    async def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        """In-cluster config in a pod, KUBECONFIG (or ~/.kube/config) elsewhere; an explicit
        kubeconfig or context (kubectl's --kubeconfig and --context) wins over both."""
        configuration = await load_configuration(kubeconfig, context)
        # The client's aiohttp session trusts the environment by default, which reads ~/.netrc
        # and the proxy variables in a thread on every request (a tenth of the operator's CPU in
        # bench/RESULTS.md). A proxy still works through the kubeconfig's proxy-url, as with the
        # synchronous client, which never read the environment either.
        configuration.client_session_kwargs = {"trust_env": False}
        return cls(kclient.ApiClient(configuration))

    async def close(self) -> None:
        await self.api.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        query: dict[str, str] | None = None,
        accept: str = "application/json",
    ) -> dict[str, Any]:
        headers = {"Accept": accept, "Content-Type": content_type}
        _, url, headers, _, _ = await self.api.param_serialize(
            method, path, header_params=headers, auth_settings=["BearerToken"]
        )
        if query:
            url += "?" + urlencode(query)
        # The REST layer serializes `body` itself (json.dumps for every JSON content type).
        try:
            response = await self.api.call_api(method, url, header_params=headers, body=body)
            data: bytes = await response.read()
        except aiohttp.ClientError as exc:
            raise UnreachableError(method, path, exc) from None
        if response.status >= 300:
            raise _error(method, path, response.status, data)
        result = json.loads(data) if data else {}
        return result if isinstance(result, dict) else {}

    async def pages(
        self, path: str, query: dict[str, str] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """A list in chunks of LIST_CHUNK, each page as the server answered it (its `items` and
        `metadata`), following `continue` to the end. A 410 on an expired continue token raises
        like any error: the caller lists again from the start."""
        params = {**(query or {}), "limit": str(LIST_CHUNK)}
        while True:
            page = await self.request("GET", path, query=params)
            yield page
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return
            params["continue"] = str(token)

    async def list(self, path: str, query: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Every item of a list, page by page."""
        return [item async for page in self.pages(path, query) for item in page.get("items") or []]

    async def get(self, path: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", path)
        except NotFoundError:
            return None

    async def get_metadata(self, path: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", path, accept=PARTIAL_METADATA)
        except NotFoundError:
            return None

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.request("POST", path, body)

    async def patch(
        self, path: str, patch: Any, *, content_type: str = MERGE_PATCH
    ) -> dict[str, Any]:
        return await self.request("PATCH", path, patch, content_type=content_type)

    async def delete(self, path: str) -> None:
        try:
            await self.request("DELETE", path)
        except NotFoundError:
            pass
