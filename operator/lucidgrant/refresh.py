"""Where a refresh happens: take the grant's single-flight lock, call Lucid, store the rotated
refresh token FIRST, and say what came of it. The same path exchanges an authorization code,
adopts a new bootstrap refresh token, and stores tokens the web flow obtained.

Nothing here decides what a failure means (failures.after_failure does) or writes status, the
consumer Secret or events (reconcile.py, consumer.py and publish.py do): this module is the
part that must never lose a rotated refresh token, kept small so that it can be read whole."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from lucidgrant.cache import Key
from lucidgrant.failures import RotatedElsewhereError
from lucidgrant.kube import ConflictError
from lucidgrant.lucid import LucidClient
from lucidgrant.lucid_answers import (
    ClientCredentials,
    ContradictedInvalidGrantError,
    InvalidGrantError,
    LucidError,
    PartialAnswerError,
    TokenSet,
)
from lucidgrant.names import (
    ANN_ACCESS_EXPIRES,
    ANN_BOOTSTRAP,
    ANN_REFRESH_EXPIRES,
    ANN_REFRESH_LIFETIME,
    ANN_REFRESH_SOURCE,
)
from lucidgrant.state_secret import REFRESH_TOKEN_LIFETIME, GrantState, token_annotations
from lucidgrant.store import LockBusyError, StateStore
from lucidgrant.timing import Sleep
from lucidgrant.wal import Rotation

# Waits for the rate limit's turn: 0 when it came, else how far off it is (not waited for).
Turn = Callable[[], Awaitable[float]]

# One invalid_grant alone is weak evidence (users report flaky ones): confirm after this pause.
CONFIRM_DELAY = 2.0
# The web flow waits for a running refresh to finish rather than failing the person's click.
LOCK_ATTEMPTS = 20
LOCK_RETRY_DELAY = 1.0


class Redemption(Protocol):
    """What the web flow hands `store_authorized`: a check and a code exchange."""

    async def check(self, locked: GrantState) -> dict[str, str | None]:
        """Under the lock: raise to refuse, else the annotations to write before Lucid."""

    async def exchange(self) -> TokenSet: ...


@dataclass(frozen=True)
class LockWait:
    """The lock was not taken: someone holds it until `until`, or our copy was stale (then
    `fresh` is the state Secret as it is now)."""

    until: float | None = None
    fresh: GrantState | None = None


@dataclass(frozen=True)
class Rotated:
    """Lucid answered and its tokens are stored; `state` is the state Secret after it."""

    state: GrantState


@dataclass(frozen=True)
class Failed:
    """Lucid refused or failed; the lock is still held (released by `release`). `adopting` is
    the digest of the bootstrap value still being adopted, None when the failure must be
    judged as a routine refresh's (after a partial answer has been stored)."""

    error: LucidError
    state: GrantState
    adopting: str | None


class Kept:
    """Lucid's answer as a rotation record (lucid.Keep): built and written to the write-ahead
    log the moment the answer is parsed, with nothing awaited since its last byte arrived, then
    handed to `save_rotation`. Every answer brings a new refresh token with a full lifetime
    (Lucid's documented one, or the one introspection showed when the grant was adopted); a
    partial answer's access token, if any, is unusable and counts as expired."""

    def __init__(
        self,
        store: StateStore,
        key: Key,
        uid: str,
        lifetime: float,
        adopting: str | None,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.key = key
        self.uid = uid
        self.lifetime = lifetime
        self.adopting = adopting
        self.clock = clock
        self._answer: TokenSet | PartialAnswerError | None = None
        self._rotation: Rotation | None = None

    def __call__(self, answer: TokenSet | PartialAnswerError) -> None:
        self._answer, self._rotation = answer, self._build(answer)
        self.store.log_rotation(self._rotation)

    def rotation(self, answer: TokenSet | PartialAnswerError) -> Rotation:
        """The record of `answer`: the one logged when it was parsed, or one built now."""
        if self._rotation is not None and self._answer is answer:
            return self._rotation
        return self._build(answer)

    def _build(self, answer: TokenSet | PartialAnswerError) -> Rotation:
        if isinstance(answer, PartialAnswerError):
            now = self.clock()
            ann: dict[str, str | None] = {ANN_ACCESS_EXPIRES: f"{now:.3f}"}
            refresh, access = answer.refresh_token, None
        else:
            now = answer.issued_at
            ann = token_annotations(answer, now + self.lifetime, "Issued")
            refresh, access = answer.refresh_token, answer.access_token
        if self.adopting is not None:
            ann[ANN_BOOTSTRAP] = self.adopting
        return Rotation(self.uid, *self.key, now, refresh, access, ann)


class Refresher:
    def __init__(
        self,
        store: StateStore,
        lucid: LucidClient,
        clock: Callable[[], float],
        *,
        confirm_delay: float = CONFIRM_DELAY,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.store = store
        self.lucid = lucid
        self.clock = clock
        self.confirm_delay = confirm_delay
        self.sleep = sleep

    async def lock(self, key: Key, state: GrantState) -> GrantState | LockWait:
        """One attempt at the grant's lock (compare-and-swap on the state Secret)."""
        try:
            return await self.store.acquire_lock(*key, state, self.clock())
        except LockBusyError as busy:
            return LockWait(until=busy.until)
        except ConflictError:
            return LockWait(fresh=await self.store.read(*key))

    async def refresh(
        self,
        key: Key,
        uid: str,
        locked: GrantState,
        creds: ClientCredentials,
        *,
        refresh_token: str | None = None,
        code: str | None = None,
        redirect_uri: str = "",
        adopting: str | None = None,
        turn: Turn | None = None,
    ) -> Rotated | Failed:
        """Refresh with `refresh_token`, or exchange `code`; `locked` holds the lock. An
        adoption then introspects the new refresh token, after `turn` (the rate limit's)."""
        lifetime = locked.refresh_lifetime or REFRESH_TOKEN_LIFETIME
        kept = Kept(self.store, key, uid, lifetime, adopting, self.clock)
        try:
            if code is not None:
                tokens = await self.lucid.exchange_code(creds, code, redirect_uri, kept)
            else:
                assert refresh_token is not None
                tokens = await self._confirmed(key, creds, refresh_token, adopting, kept)
        except PartialAnswerError as exc:
            # Lucid rotated: keep its refresh token, then fail like any transient error.
            saved = await self.store.save_rotation(kept.rotation(exc), locked.resource_version)
            return Failed(exc, saved, None)
        except LucidError as exc:
            return Failed(exc, locked, adopting)
        saved = await self.store.save_rotation(kept.rotation(tokens), locked.resource_version)
        if adopting is not None:
            saved = await self._introspect_expiry(key, creds, tokens, turn)
        return Rotated(saved)

    async def _confirmed(
        self,
        key: Key,
        creds: ClientCredentials,
        refresh_token: str,
        adopting: str | None,
        kept: Kept,
    ) -> TokenSet:
        """Refresh. One invalid_grant is weak evidence (users report flaky ones), so before it is
        believed: re-read the stored token (another writer may have rotated it), ask Lucid's
        introspection whether the token is alive (then the answer was flaky: retry later), and
        try once more after a short pause."""
        try:
            return await self.lucid.refresh(creds, refresh_token, kept)
        except InvalidGrantError:
            if adopting is None:
                stored = await self.store.read(*key)
                if stored and stored.refresh_token and stored.refresh_token != refresh_token:
                    raise RotatedElsewhereError("the stored refresh token changed") from None
            if await self._reported_alive(creds, refresh_token):
                raise ContradictedInvalidGrantError(
                    "Lucid answered invalid_grant for a refresh token its introspection "
                    "reports active"
                ) from None
            await self.sleep(self.confirm_delay)
            return await self.lucid.refresh(creds, refresh_token, kept)

    async def _reported_alive(self, creds: ClientCredentials, token: str) -> bool:
        """Whether introspection says the token is active; False when it cannot tell."""
        try:
            return (await self.lucid.introspect(creds, token)).active
        except LucidError:
            return False

    async def _save(self, key: Key, uid: str, locked: GrantState, tokens: TokenSet) -> GrantState:
        """Store tokens the web flow obtained: the rotated refresh token exists nowhere else."""
        kept = Kept(self.store, key, uid, REFRESH_TOKEN_LIFETIME, None, self.clock)
        return await self.store.save_rotation(kept.rotation(tokens), locked.resource_version)

    async def _introspect_expiry(
        self, key: Key, creds: ClientCredentials, tokens: TokenSet, turn: Turn | None = None
    ) -> GrantState:
        """A new grant learns its refresh token's real expiry from Lucid instead of assuming
        (it assumes when Lucid does not answer, or the rate limit's turn is too far off)."""
        expires = None
        if turn is None or await turn() == 0:
            with contextlib.suppress(LucidError):
                expires = (await self.lucid.introspect(creds, tokens.refresh_token)).expires_at
        ann = {ANN_REFRESH_SOURCE: "Introspection" if expires is not None else "Assumed"}
        if expires is not None:
            ann[ANN_REFRESH_EXPIRES] = f"{expires:.3f}"
            ann[ANN_REFRESH_LIFETIME] = f"{expires - tokens.issued_at:.3f}"
        return await self.store.annotate(*key, None, ann)

    async def release(
        self, key: Key, locked: GrantState, annotations: Mapping[str, str | None]
    ) -> GrantState | None:
        return await self.store.release_lock(*key, locked.resource_version, annotations)

    async def store_authorized(
        self,
        key: Key,
        uid: str,
        state: GrantState,
        creds: ClientCredentials,
        redemption: Redemption,
    ) -> GrantState:
        """Store a grant obtained outside the refresh path (the web flow) under the same lock
        as a refresh, so that it cannot race one; wait for a running refresh to end. Under the
        lock `redemption` checks that the grant still wants it (raising if not), the
        annotations it asks for are written, and only then is Lucid called."""
        for _ in range(LOCK_ATTEMPTS):
            taken = await self.lock(key, state)
            if isinstance(taken, GrantState):
                try:
                    marks = await redemption.check(taken)
                    taken = await self.store.annotate(*key, taken.resource_version, marks)
                    tokens = await redemption.exchange()
                except BaseException:
                    await self.release(key, taken, {})
                    raise
                await self._save(key, uid, taken, tokens)
                return await self._introspect_expiry(key, creds, tokens)
            if taken.until is not None:
                await self.sleep(LOCK_RETRY_DELAY)
                taken = LockWait(fresh=await self.store.read(*key))
            state = taken.fresh or state
        raise LockBusyError(self.clock())
