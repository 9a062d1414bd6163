"""`lucidgrant authorize` (and `kubectl lucidgrant authorize`): the one-time authorization from a
person's laptop, without the operator's web flow.

It runs Lucid's authorization code flow with a loopback redirect
(`http://localhost:PORT/callback`, served on 127.0.0.1 and ::1 for the few minutes it takes),
exchanges the code itself and writes the refresh token into the grant's bootstrap Secret through
the current kubeconfig. The operator watches that Secret and adopts the new value at once.

Where it writes (cli/bootstrap.py): the Secret and key of
`spec.authorization.refreshTokenSecretRef`. A grant with `codeSecretRef` (or with no
`spec.authorization`) cannot take a refresh token there (its code is exchanged with the grant's
own redirectUri, not the loopback one), so the token goes to `<grant>-bootstrap` (key
`refresh_token`) and `--patch-grant` points the grant at it (without the flag the command
prints the one-line `kubectl patch` to run). It never writes into a Secret another grant uses,
nor into this grant's own client, access-token or state Secret.

Client credentials come from the grant's client Secret, or from `--client-id` with the secret
from `--client-secret-file`, LUCIDGRANT_CLIENT_SECRET or a hidden prompt: never from a flag,
which every user of the machine could read in `ps`. No token and no client secret is ever
printed, except the refresh token in the manifest that `--dry-run` prints to stdout, on
purpose.

The loopback receiver and the browser are cli/loopback.py's; for tests,
LUCIDGRANT_TEST_BROWSER=httpx makes the "browser" an HTTP client that follows the real redirect
chain (Lucid's consent, then the loopback callback) instead of opening a window."""

from __future__ import annotations

import asyncio
import getpass
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, TypeVar

import click
import httpx
import yaml

from lucidgrant.cli.bootstrap import (
    choose_target,
    grant_patch,
    repoint_hint,
    secret_manifest,
    write_secret,
)
from lucidgrant.cli.common import AuthorizeError, current_namespace, fail, kube_options, tell
from lucidgrant.cli.loopback import LoopbackReceiver, receive_code
from lucidgrant.flowpages import authorize_url
from lucidgrant.grant import GrantSpec, SpecError, parse_spec
from lucidgrant.kube import Kube, KubeConfigError, KubeError
from lucidgrant.lucid import DEFAULT_API_URL, DEFAULT_APP_URL, LucidClient
from lucidgrant.lucid_answers import ClientCredentials
from lucidgrant.lucid_answers import LucidError as LucidFailure
from lucidgrant.names import LABEL_ROLE, ROLE_CLIENT, grant_path, secret_path
from lucidgrant.secretdata import client_credentials

DEFAULT_PORT = 8765
DEFAULT_TIMEOUT = 300.0
CLIENT_SECRET_ENV = "LUCIDGRANT_CLIENT_SECRET"

F = TypeVar("F", bound=Callable[..., Any])


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
            f"{LABEL_ROLE}={ROLE_CLIENT}; give --client-id and "
            f"--client-secret-file (or {CLIENT_SECRET_ENV})"
        )
    return creds


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
            code = await receive_code(
                url, receiver, open_browser=opts.open_browser, timeout=opts.timeout
            )
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
            tell(
                "WARNING: the manifest below holds a live refresh token. Apply it or discard it; "
                "do not paste it anywhere else."
            )
            click.echo(yaml.safe_dump(secret_manifest(namespace, target, tokens.refresh_token)))
            if target.repoint:
                tell(repoint_hint(namespace, opts.name, target))
            return
        await write_secret(kube, namespace, target, tokens.refresh_token)
        tell(f"Wrote the new refresh token to Secret {namespace}/{target.secret} key {target.key}.")
        if target.repoint and not opts.patch_grant:
            tell(repoint_hint(namespace, opts.name, target))
            return
        if target.repoint:
            await kube.patch(grant_path(namespace, opts.name), grant_patch(target))
            tell(f"Pointed LucidGrant {label} at it (spec.authorization).")
        tell(
            "The operator adopts it when its watch sees the change; follow it with: "
            f"kubectl lucidgrant status {opts.name} -n {namespace}"
        )
    except KubeError as exc:
        raise AuthorizeError(f"Kubernetes API: {exc}") from None
    finally:
        await kube.close()


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
