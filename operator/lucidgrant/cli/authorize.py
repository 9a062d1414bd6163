"""`lucidgrant authorize` (and `kubectl lucidgrant authorize`): the one-time authorization from a
person's laptop, without the operator's web flow.

It runs Lucid's authorization code flow with a loopback redirect
(`http://localhost:PORT/callback`, served on 127.0.0.1 and ::1 for the few minutes it takes),
exchanges the code itself and writes the refresh token into the grant's bootstrap Secret through
the current kubeconfig. The operator watches that Secret and adopts the new value at once.

Where it writes: the Secret and key of `spec.authorization.refreshTokenSecretRef`. A grant
with `codeSecretRef` (or with no `spec.authorization`) cannot take a refresh token there (its
code is exchanged with the grant's own redirectUri, not the loopback one), so the token goes to
`<grant>-bootstrap` (key `refresh_token`) and `--patch-grant` points the grant at it (without
the flag the command prints the patch to run).

Client credentials come from the grant's client Secret, or from `--client-id` and
`--client-secret` (or LUCIDGRANT_CLIENT_SECRET, or a hidden prompt). No token and no client
secret is ever printed, except the refresh token in the manifest that `--dry-run` prints to
stdout, on purpose.

For tests, LUCIDGRANT_TEST_BROWSER=httpx makes the "browser" an HTTP client that follows the
real redirect chain (Lucid's consent, then the loopback callback) instead of opening a window."""

from __future__ import annotations

import asyncio
import base64
import hmac
import os
import secrets
import socket
import sys
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
import httpx
import yaml
from aiohttp import web

from lucidgrant.authflow import authorize_url, page
from lucidgrant.grant import GrantSpec, SpecError, parse_spec
from lucidgrant.kube import Kube, KubeError
from lucidgrant.lucid import DEFAULT_API_URL, DEFAULT_APP_URL, ClientCredentials, LucidClient
from lucidgrant.lucid import LucidError as LucidFailure
from lucidgrant.names import LABEL_MANAGED_BY, grant_path, secret_path
from lucidgrant.store import secret_value

DEFAULT_PORT = 8765
DEFAULT_TIMEOUT = 300.0
TEST_BROWSER_ENV = "LUCIDGRANT_TEST_BROWSER"
BOOTSTRAP_KEY = "refresh_token"

F = TypeVar("F", bound=Callable[..., Any])


class AuthorizeError(Exception):
    """A failure to tell the person; the message never holds a token or a secret."""


@dataclass(frozen=True)
class AuthorizeOptions:
    name: str
    namespace: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    lucid_app_url: str = DEFAULT_APP_URL
    lucid_api_url: str = DEFAULT_API_URL
    port: int = DEFAULT_PORT
    open_browser: bool = True
    timeout: float = DEFAULT_TIMEOUT
    dry_run: bool = False
    patch_grant: bool = False

    def __repr__(self) -> str:
        return f"AuthorizeOptions(name={self.name!r}, namespace={self.namespace!r})"


@dataclass(frozen=True)
class Target:
    """Where the refresh token goes, and whether the grant must be pointed at it."""

    secret: str
    key: str
    repoint: bool


def current_namespace() -> str:
    """The namespace of the kubeconfig's current context (as kubectl does), else default."""
    try:
        from kubernetes.config.kube_config import list_kube_config_contexts

        _, active = list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=os.environ.get("KUBECONFIG")
        )
        return str((active.get("context") or {}).get("namespace") or "default")
    except Exception:  # no kubeconfig, or an unusual one: kubectl's default then
        return "default"


def target_of(name: str, spec: GrantSpec) -> Target:
    if spec.refresh_token_ref is not None:
        return Target(spec.refresh_token_ref.name, spec.refresh_token_ref.key, repoint=False)
    return Target(f"{name}-bootstrap", BOOTSTRAP_KEY, repoint=True)


def secret_manifest(namespace: str, target: Target, refresh_token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": target.secret, "namespace": namespace},
        "stringData": {target.key: refresh_token},
    }


def grant_patch(target: Target) -> dict[str, Any]:
    return {
        "spec": {
            "authorization": {
                "refreshTokenSecretRef": {"name": target.secret, "key": target.key},
                "codeSecretRef": None,
            }
        }
    }


def _err(message: str) -> None:
    click.echo(message, err=True)


class LoopbackReceiver:
    """The loopback redirect target: waits for one callback carrying our state."""

    def __init__(self, state: str) -> None:
        self.state = state
        self.result: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._runner: web.AppRunner | None = None

    async def callback(self, request: web.Request) -> web.Response:
        query = request.query
        # Anything without our state is not the answer to our request (another tab, or a page
        # poking at localhost): refuse it and keep waiting.
        if not hmac.compare_digest(query.get("state", "").encode(), self.state.encode()):
            return page(
                400, "Unexpected request", "This request does not carry the expected state."
            )
        if self.result.done():
            return page(400, "Already done", "This authorization has already been received.")
        if "error" in query:
            error = query.get("error", "")[:80]
            self.result.set_exception(AuthorizeError(f"Lucid did not grant access: {error}"))
            return page(400, "Authorization refused", f"Lucid answered: {error}.")
        code = query.get("code")
        if not code:
            self.result.set_exception(AuthorizeError("Lucid sent no authorization code"))
            return page(400, "Authorization failed", "Lucid sent no authorization code.")
        self.result.set_result(code)
        return page(
            200,
            "Authorization received",
            "lucidgrant received Lucid's answer. You can close this page and return to the "
            "terminal.",
        )

    async def start(self, port: int) -> None:
        app = web.Application()
        app.router.add_get("/callback", self.callback)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, "127.0.0.1", port).start()
        except OSError as exc:
            await self.stop()
            raise AuthorizeError(
                f"cannot listen on 127.0.0.1:{port} ({exc.strerror}); choose another --port "
                "(and register its redirect URI with the Lucid app)"
            ) from None
        if socket.has_ipv6:  # browsers may resolve localhost to ::1 first
            try:
                await web.TCPSite(self._runner, "::1", port).start()
            except OSError:
                pass

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def _follow_with_httpx(url: str) -> None:
    """The test "browser": follow the redirect chain for real, down to the loopback callback."""
    async with httpx.AsyncClient(follow_redirects=True, timeout=30) as browser:
        try:
            await browser.get(url)
        except httpx.HTTPError as exc:
            _err(f"test browser: {type(exc).__name__}")


async def _read_grant(kube: Kube, namespace: str, name: str) -> GrantSpec:
    grant = await kube.get(grant_path(namespace, name))
    if grant is None:
        raise AuthorizeError(f"LucidGrant {namespace}/{name} not found")
    try:
        return parse_spec(grant.get("spec"))
    except SpecError as exc:
        raise AuthorizeError(f"LucidGrant {namespace}/{name} has an invalid spec: {exc}") from None


async def _credentials(
    kube: Kube, namespace: str, spec: GrantSpec, opts: AuthorizeOptions
) -> ClientCredentials:
    if opts.client_id:
        if not opts.client_secret:
            raise AuthorizeError("--client-id needs --client-secret (or LUCIDGRANT_CLIENT_SECRET)")
        return ClientCredentials(opts.client_id, opts.client_secret)
    secret = await kube.get(secret_path(namespace, spec.client_secret_name))
    client_id = secret_value(secret, spec.client_id_key)
    client_secret = secret_value(secret, spec.client_secret_key)
    if not client_id or not client_secret:
        raise AuthorizeError(
            f"the client Secret {spec.client_secret_name!r} is missing or lacks keys "
            f"{spec.client_id_key}/{spec.client_secret_key}; give --client-id and --client-secret"
        )
    return ClientCredentials(client_id, client_secret)


async def _receive_code(url: str, receiver: LoopbackReceiver, opts: AuthorizeOptions) -> str:
    follower: asyncio.Task[None] | None = None
    if os.environ.get(TEST_BROWSER_ENV) == "httpx":
        follower = asyncio.create_task(_follow_with_httpx(url))
    elif opts.open_browser and webbrowser.open(url):
        _err("Opened Lucid's consent page in your browser. If it did not open, visit:")
        _err(f"  {url}")
    else:
        _err("Open this URL in a browser and approve the access:")
        _err(f"  {url}")
    _err(f"Waiting up to {opts.timeout:.0f}s for Lucid to redirect back …")
    try:
        return await asyncio.wait_for(asyncio.shield(receiver.result), opts.timeout)
    except TimeoutError:
        raise AuthorizeError(f"no answer from the browser within {opts.timeout:.0f}s") from None
    finally:
        if follower is not None:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)


async def _write_secret(kube: Kube, namespace: str, target: Target, refresh_token: str) -> None:
    encoded = base64.b64encode(refresh_token.encode()).decode()
    path = secret_path(namespace, target.secret)
    if await kube.get(path) is None:
        body = secret_manifest(namespace, target, refresh_token)
        del body["stringData"]
        body["data"] = {target.key: encoded}
        body["metadata"]["labels"] = {LABEL_MANAGED_BY: "lucidgrant-cli"}
        await kube.create(secret_path(namespace), body)
    else:
        await kube.patch(path, {"data": {target.key: encoded}})


async def authorize(opts: AuthorizeOptions) -> None:
    """The whole flow; raises AuthorizeError with a message for the person."""
    namespace = opts.namespace or current_namespace()
    label = f"{namespace}/{opts.name}"
    kube = await Kube.connect()
    try:
        spec = await _read_grant(kube, namespace, opts.name)
        creds = await _credentials(kube, namespace, spec, opts)
        target = target_of(opts.name, spec)
        state = secrets.token_urlsafe(32)
        redirect_uri = f"http://localhost:{opts.port}/callback"
        url = authorize_url(
            opts.lucid_app_url,
            spec.token_kind,
            creds.client_id,
            redirect_uri,
            spec.requested_scopes,
            state,
        )
        receiver = LoopbackReceiver(state)
        await receiver.start(opts.port)
        try:
            code = await _receive_code(url, receiver, opts)
        finally:
            await receiver.stop()
        async with httpx.AsyncClient(timeout=30, headers={"User-Agent": "lucidgrant"}) as http:
            try:
                tokens = await LucidClient(http, opts.lucid_api_url).exchange_code(
                    creds, code, redirect_uri
                )
            except LucidFailure as exc:
                raise AuthorizeError(f"the code exchange failed: {exc}") from None
        if opts.dry_run:
            _err(
                "WARNING: the manifest below holds a live refresh token. Apply it or discard it; "
                "do not paste it anywhere else."
            )
            click.echo(yaml.safe_dump(secret_manifest(namespace, target, tokens.refresh_token)))
            if target.repoint:
                _err(_repoint_hint(namespace, opts.name, target))
            return
        await _write_secret(kube, namespace, target, tokens.refresh_token)
        _err(f"Wrote the new refresh token to Secret {namespace}/{target.secret} key {target.key}.")
        if target.repoint:
            if opts.patch_grant:
                await kube.patch(grant_path(namespace, opts.name), grant_patch(target))
                _err(f"Pointed LucidGrant {label} at it (spec.authorization).")
            else:
                _err(_repoint_hint(namespace, opts.name, target))
        _err(
            f"The operator adopts it within seconds: kubectl get lucidgrant {opts.name} "
            f"-n {namespace}"
        )
    except KubeError as exc:
        raise AuthorizeError(f"Kubernetes API: {exc}") from None
    finally:
        await kube.close()


def _repoint_hint(namespace: str, name: str, target: Target) -> str:
    patch = yaml.safe_dump(grant_patch(target), default_flow_style=True).strip()
    return (
        f"LucidGrant {namespace}/{name} does not read a refresh token Secret: point it at this "
        f"one (or rerun with --patch-grant):\n  kubectl patch lucidgrant {name} -n {namespace} "
        f"--type merge -p '{patch}'"
    )


def authorize_options(fn: F) -> F:
    """The click arguments and options of `authorize`, shared by both command lines."""
    decorators = [
        click.argument("name"),
        click.option("--namespace", "-n", help="The grant's namespace (default: kubeconfig's)."),
        click.option("--client-id", help="The Lucid client id (default: the grant's Secret)."),
        click.option(
            "--client-secret",
            envvar="LUCIDGRANT_CLIENT_SECRET",
            help="The Lucid client secret (prefer the env var LUCIDGRANT_CLIENT_SECRET).",
        ),
        click.option(
            "--lucid-app-url",
            envvar="LUCIDGRANT_LUCID_APP_URL",
            default=DEFAULT_APP_URL,
            show_default=True,
        ),
        click.option(
            "--lucid-api-url",
            envvar="LUCIDGRANT_LUCID_API_URL",
            default=DEFAULT_API_URL,
            show_default=True,
        ),
        click.option(
            "--port",
            type=click.IntRange(1, 65535),
            default=DEFAULT_PORT,
            show_default=True,
            help="Loopback port: the redirect URI is http://localhost:PORT/callback.",
        ),
        click.option("--no-browser", is_flag=True, help="Print the URL instead of opening it."),
        click.option(
            "--timeout",
            type=float,
            default=DEFAULT_TIMEOUT,
            show_default=True,
            help="Seconds to wait for the browser.",
        ),
        click.option(
            "--dry-run",
            is_flag=True,
            help="Print the Secret manifest (with the token!) instead of writing it.",
        ),
        click.option(
            "--patch-grant",
            is_flag=True,
            help="Point spec.authorization at <name>-bootstrap when the grant lacks a "
            "refreshTokenSecretRef.",
        ),
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


def run_authorize(
    name: str,
    namespace: str | None,
    client_id: str | None,
    client_secret: str | None,
    lucid_app_url: str,
    lucid_api_url: str,
    port: int,
    no_browser: bool,
    timeout: float,
    dry_run: bool,
    patch_grant: bool,
) -> None:
    """The body of both `authorize` commands."""
    if client_id and not client_secret:
        client_secret = click.prompt("Lucid client secret", hide_input=True)
    opts = AuthorizeOptions(
        name=name,
        namespace=namespace,
        client_id=client_id,
        client_secret=client_secret,
        lucid_app_url=lucid_app_url,
        lucid_api_url=lucid_api_url,
        port=port,
        open_browser=not no_browser,
        timeout=timeout,
        dry_run=dry_run,
        patch_grant=patch_grant,
    )
    try:
        asyncio.run(authorize(opts))
    except AuthorizeError as exc:
        _err(f"error: {exc}")
        sys.exit(1)
