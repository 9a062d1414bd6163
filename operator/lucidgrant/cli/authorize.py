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
the flag the command prints the one-line `kubectl patch` to run). It never writes into a Secret
another grant uses, nor into this grant's own client, access-token or state Secret.

Client credentials come from the grant's client Secret, or from `--client-id` with the secret
from `--client-secret-file`, LUCIDGRANT_CLIENT_SECRET or a hidden prompt: never from a flag,
which every user of the machine could read in `ps`. No token and no client secret is ever
printed, except the refresh token in the manifest that `--dry-run` prints to stdout, on
purpose.

For tests, LUCIDGRANT_TEST_BROWSER=httpx makes the "browser" an HTTP client that follows the
real redirect chain (Lucid's consent, then the loopback callback) instead of opening a window."""

from __future__ import annotations

import asyncio
import base64
import errno
import getpass
import hmac
import json
import os
import secrets
import shlex
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, TypeVar

import click
import httpx
import yaml
from aiohttp import web

from lucidgrant.authflow import authorize_url, page
from lucidgrant.cache import referenced_secrets
from lucidgrant.cli.common import current_namespace, fail, kube_options
from lucidgrant.grant import GrantSpec, SpecError, parse_spec
from lucidgrant.kube import Kube, KubeConfigError, KubeError
from lucidgrant.lucid import DEFAULT_API_URL, DEFAULT_APP_URL, ClientCredentials, LucidClient
from lucidgrant.lucid import LucidError as LucidFailure
from lucidgrant.names import (
    LABEL_CLIENT,
    LABEL_MANAGED_BY,
    grant_path,
    grants_path,
    secret_path,
    state_secret_name,
)
from lucidgrant.secretdata import client_credentials

DEFAULT_PORT = 8765
DEFAULT_TIMEOUT = 300.0
TEST_BROWSER_ENV = "LUCIDGRANT_TEST_BROWSER"
CLIENT_SECRET_ENV = "LUCIDGRANT_CLIENT_SECRET"
BOOTSTRAP_KEY = "refresh_token"

F = TypeVar("F", bound=Callable[..., Any])


class AuthorizeError(Exception):
    """A failure to tell the person; the message never holds a token or a secret."""


@dataclass(frozen=True)
class AuthorizeOptions:
    name: str
    namespace: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
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


def target_of(name: str, spec: GrantSpec) -> Target:
    if spec.refresh_token_ref is not None:
        return Target(spec.refresh_token_ref.name, spec.refresh_token_ref.key, repoint=False)
    return Target(f"{name}-bootstrap", BOOTSTRAP_KEY, repoint=True)


def secret_users(
    name: str, spec: GrantSpec, grants: list[dict[str, Any]], secret: str
) -> list[str]:
    """Who else uses Secret `secret`: other grants by name, and this grant's own Secrets that
    are not its bootstrap one (writing the token there would break the grant)."""
    own = {
        spec.client_secret_name: "its spec.clientSecretRef",
        spec.consumer.name: "its spec.accessTokenSecret",
        state_secret_name(name): "its state Secret",
    }
    users = [f"LucidGrant {name} ({own[secret]})"] if secret in own else []
    for grant in grants:
        other = str((grant.get("metadata") or {}).get("name") or "")
        if other == name:
            continue
        try:
            other_spec: GrantSpec | SpecError = parse_spec(grant.get("spec"))
        except SpecError as exc:
            other_spec = exc
        if secret in referenced_secrets(other, other_spec):
            users.append(f"LucidGrant {other}")
    return users


async def choose_target(
    kube: Kube, namespace: str, name: str, spec: GrantSpec, repoint: bool
) -> Target:
    """The grant's bootstrap Secret, unless another grant uses it: then `<name>-bootstrap` with
    `--patch-grant`, or a refusal that says so."""
    grants = (await kube.request("GET", grants_path(namespace))).get("items") or []
    target = target_of(name, spec)
    users = secret_users(name, spec, grants, target.secret)
    if users and repoint and not target.repoint:
        target = Target(f"{name}-bootstrap", BOOTSTRAP_KEY, repoint=True)
        users = secret_users(name, spec, grants, target.secret)
    if users:
        fix = (
            "rename it"
            if target.repoint
            else f"rerun with --patch-grant to use Secret {name}-bootstrap instead"
        )
        raise AuthorizeError(
            f"Secret {namespace}/{target.secret} is also used by {', '.join(users)}: writing a "
            f"refresh token there would break it; {fix}"
        )
    return target


def secret_manifest(namespace: str, target: Target, refresh_token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        # Marked, or the operator would not read it (SecretNotMarked).
        "metadata": {
            "name": target.secret,
            "namespace": namespace,
            "labels": {LABEL_CLIENT: "true"},
        },
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


def patch_command(namespace: str, name: str, target: Target) -> str:
    """The `kubectl patch` that points the grant at `target`: one line, valid JSON, quoted
    for a POSIX shell."""
    patch = json.dumps(grant_patch(target), separators=(",", ":"))
    return f"kubectl patch lucidgrant {name} -n {namespace} --type merge -p {shlex.quote(patch)}"


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
        # Browsers may resolve localhost to either address: a port another process holds on
        # one of them would hand it the code. A host without ::1 cannot send a browser there.
        for host in ("127.0.0.1", "::1"):
            try:
                await web.TCPSite(self._runner, host, port).start()
            except OSError as exc:
                if host == "::1" and exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                    continue
                await self.stop()
                raise AuthorizeError(
                    f"cannot listen on [{host}]:{port} ({exc.strerror or exc}): another process "
                    "may be waiting for the callback there; stop it or choose another --port "
                    "(and register http://localhost:PORT/callback with the Lucid app)"
                ) from None

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
            raise AuthorizeError(
                f"--client-id needs the client secret: --client-secret-file or {CLIENT_SECRET_ENV}"
            )
        return ClientCredentials(opts.client_id, opts.client_secret)
    creds = client_credentials(
        await kube.get(secret_path(namespace, spec.client_secret_name)), spec
    )
    if creds is None:
        raise AuthorizeError(
            f"the client Secret {spec.client_secret_name!r} is missing, lacks keys "
            f"{spec.client_id_key}/{spec.client_secret_key} or is not labelled "
            f"lucidgrant.dev/client=true; give --client-id and "
            f"--client-secret-file (or {CLIENT_SECRET_ENV})"
        )
    return creds


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
        body["metadata"]["labels"][LABEL_MANAGED_BY] = "lucidgrant-cli"
        await kube.create(secret_path(namespace), body)
    else:
        patch = {"metadata": {"labels": {LABEL_CLIENT: "true"}}, "data": {target.key: encoded}}
        await kube.patch(path, patch)


async def authorize(opts: AuthorizeOptions) -> None:
    """The whole flow; raises AuthorizeError with a message for the person."""
    namespace = opts.namespace or current_namespace(opts.kubeconfig, opts.context)
    label = f"{namespace}/{opts.name}"
    try:
        kube = await Kube.connect(opts.kubeconfig, opts.context)
    except KubeConfigError as exc:
        raise AuthorizeError(str(exc)) from None
    try:
        spec = await _read_grant(kube, namespace, opts.name)
        creds = await _credentials(kube, namespace, spec, opts)
        target = await choose_target(kube, namespace, opts.name, spec, opts.patch_grant)
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
        if target.repoint and not opts.patch_grant:
            _err(_repoint_hint(namespace, opts.name, target))
            return
        if target.repoint:
            await kube.patch(grant_path(namespace, opts.name), grant_patch(target))
            _err(f"Pointed LucidGrant {label} at it (spec.authorization).")
        _err(
            "The operator adopts it when its watch sees the change; follow it with: "
            f"kubectl lucidgrant status {opts.name} -n {namespace}"
        )
    except KubeError as exc:
        raise AuthorizeError(f"Kubernetes API: {exc}") from None
    finally:
        await kube.close()


def _repoint_hint(namespace: str, name: str, target: Target) -> str:
    return (
        f"LucidGrant {namespace}/{name} does not read Secret {target.secret}: nothing happens "
        "until it does. Point it there with this command (or rerun with --patch-grant):\n  "
        + patch_command(namespace, name, target)
    )


def authorize_options(fn: F) -> F:
    """The click arguments and options of `authorize`, shared by both command lines."""
    decorators = [
        click.argument("name"),
        kube_options,
        click.option(
            "--client-id",
            help="The Lucid client id, when you cannot read the grant's client Secret. The "
            f"secret then comes from --client-secret-file, {CLIENT_SECRET_ENV} or a prompt.",
        ),
        click.option(
            "--client-secret-file",
            type=click.File("r"),
            help="A file holding the Lucid client secret ('-' for stdin).",
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
            "refreshTokenSecretRef, or when another grant uses its Secret.",
        ),
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


def client_secret_of(client_id: str | None, secret_file: IO[str] | None) -> str | None:
    """The client secret for --client-id: the file, else the environment, else a prompt."""
    if not client_id:
        return None
    if secret_file is not None:
        return secret_file.read().strip() or None
    from_env = os.environ.get(CLIENT_SECRET_ENV, "").strip()
    if from_env:
        return from_env
    return getpass.getpass("Lucid client secret: ").strip() or None


def run_authorize(
    name: str,
    namespace: str | None,
    kubeconfig: str | None,
    context: str | None,
    client_id: str | None,
    client_secret_file: Any,
    lucid_app_url: str,
    lucid_api_url: str,
    port: int,
    no_browser: bool,
    timeout: float,
    dry_run: bool,
    patch_grant: bool,
) -> None:
    """The body of both `authorize` commands."""
    opts = AuthorizeOptions(
        name=name,
        namespace=namespace or current_namespace(kubeconfig, context),
        kubeconfig=kubeconfig,
        context=context,
        client_id=client_id,
        client_secret=client_secret_of(client_id, client_secret_file),
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
        fail(str(exc))
