"""The write-ahead log of rotations: what a killed process leaves is read back whole or not at
all, the file is owner-only, stored rotations are dropped, and no token reaches a log line."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lucidgrant.wal import (
    FILE_NAME,
    Rotation,
    RotationLog,
    decode,
    latest_per_grant,
    parse,
    should_replay,
)

TOKENS = ("rt-SECRET-1", "at-SECRET-1", "rt-SECRET-2", "at-SECRET-2", "rt-SECRET-3")


def rotation(n: int, uid: str | None = None, at: float | None = None) -> Rotation:
    return Rotation(
        uid=uid or f"uid-{n}",
        namespace="analytics",
        name=f"grant-{n}",
        issued_at=1000.0 + n if at is None else at,
        refresh_token=f"rt-SECRET-{n}",
        access_token=f"at-SECRET-{n}",
        annotations={"lucidgrant.dev/last-refresh": f"{1000 + n}.000", "lucidgrant.dev/x": None},
    )


def reopened(directory: Path) -> list[Rotation]:
    """What a restarted process would replay, read without opening the log (one writer)."""
    return list(latest_per_grant(parse((directory / FILE_NAME).read_bytes())[0]).values())


async def written(directory: Path, *rotations: Rotation) -> bytes:
    """The log file after a process appended `rotations` and exited."""
    log = RotationLog(directory)
    log.open()
    for r in rotations:
        await log.append(r)
    log.close()
    return (directory / FILE_NAME).read_bytes()


async def test_round_trip_keeps_order_and_the_newest_per_grant(tmp_path: Path) -> None:
    log = RotationLog(tmp_path)
    assert log.open() == []
    first, second = rotation(1), rotation(2)
    newer = rotation(3, uid="uid-1", at=2000.0)
    for r in (first, second, newer):
        await log.append(r)
    log.close()
    assert reopened(tmp_path) == [newer, second]
    partial = Rotation("u", "ns", "n", 5.0, "rt-SECRET-p", None, {})
    log = RotationLog(tmp_path)
    log.open()
    await log.append(partial)
    assert partial in reopened(tmp_path)


async def test_a_torn_last_record_is_skipped_and_cut(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    content = await written(tmp_path, rotation(1), rotation(2))
    (tmp_path / FILE_NAME).write_bytes(content[: len(content) - 20])
    with caplog.at_level(logging.WARNING):
        log = RotationLog(tmp_path)
        assert log.open() == [rotation(1)]
    assert "torn" in caplog.text
    # The torn bytes are gone, so the next record starts on its own line.
    await log.append(rotation(3))
    assert reopened(tmp_path) == [rotation(1), rotation(3)]


async def test_a_record_with_a_wrong_checksum_is_skipped(tmp_path: Path) -> None:
    content = await written(tmp_path, rotation(1), rotation(2), rotation(3))
    (tmp_path / FILE_NAME).write_bytes(content.replace(b"SECRET-2", b"SECRET-9"))
    assert reopened(tmp_path) == [rotation(1), rotation(3)]


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"not a record",
        b"zzzzzzzz {}",
        b"00000000 {}",
    ],
)
def test_garbage_lines_do_not_decode(line: bytes) -> None:
    assert decode(line) is None


@pytest.mark.parametrize(
    "change",
    [
        {"v": 2},
        {"uid": 7},
        {"refresh_token": ""},
        {"access_token": 5},
        {"annotations": ["a"]},
        {"annotations": {"k": 1}},
        {"issued_at": "soon"},
    ],
)
def test_intact_lines_of_the_wrong_shape_do_not_decode(change: dict[str, object]) -> None:
    good = rotation(1).encode().rstrip(b"\n")
    data = {**json.loads(good.partition(b" ")[2]), **change}
    payload = json.dumps(data).encode()
    assert decode(good) == rotation(1)
    assert decode(b"%08x %s" % (zlib.crc32(payload), payload)) is None


async def test_files_are_owner_only_even_with_an_open_umask(tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    old = os.umask(0)
    try:
        log = RotationLog(directory, compact_at=0)
        log.open()
        await log.append(rotation(1))
        await log.append(rotation(2))
        log.mark_stored(rotation(1))  # a rewrite through a temporary file
    finally:
        os.umask(old)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / FILE_NAME).stat().st_mode) == 0o600
    assert sorted(p.name for p in directory.iterdir()) == [FILE_NAME]


def test_an_existing_wider_file_is_narrowed(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    path.write_bytes(rotation(1).encode())
    path.chmod(0o644)
    log = RotationLog(tmp_path)
    assert log.open() == [rotation(1)]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_the_file_is_emptied_when_nothing_is_pending(tmp_path: Path) -> None:
    log = RotationLog(tmp_path)
    log.open()
    await log.append(rotation(1))
    await log.append(rotation(2))
    log.mark_stored(rotation(1))
    assert rotation(2) in reopened(tmp_path)
    log.mark_stored(rotation(2))
    assert (tmp_path / FILE_NAME).stat().st_size == 0
    await log.append(rotation(3))
    assert reopened(tmp_path) == [rotation(3)]


async def test_a_large_file_is_compacted_to_what_is_pending(tmp_path: Path) -> None:
    log = RotationLog(tmp_path, compact_at=len(rotation(1).encode()))
    log.open()
    await log.append(rotation(1))
    await log.append(rotation(2))
    log.mark_stored(rotation(1))
    assert reopened(tmp_path) == [rotation(2)]
    await log.append(rotation(3))
    assert reopened(tmp_path) == [rotation(2), rotation(3)]


async def test_marking_an_older_rotation_keeps_the_newer_one(tmp_path: Path) -> None:
    log = RotationLog(tmp_path)
    log.open()
    old, new = rotation(1), rotation(2, uid="uid-1")
    await log.append(old)
    await log.append(new)
    log.mark_stored(old)
    assert reopened(tmp_path) == [new]


async def test_replayed_rotations_stay_until_stored(tmp_path: Path) -> None:
    """An operator that exits while the API server is down keeps the token for the next start."""
    await written(tmp_path, rotation(1))
    again = RotationLog(tmp_path)
    replayed = again.open()
    again.close()  # exits without storing
    assert reopened(tmp_path) == replayed == [rotation(1)]
    last = RotationLog(tmp_path)
    for r in last.open():
        last.mark_stored(r)
    assert reopened(tmp_path) == []


async def test_a_failed_write_leaves_no_half_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = RotationLog(tmp_path)
    log.open()
    await log.append(rotation(1))
    write = os.write

    def disk_full_halfway(fd: int, data: bytes) -> int:
        write(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full_halfway)
    with pytest.raises(OSError):
        await log.append(rotation(2))
    monkeypatch.undo()
    assert list(log.pending.values()) == [rotation(1)]
    await log.append(rotation(3))
    assert reopened(tmp_path) == [rotation(1), rotation(3)]


async def test_a_record_is_on_file_while_the_fsync_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write happens before the first await: a process killed during the fsync, which runs
    in a thread, still has the record; the event loop is not held by the fsync."""
    log = RotationLog(tmp_path)
    log.open()
    gate = threading.Event()
    fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        gate.wait(10)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    appending = asyncio.create_task(log.append(rotation(1)))
    await asyncio.sleep(0)  # one turn of the loop: the task runs up to its fsync
    assert reopened(tmp_path) == [rotation(1)]
    assert not appending.done()
    gate.set()
    await appending


async def test_no_token_in_any_log_line_or_repr(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        content = await written(tmp_path, rotation(1), rotation(2))
        corrupt = content.replace(b"SECRET-1", b"SECRET-3", 1)
        (tmp_path / FILE_NAME).write_bytes(corrupt + content[:30])
        log = RotationLog(tmp_path)
        log.open()
        log.mark_stored(rotation(2))
    text = caplog.text + repr(rotation(1)) + str(rotation(2))
    assert caplog.records, "the corrupt and torn records were reported"
    assert not [t for t in TOKENS if t in text]


@dataclass
class Stored:
    refresh_token: str | None
    rotated_at: float | None


@pytest.mark.parametrize(
    ("stored", "replay"),
    [
        (None, True),  # no state Secret yet
        (Stored(None, None), True),  # nothing stored
        (Stored("rt-SECRET-1", 1001.0), False),  # this rotation is stored
        (Stored("rt-SECRET-1", None), False),  # stored by a partial answer
        (Stored("rt-old", 1000.0), True),  # the stored token is the one it replaced
        (Stored("rt-old", None), True),
        (Stored("rt-newer", 1001.0), False),  # same moment, another token: keep the stored one
        (Stored("rt-newer", 1500.0), False),  # a newer authorization: never overwrite it
    ],
)
def test_should_replay(stored: Stored | None, replay: bool) -> None:
    assert should_replay(rotation(1), stored) is replay


@settings(max_examples=150, deadline=None)
@given(count=st.integers(1, 5), cut=st.floats(0.0, 1.0))
def test_any_truncation_yields_the_whole_records_before_it(count: int, cut: float) -> None:
    lines = [rotation(n).encode() for n in range(count)]
    content = b"".join(lines)
    point = int(len(content) * cut)
    rotations, corrupt, torn = parse(content[:point])
    whole = 0
    while whole < count and sum(map(len, lines[: whole + 1])) <= point:
        whole += 1
    assert rotations == [rotation(n) for n in range(whole)]
    assert corrupt == 0
    assert torn == point - sum(map(len, lines[:whole]))
