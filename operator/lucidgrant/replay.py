"""The start-up replay of the write-ahead log (wal.py): what a killed process had from Lucid but
had not stored yet goes into the state Secret before this process refreshes anything.

Every record is checked against the grant's state Secret first: a Secret gone (garbage
collected with its grant) or owned by another grant UID (deleted and created again) drops the
record, and a Secret that holds the record's token, or a newer one, is left alone. The write
is a compare-and-swap, so a token another replica stores meanwhile is never overwritten. (The
operator's RBAC has no `get` on grants: the Secret's owner reference names the grant's UID.)"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from enum import StrEnum

from lucidgrant.kube import ConflictError, KubeError, error_text
from lucidgrant.store import StateStore
from lucidgrant.wal import Rotation, RotationLog, should_replay

log = logging.getLogger(__name__)

RETRY_CAP = 10.0
# How long a replica that just took the lease doubts an invalid_grant: the old leader's
# container, if only it was killed, restarts (kubelet: at once, then after 10 s, 20 s, ...)
# and replays its log within this window.
HANDOVER_WINDOW = 60.0


class Replayed(StrEnum):
    STORED = "stored"
    ALREADY_STORED = "already stored, or a newer token is"
    GRANT_GONE = "dropped: the grant (or its state Secret) no longer exists"


def handover_window_left(
    now: float, leading_since: float | None, window: float = HANDOVER_WINDOW
) -> float:
    """Seconds during which an invalid_grant is not believed yet (0: believe it)."""
    if leading_since is None:
        return 0.0
    return max(0.0, leading_since + window - now)


async def replay_one(rotation: Rotation, store: StateStore) -> Replayed:
    while True:
        state = await store.read(rotation.namespace, rotation.name)
        # The state Secret belongs to its grant (owner reference): gone with it, or owned by
        # a grant of the same name created since, it is not where this rotation goes.
        if state is None or state.owner_uid != rotation.uid:
            return Replayed.GRANT_GONE
        if not should_replay(rotation, state):
            return Replayed.ALREADY_STORED
        try:
            await store.put_rotation(rotation, state.resource_version)
            return Replayed.STORED
        except ConflictError:
            continue  # written meanwhile: decide again on what it holds now


async def replay(
    rotations: Iterable[Rotation],
    wal: RotationLog,
    store: StateStore,
    *,
    retry_delay: float = 0.5,
) -> None:
    """Replay each rotation until it is stored or known not to be needed; an API server that
    is away is waited for (nothing else could be done without it either). A shutdown meanwhile
    leaves the rest in the log for the next start."""
    for rotation in rotations:
        attempt = 0
        while True:
            try:
                outcome = await replay_one(rotation, store)
                break
            except (KubeError, OSError) as exc:
                attempt += 1
                log.warning(
                    "write-ahead log: replaying grant %s/%s failed (attempt %d): %s; retrying",
                    rotation.namespace,
                    rotation.name,
                    attempt,
                    error_text(exc),
                )
                await store.sleep(min(retry_delay * 2 ** (attempt - 1), RETRY_CAP))
        log.info("write-ahead log: grant %s/%s: %s", rotation.namespace, rotation.name, outcome)
        wal.mark_stored(rotation)
