"""The first step of a reconcile: read what the decision needs about one grant, through the
watch cache, into a frozen `Snapshot` (decide.py). A routine refresh reads nothing from the API
server; an invalid, deleted or suspended grant reads no client or bootstrap Secret."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from lucidgrant.cache import Facts, GrantRecord, Key, SecretReader
from lucidgrant.decide import Snapshot
from lucidgrant.grant import GrantSpec
from lucidgrant.lucid_answers import ClientCredentials
from lucidgrant.names import REFRESH_NOW
from lucidgrant.secretdata import client_credentials, marked, secret_value
from lucidgrant.state_secret import StateConflict
from lucidgrant.store import StateStore


@dataclass(frozen=True)
class Client:
    """The client Secret as the snapshot needs it: usable credentials, whether the Secret
    exists (for the message), and its version (Lucid's rejection is remembered per version)."""

    creds: ClientCredentials | None = field(default=None, repr=False)
    found: bool = False
    rv: str | None = None
    missing: tuple[str, ...] = ()
    unmarked: tuple[str, str, str] | None = None


# The spec field that names the bootstrap Secret, by whether it holds a code.
_BOOTSTRAP_FIELD = {
    False: "spec.authorization.refreshTokenSecretRef.name",
    True: "spec.authorization.codeSecretRef.name",
}


class SnapshotReader:
    def __init__(self, secrets: SecretReader, store: StateStore) -> None:
        self.secrets = secrets
        self.store = store

    async def read(self, key: Key, record: GrantRecord, facts: Facts, now: float) -> Snapshot:
        """The grant at `now`, with `facts` (the record's, or those the caller revised)."""
        meta = record.body["metadata"]
        snap = Snapshot(
            now=now,
            spec=record.spec(),
            facts=facts,
            deleting=bool(meta.get("deletionTimestamp")),
            refresh_now=REFRESH_NOW in (meta.get("annotations") or {}),
            jitter=record.jitter,
        )
        spec = snap.spec
        if snap.deleting or not isinstance(spec, GrantSpec):
            return snap
        try:
            state = await self.store.current(record.body)  # created, empty, on first sight
        except StateConflict as exc:
            return replace(snap, state_conflict=str(exc))
        if spec.suspend:
            return replace(snap, state=state)
        client = await self.client(key[0], spec)
        unmarked = client.unmarked
        bootstrap = None
        if spec.bootstrap_ref is not None:
            ref = spec.bootstrap_ref
            secret = await self.secrets.get(key[0], ref.name)
            if secret is not None and not marked(secret):
                where = _BOOTSTRAP_FIELD[spec.code_ref is not None]
                unmarked = unmarked or (where, key[0], ref.name)
            else:
                bootstrap = secret_value(secret, ref.key) or None
        return replace(
            snap,
            state=state,
            client=client.creds,
            client_secret_found=client.found,
            client_keys_missing=client.missing,
            client_rv=client.rv,
            bootstrap=bootstrap,
            unmarked=unmarked,
        )

    async def client(self, namespace: str, spec: GrantSpec) -> Client:
        secret = await self.secrets.get(namespace, spec.client_secret_name)
        if secret is None:
            return Client()
        if not marked(secret):
            where = "spec.clientSecretRef.name"
            return Client(found=True, unmarked=(where, namespace, spec.client_secret_name))
        rv = str(secret["metadata"].get("resourceVersion", ""))
        keys = (spec.client_id_key, spec.client_secret_key)
        missing = tuple(k for k in keys if not secret_value(secret, k))
        return Client(client_credentials(secret, spec), True, rv, missing)
