"""What the operator-hosted authorization flow needs from the operator (`FlowHost`, which
runtime.py implements), and what one callback does under the grant's refresh lock
(`Redemption`): check that the grant still wants this authorization, record the state as used,
exchange the code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from lucidgrant.authstate import StateClaims, StateError, record_use
from lucidgrant.cache import GrantRecord, Key
from lucidgrant.decide import missing_scopes
from lucidgrant.grant import GrantSpec
from lucidgrant.lucid_answers import ClientCredentials, TokenSet
from lucidgrant.names import ANN_USED_STATES
from lucidgrant.state_secret import GrantState


class FlowRefusedError(Exception):
    """The grant does not want this authorization (any more); the message is safe to show."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def person_needed(spec: GrantSpec, state: GrantState) -> bool:
    """What the state Secret says, under the lock: no live refresh token, or one that lacks
    scopes the spec asks for. (The status can lag behind it by a reconcile.)"""
    return not state.refresh_token or bool(state.dead_reason) or bool(missing_scopes(spec, state))


class FlowHost(Protocol):
    """What the flow needs from the operator, and no more."""

    def grant(self, key: Key) -> GrantRecord | None:
        """The grant as the operator's cache has it."""

    async def client_credentials(self, key: Key) -> ClientCredentials | None: ...

    async def exchange_code(
        self, creds: ClientCredentials, code: str, redirect_uri: str
    ) -> TokenSet:
        """On the flow's own connection pool."""

    async def client_accepted(self, creds: ClientCredentials) -> bool:
        """Whether Lucid takes the pair as a client's (one introspection, on the flow's pool);
        raises TransientError when Lucid does not answer."""

    async def authorized(self, key: Key, redemption: Redemption, by: str | None) -> None:
        """Under the grant's refresh lock: `redemption.check`, write its annotations,
        `redemption.exchange`, store the new grant; wake the grant. Raises what `redemption`
        raises, or KeyError, LockBusyError, KubeError or OSError when it could not store."""

    async def state_key(self) -> bytes:
        """The HMAC key of `state` (authstate.load_state_key)."""


class Redemption:
    """One callback's work under the grant's lock (refresh.Redemption)."""

    def __init__(
        self,
        host: FlowHost,
        claims: StateClaims,
        creds: ClientCredentials,
        code: str,
        redirect_uri: str,
        clock: Callable[[], float],
    ) -> None:
        self.host = host
        self.claims = claims
        self.creds = creds
        self.code = code
        self.redirect_uri = redirect_uri
        self.clock = clock

    async def check(self, locked: GrantState) -> dict[str, str | None]:
        claims = self.claims
        label = f"{claims.namespace}/{claims.name}"
        record = self.host.grant((claims.namespace, claims.name))
        meta = record.body["metadata"] if record is not None else {}
        if record is None or meta.get("deletionTimestamp"):
            raise FlowRefusedError(400, f"LucidGrant {label} no longer exists.")
        if meta.get("uid") != claims.uid:
            raise FlowRefusedError(
                400, f"LucidGrant {label} was deleted and created again since this link was made."
            )
        if int(meta.get("generation") or 0) != claims.generation:
            raise FlowRefusedError(
                400, f"The spec of LucidGrant {label} changed since this link was made."
            )
        try:
            ledger = record_use(locked.used_states, claims, self.clock())
        except StateError as exc:
            raise FlowRefusedError(400, str(exc)) from None
        spec = record.spec()
        if not isinstance(spec, GrantSpec) or not person_needed(spec, locked):
            raise FlowRefusedError(
                409, f"LucidGrant {label} does not need a person now, so this link does nothing."
            )
        return {ANN_USED_STATES: ledger}

    async def exchange(self) -> TokenSet:
        return await self.host.exchange_code(self.creds, self.code, self.redirect_uri)
