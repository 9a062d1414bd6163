"""The consumer Secret: the access token where pods mount it. Written after the state Secret,
never before (a lost access token costs a refresh; a lost refresh token costs a person).

The operator creates the Secret (owned by the grant) if absent, and otherwise merges only its
own keys, so that keys a person keeps there survive. It refuses Secrets that are not its to
write: state Secrets, and Secrets another grant or another controller owns. A person lets a
grant write into an existing Secret by labelling it as the operator labels the ones it creates
(`opt_in_command`): a label, not an annotation, so that the Secret watch sees it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lucidgrant.cache import SecretReader
from lucidgrant.grant import ConsumerSecret, GrantSpec
from lucidgrant.kube import ConflictError, KubeClient
from lucidgrant.names import (
    ANN_CONSUMER,
    ANN_GRANT,
    GROUP,
    KIND,
    LABEL_GRANT,
    LABEL_ROLE,
    ROLE_ACCESS_TOKEN,
    ROLE_CLIENT,
    ROLE_STATE,
    STATE_SUFFIX,
    Reason,
    grant_label,
    secret_path,
)
from lucidgrant.secretdata import b64
from lucidgrant.state_secret import GrantState, owner_reference
from lucidgrant.store import StateStore
from lucidgrant.timing import rfc3339


def consumer_conflict(
    secret: Mapping[str, Any], grant: Mapping[str, Any], spec: GrantSpec
) -> str | None:
    """Why the operator must not write into an existing Secret, or None if it may: only a
    Secret this grant created (owner UID checked) or one a person opted in by labels, and
    never a non-Opaque, state, client or bootstrap Secret."""
    meta = secret.get("metadata") or {}
    gmeta = grant["metadata"]
    labels = meta.get("labels") or {}
    if secret.get("type", "Opaque") != "Opaque":
        return f"it is of type {secret.get('type')!r}, and only Opaque Secrets are written"
    if labels.get(LABEL_ROLE) == ROLE_STATE:
        return "it is a lucidgrant state Secret"
    bootstrap = spec.bootstrap_ref.name if spec.bootstrap_ref else None
    if labels.get(LABEL_ROLE) == ROLE_CLIENT or meta.get("name") in (
        spec.client_secret_name,
        bootstrap,
    ):
        return "it is a client or bootstrap Secret, which the operator only reads"
    owners = meta.get("ownerReferences") or []
    if any(ref.get("uid") == gmeta.get("uid") for ref in owners):
        return None
    for ref in owners:
        if ref.get("kind") == KIND or ref.get("controller"):
            return f"it is owned by {ref.get('kind')} {ref.get('name')}"
    if all(labels.get(k) == v for k, v in _opt_in_labels(gmeta["name"]).items()):
        return None
    return (
        "this grant did not create it; to let the grant write into it, label it: "
        f"`{opt_in_command(gmeta['namespace'], str(meta.get('name')), gmeta['name'])}`"
    )


def _opt_in_labels(grant_name: str) -> dict[str, str]:
    return {LABEL_ROLE: ROLE_ACCESS_TOKEN, LABEL_GRANT: grant_label(grant_name)}


def opt_in_command(namespace: str, name: str, grant_name: str) -> str:
    labels = " ".join(f"{k}={v}" for k, v in _opt_in_labels(grant_name).items())
    return f"kubectl label secret {name} -n {namespace} {labels}"


def consumer_data(
    consumer: ConsumerSecret, access_token: str, expires_at: float, token_type: str
) -> dict[str, str]:
    data = {
        consumer.access_token_key: b64(access_token),
        consumer.expires_at_key: b64(rfc3339(expires_at)),
        consumer.token_type_key: b64(token_type),
    }
    if consumer.authorization_key:
        data[consumer.authorization_key] = b64(f"Bearer {access_token}")
    return data


@dataclass(frozen=True)
class ConsumerResult:
    """`written`: the Secret holds the stored access token. `problem`: why it cannot. `again`:
    a write lost a race, run the grant again now. `state`: the state Secret, if it changed."""

    written: bool = False
    problem: tuple[Reason, str] | None = None
    again: bool = False
    state: GrantState | None = None


class ConsumerSecrets:
    def __init__(
        self,
        kube: KubeClient,
        secrets: SecretReader,
        store: StateStore,
        operator_namespace: str | None = None,
    ) -> None:
        self.kube = kube
        self.operator_namespace = operator_namespace
        self.secrets = secrets
        self.store = store

    async def sync(
        self, grant: Mapping[str, Any], spec: GrantSpec, state: GrantState | None
    ) -> ConsumerResult:
        """Make the consumer Secret hold the stored access token (after a refresh, or when it
        was deleted, renamed or tampered with); remove an old owned one after a rename."""
        if state is None or not state.access_token or state.access_expires_at is None:
            return ConsumerResult()
        meta = grant["metadata"]
        namespace, uid = meta["namespace"], str(meta.get("uid", ""))
        consumer = spec.consumer
        if ours := sorted(k for k in consumer.labels if k.startswith(f"{GROUP}/")):
            # The operator's labels say what a Secret is to it; asked for in the spec, one could
            # mark a Secret it writes as a client Secret for another grant to read (whose
            # web-flow link shows client_id to anyone): only a person marks one.
            return ConsumerResult(problem=(Reason.INVALID_SPEC, _own_label(ours[0])))
        if why := self._forbidden(namespace, consumer.name):
            return ConsumerResult(problem=_conflict(consumer.name, why))
        existing = await self.secrets.get(namespace, consumer.name)
        if existing is not None and (why := consumer_conflict(existing, grant, spec)):
            return ConsumerResult(problem=_conflict(consumer.name, why))
        data = consumer_data(
            consumer, state.access_token, state.access_expires_at, state.token_type
        )
        current = (existing or {}).get("data") or {}
        if existing is None or any(current.get(k) != v for k, v in data.items()):
            try:
                written = await self._write(grant, consumer, existing, data)
            except ConflictError:
                return ConsumerResult(again=True)
            self.secrets.cache.observe_secret(written)
            if why := consumer_conflict(written, grant, spec):
                # It appeared between our read and write, owned by someone else.
                return ConsumerResult(problem=_conflict(consumer.name, why))
        if state.consumer_name == consumer.name:
            return ConsumerResult(written=True)
        await self._forget(namespace, uid, state.consumer_name)
        saved = await self.store.annotate(
            namespace, meta["name"], None, {ANN_CONSUMER: consumer.name}
        )
        return ConsumerResult(written=True, state=saved)

    def _forbidden(self, namespace: str, name: str) -> str | None:
        """Secrets no grant may write, whether they exist yet or not."""
        if namespace == self.operator_namespace:
            return "it is in the operator's own namespace, where no grant may write"
        if name.endswith(STATE_SUFFIX):
            return f"names ending in {STATE_SUFFIX!r} are reserved for state Secrets"
        return None

    async def _write(
        self,
        grant: Mapping[str, Any],
        consumer: ConsumerSecret,
        existing: Mapping[str, Any] | None,
        data: dict[str, str],
    ) -> dict[str, Any]:
        """Create the Secret (owned by the grant) if absent, else merge only our keys."""
        meta = grant["metadata"]
        namespace = meta["namespace"]
        labels = {**consumer.labels, **_opt_in_labels(meta["name"])}
        annotations = {**consumer.annotations, ANN_GRANT: meta["name"]}
        if existing is None:
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {
                    "name": consumer.name,
                    "namespace": namespace,
                    "labels": labels,
                    "annotations": annotations,
                    "ownerReferences": [owner_reference(grant)],
                },
                "data": data,
            }
            try:
                return await self.kube.create(secret_path(namespace), body)
            except ConflictError:
                # It exists after all (created meanwhile, or outside the watch's selection):
                # forget what the cache said and check it before any write.
                self.secrets.cache.secrets.pop((namespace, consumer.name), None)
                raise
        patch = {
            "metadata": {"labels": labels, "annotations": annotations},
            "data": data,
        }
        return await self.kube.patch(secret_path(namespace, consumer.name), patch)

    async def _forget(self, namespace: str, grant_uid: str, old: str | None) -> None:
        """After a rename, delete the old Secret if this grant owns it."""
        if not old:
            return
        secret = await self.secrets.get(namespace, old)
        owned = any(
            ref.get("uid") == grant_uid
            for ref in (secret or {}).get("metadata", {}).get("ownerReferences") or []
        )
        if secret is not None and owned:
            await self.kube.delete(secret_path(namespace, old))


def _own_label(key: str) -> str:
    return (
        f"spec.accessTokenSecret.labels: Invalid value: {key!r}: labels under {GROUP}/ are the "
        "operator's (one of them marks a Secret for lucidgrant to read, which only a person may "
        "do, and the access-token Secret is one the operator writes); remove the label."
    )


def _conflict(name: str, why: str) -> tuple[Reason, str]:
    return (
        Reason.SECRET_CONFLICT,
        f"Secret {name!r} (spec.accessTokenSecret.name) cannot be written: {why}. Set "
        "spec.accessTokenSecret.name to a Secret this grant may write (a new name: the "
        "operator creates it).",
    )
