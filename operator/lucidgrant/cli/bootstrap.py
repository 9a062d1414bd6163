"""Where `lucidgrant authorize` puts the refresh token it obtained: the grant's bootstrap
Secret (`spec.authorization.refreshTokenSecretRef`), or `<grant>-bootstrap` when the grant has
none or names a code Secret, and never a Secret another grant uses or this grant's own client,
access-token or state Secret. The Secret it writes is marked for lucidgrant, or the operator
would not read it; `--patch-grant` points the grant at a new one."""

from __future__ import annotations

import base64
import json
import shlex
from dataclasses import dataclass
from typing import Any

from lucidgrant.cache import referenced_secrets
from lucidgrant.cli.common import AuthorizeError
from lucidgrant.grant import GrantSpec, SpecError, parse_spec
from lucidgrant.kube import Kube
from lucidgrant.names import (
    LABEL_MANAGED_BY,
    LABEL_ROLE,
    ROLE_CLIENT,
    grants_path,
    secret_path,
    state_secret_name,
)

BOOTSTRAP_KEY = "refresh_token"


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
    grants = await kube.list(grants_path(namespace))
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
            "labels": {LABEL_ROLE: ROLE_CLIENT},
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


async def write_secret(kube: Kube, namespace: str, target: Target, refresh_token: str) -> None:
    encoded = base64.b64encode(refresh_token.encode()).decode()
    path = secret_path(namespace, target.secret)
    if await kube.get(path) is None:
        body = secret_manifest(namespace, target, refresh_token)
        del body["stringData"]
        body["data"] = {target.key: encoded}
        body["metadata"]["labels"][LABEL_MANAGED_BY] = "lucidgrant-cli"
        await kube.create(secret_path(namespace), body)
    else:
        patch = {"metadata": {"labels": {LABEL_ROLE: ROLE_CLIENT}}, "data": {target.key: encoded}}
        await kube.patch(path, patch)


def repoint_hint(namespace: str, name: str, target: Target) -> str:
    return (
        f"LucidGrant {namespace}/{name} does not read Secret {target.secret}: nothing happens "
        "until it does. Point it there with this command (or rerun with --patch-grant):\n  "
        + patch_command(namespace, name, target)
    )
