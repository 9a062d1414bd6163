"""The write-ahead log on the refresh path, in process: a process killed while its store of a
rotated refresh token fails leaves the token in the log, and the next process, with the same
log directory, stores it before refreshing; the replay's decisions; and the doubt about an
invalid_grant right after a leader handover."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import pytest

from lucidgrant.kube import KubeError
from lucidgrant.lucid_answers import ClientCredentials
from lucidgrant.names import ANN_LOCK_HOLDER, ANN_ROTATED_AT, secret_path
from lucidgrant.names import state_secret_name as state_name
from lucidgrant.replay import HANDOVER_WINDOW, Replayed, handover_window_left, replay, replay_one
from lucidgrant.secretdata import b64
from lucidgrant.wal import FILE_NAME, Rotation, RotationLog

from .test_reconcile import Redeem
from .world import NS, World

STATE = secret_path(NS, state_name("g"))


class Killed(BaseException):
    """SIGKILL: nothing of the process runs after it (no `except Exception` catches it)."""


def kill_while_storing(world: World) -> None:
    """From Lucid's next answer on, the API server refuses state-Secret writes; the process is
    killed on the third retry of its store."""
    answered = world.refresh_calls()
    tries: list[str] = []

    def fault(method: str, path: str) -> None:
        if (method, path) == ("PATCH", STATE) and world.refresh_calls() > answered:
            tries.append(path)
            if len(tries) > 3:
                raise Killed
            raise ConnectionRefusedError("the API server is away")

    world.kube.fault = fault


def restarted(world: World, directory: Path | None) -> tuple[World, list[Rotation]]:
    """A new process over the same cluster and Lucid, with (or without) the log directory."""
    wal = RotationLog(directory) if directory else None
    pending = wal.open() if wal else []
    return World(wal, restart_of=world), pending


@pytest.mark.parametrize("partial", [False, True], ids=["answer", "partial-answer"])
@pytest.mark.parametrize("kept", [True, False], ids=["log-kept", "no-log"])
async def test_a_kill_while_storing_loses_nothing_when_the_log_is_kept(
    world: World, tmp_path: Path, kept: bool, partial: bool
) -> None:
    first = World(RotationLog(tmp_path), restart_of=world)
    assert first.store.wal is not None
    first.store.wal.open()
    first.authorized_grant()
    due = await first.reconcile()
    first.clock.now = due or 0
    first.lucid.partial = int(partial)
    kill_while_storing(first)
    with pytest.raises(Killed):
        await first.reconcile()
    live = world.lucid.live_refresh_token()
    assert world.state().refresh_token != live, "the store never happened"
    world.kube.fault = None

    second, pending = restarted(world, tmp_path if kept else None)
    if second.store.wal is not None:
        await replay(pending, second.store.wal, second.store)
    await second.reconcile()
    if kept:
        assert [r.refresh_token for r in pending] == [live]
        assert world.state().refresh_token == world.lucid.live_refresh_token() != live
        assert second.condition("Ready") == ("True", "Refreshed")
        assert (tmp_path / FILE_NAME).stat().st_size == 0
    else:
        assert second.condition("ReauthorizationRequired") == ("True", "InvalidGrant")
    await first.http.aclose()
    await second.http.aclose()


async def test_a_failing_log_does_not_stop_the_store(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "not-a-directory").write_text("")
    wal = RotationLog(tmp_path / "not-a-directory" / "wal")
    logged = World(wal, restart_of=world)
    logged.authorized_grant()
    await logged.reconcile()
    assert world.state().refresh_token == world.lucid.live_refresh_token()
    assert "write-ahead log" in caplog.text and "without it" in caplog.text
    await logged.http.aclose()


async def test_the_web_flow_logs_its_tokens_too(world: World, tmp_path: Path) -> None:
    wal = RotationLog(tmp_path)
    wal.open()
    logged = World(wal, restart_of=world)
    logged.authorized_grant()
    await logged.reconcile()
    live = world.lucid.grants[world.lucid.live_refresh_token()]
    tokens = await logged.reconciler.refresher.lucid.refresh(
        ClientCredentials("client-1", "secret-1"), live.refresh_token
    )
    appended: list[Rotation] = []
    append = wal.append

    async def spy(rotation: Rotation) -> None:
        appended.append(rotation)
        await append(rotation)

    wal.append = spy  # type: ignore[method-assign]
    await logged.reconciler.authorized((NS, "g"), Redeem(tokens), None)
    assert [r.refresh_token for r in appended] == [tokens.refresh_token]
    assert not wal.pending
    await logged.http.aclose()


# -- the replay's decisions ------------------------------------------------------------------


async def stored_grant(world: World) -> Rotation:
    world.authorized_grant()
    await world.reconcile()
    world.clock.now += 10
    return Rotation(
        world.grant()["metadata"]["uid"], NS, "g", world.clock.now, "rt-SECRET-NEW", None, {}
    )


async def test_a_missing_rotation_is_stored_and_the_dead_lock_dropped(world: World) -> None:
    rotation = await stored_grant(world)
    world.kube.put(STATE, lock(world.kube.objects[STATE], "killed-process"))
    assert await replay_one(rotation, world.store) is Replayed.STORED
    state = world.state()
    assert state.refresh_token == "rt-SECRET-NEW" and state.access_token is None
    assert state.rotated_at == rotation.issued_at
    assert state.lock_holder is None


def lock(secret: dict[str, Any], holder: str) -> dict[str, Any]:
    secret["metadata"]["annotations"][ANN_LOCK_HOLDER] = holder
    return secret


@pytest.mark.parametrize(
    "case", ["this-token", "a-newer-token", "another-grant", "state-secret-gone"]
)
async def test_nothing_is_written_when_not_needed(world: World, case: str) -> None:
    rotation = await stored_grant(world)
    state = world.kube.objects[STATE]
    if case == "this-token":
        rotation = Rotation(
            rotation.uid, NS, "g", rotation.issued_at, world.state().refresh_token or "", None
        )
        expected = Replayed.ALREADY_STORED
    elif case == "a-newer-token":
        state["metadata"]["annotations"][ANN_ROTATED_AT] = f"{rotation.issued_at + 1:.3f}"
        expected = Replayed.ALREADY_STORED
    elif case == "another-grant":  # deleted, and created again under the same name
        rotation = Rotation("uid-of-an-older-grant", NS, "g", rotation.issued_at, "rt-x", None)
        expected = Replayed.GRANT_GONE
    else:  # garbage collected with its deleted grant
        del world.kube.objects[STATE]
        expected = Replayed.GRANT_GONE
    calls = len(world.kube.calls)
    assert await replay_one(rotation, world.store) is expected
    assert [method for method, _ in world.kube.calls[calls:]] == ["GET"]


async def test_a_newer_token_stored_meanwhile_is_kept(world: World) -> None:
    rotation = await stored_grant(world)
    newer = copy.deepcopy(world.kube.objects[STATE])
    newer["metadata"]["annotations"][ANN_ROTATED_AT] = f"{rotation.issued_at + 1:.3f}"
    newer["data"]["refresh_token"] = b64("rt-newer")
    raced: list[str] = []

    def another_replica(method: str, path: str) -> None:
        if (method, path) == ("PATCH", STATE) and not raced:
            raced.append(path)
            world.kube.put(STATE, newer)  # lands between our read and our write

    world.kube.fault = another_replica
    assert await replay_one(rotation, world.store) is Replayed.ALREADY_STORED
    assert raced and world.state().refresh_token == "rt-newer"


async def test_the_replay_waits_out_the_api_server(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rotation = await stored_grant(world)
    wal = RotationLog(tmp_path)
    wal.open()
    await wal.append(rotation)
    failures = [ConnectionRefusedError(), KubeError("GET", STATE, 503, "ServiceUnavailable")] * 4

    def away(method: str, path: str) -> None:
        if failures:
            raise failures.pop()

    world.kube.fault = away
    slept = len(world.clock.slept)
    with caplog.at_level(logging.WARNING):
        await replay([rotation], wal, world.store)
    assert world.clock.slept[slept:] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert world.state().refresh_token == rotation.refresh_token
    assert not wal.pending and (tmp_path / FILE_NAME).stat().st_size == 0
    assert caplog.text.count("retrying") == 8


# -- a new leader doubts invalid_grant while the old one may still replay ------------------


@pytest.mark.parametrize("replayed", [True, False], ids=["old-leader-replays", "it-does-not"])
async def test_invalid_grant_right_after_taking_the_lease(world: World, replayed: bool) -> None:
    world.authorized_grant()
    due = await world.reconcile()
    # The old leader refreshed, was killed before storing, and this replica took the lease.
    old = world.lucid.grants[world.lucid.live_refresh_token()]
    tokens = await world.reconciler.refresher.lucid.refresh(
        ClientCredentials("client-1", "secret-1"), old.refresh_token
    )
    world.clock.now = due or 0
    world.reconciler.took_lease_at = world.clock.now
    retry = await world.reconcile()
    assert world.condition("ReauthorizationRequired") == ("False", "Authorized")
    assert world.state().dead_reason is None
    assert world.reconciler.cache.grants[(NS, "g")].facts.failures == 1
    assert retry is not None and retry >= world.reconciler.took_lease_at + HANDOVER_WINDOW
    if replayed:
        rotation = Rotation(
            world.grant()["metadata"]["uid"],
            NS,
            "g",
            tokens.issued_at,
            tokens.refresh_token,
            tokens.access_token,
        )
        assert await replay_one(rotation, world.store) is Replayed.STORED
    world.clock.now = retry
    await world.reconcile()
    if replayed:
        assert world.condition("Ready") == ("True", "Refreshed")
        assert world.state().refresh_token == world.lucid.live_refresh_token()
    else:
        assert world.condition("ReauthorizationRequired") == ("True", "InvalidGrant")


@pytest.mark.parametrize(
    ("now", "since", "left"),
    [(100.0, None, 0.0), (100.0, 90.0, 50.0), (150.0, 90.0, 0.0), (200.0, 90.0, 0.0)],
)
def test_handover_window(now: float, since: float | None, left: float) -> None:
    assert handover_window_left(now, since) == left
