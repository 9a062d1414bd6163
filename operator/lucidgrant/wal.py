"""The write-ahead log of token rotations: a local file that holds a rotated refresh token
from the moment Lucid answers until the state Secret has it.

Lucid rotates with no grace period, so between its answer and the API store the new refresh
token would otherwise exist only in memory; a container killed in that window (OOM, liveness
probe, crash) would lose the grant. The log lives in a pod-local directory (an emptyDir in
memory), survives a container restart, and is replayed at start-up.

Format: one record per line, `<crc32 as 8 hex digits> <JSON>\\n`, appended and fsync'ed before
the caller goes on. A line that lacks its newline (killed mid-write) or whose checksum does not
match is skipped, and said so without its content. The file is 0600 from its creation."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

FILE_NAME = "rotations.wal"
_VERSION = 1
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_CLOEXEC


@dataclass(frozen=True)
class Rotation:
    """What is needed to store one rotation, and nothing more: which grant (the UID tells a
    re-created grant of the same name apart), when Lucid was asked (the order of rotations),
    the tokens, and the non-secret state-Secret annotations that go with them."""

    uid: str
    namespace: str
    name: str
    issued_at: float
    refresh_token: str
    access_token: str | None
    annotations: Mapping[str, str | None] = field(default_factory=dict)

    def __repr__(self) -> str:  # never print tokens, even in a debugger or a traceback
        return f"Rotation({self.namespace}/{self.name}, uid={self.uid}, at={self.issued_at:.3f})"

    def encode(self) -> bytes:
        payload = json.dumps(
            {
                "v": _VERSION,
                "uid": self.uid,
                "namespace": self.namespace,
                "name": self.name,
                "issued_at": self.issued_at,
                "refresh_token": self.refresh_token,
                "access_token": self.access_token,
                "annotations": dict(self.annotations),
            },
            separators=(",", ":"),
        ).encode()
        return b"%08x %s\n" % (zlib.crc32(payload), payload)


def decode(line: bytes) -> Rotation | None:
    """One line (without its newline) back into a Rotation; None if it is not a whole, intact
    record of this version."""
    crc, _, payload = line.partition(b" ")
    try:
        if len(crc) != 8 or int(crc, 16) != zlib.crc32(payload):
            return None
        data = json.loads(payload)
        annotations = data["annotations"]
        rotation = Rotation(
            uid=data["uid"],
            namespace=data["namespace"],
            name=data["name"],
            issued_at=float(data["issued_at"]),
            refresh_token=data["refresh_token"],
            access_token=data["access_token"],
            annotations=annotations,
        )
    except (ValueError, KeyError, TypeError):
        return None
    strings = (rotation.uid, rotation.namespace, rotation.name, rotation.refresh_token)
    if (
        data.get("v") != _VERSION
        or not all(isinstance(s, str) and s for s in strings)
        or not isinstance(rotation.access_token, str | None)
        or not isinstance(annotations, dict)
        or not all(isinstance(v, str | None) for v in annotations.values())
    ):
        return None
    return rotation


def latest_per_grant(rotations: Iterable[Rotation]) -> dict[str, Rotation]:
    """The newest rotation of each grant UID (the older ones' tokens are dead by then)."""
    latest: dict[str, Rotation] = {}
    for rotation in rotations:
        known = latest.get(rotation.uid)
        if known is None or rotation.issued_at >= known.issued_at:
            latest[rotation.uid] = rotation
    return latest


def parse(content: bytes) -> tuple[list[Rotation], int, int]:
    """The intact records of a log file in order, the number of corrupt lines skipped, and the
    length of a torn last record (0 when the file ends with a newline)."""
    lines = content.split(b"\n")
    torn = len(lines.pop())  # what follows the last newline: empty unless killed mid-write
    rotations: list[Rotation] = []
    corrupt = 0
    for line in lines:
        rotation = decode(line)
        if rotation is None:
            corrupt += 1
        else:
            rotations.append(rotation)
    return rotations, corrupt, torn


class StoredState(Protocol):
    """What the state Secret holds about the last stored rotation: its refresh token, and when
    Lucid was asked for it (`issued_at` of the rotation that stored it)."""

    @property
    def refresh_token(self) -> str | None: ...

    @property
    def rotated_at(self) -> float | None: ...


def should_replay(rotation: Rotation, stored: StoredState | None) -> bool:
    """Whether a logged rotation must still be written into the state Secret: only if the
    Secret does not hold its token already and holds nothing newer. A newer stored token (a
    person authorized again, another replica refreshed after a handover) is never replaced by
    an older one."""
    if stored is None or stored.refresh_token is None:
        return True
    if stored.refresh_token == rotation.refresh_token:
        return False
    return stored.rotated_at is None or rotation.issued_at > stored.rotated_at


class RotationLog:
    """The log file in `directory`, used from one thread (the event loop).

    A record is written with one `write` on the loop itself: from then on a killed process
    still has it (the kernel holds it), and that takes microseconds. Only the fsync, which on a
    disk can take milliseconds and matters only if the machine itself stops, runs in a thread.

    `pending` holds the rotations appended or replayed and not yet marked stored. The file
    holds all of them, and possibly some already stored ones, which replay recognises by
    comparing with the state Secret (`should_replay`): a stored rotation costs no rewrite, and
    the file is truncated whenever nothing is pending (the common case: refreshes store within
    milliseconds) or rewritten when it outgrows `compact_at` bytes."""

    def __init__(self, directory: Path | str, *, compact_at: int = 256 * 1024) -> None:
        self.directory = Path(directory)
        self.path = self.directory / FILE_NAME
        self.compact_at = compact_at
        self.pending: dict[str, Rotation] = {}
        self._fd: int | None = None
        self._size = 0

    # -- start-up ------------------------------------------------------------------------

    def open(self) -> list[Rotation]:
        """Create the directory and file (owner-only), read what a previous process left, and
        return the newest rotation of each grant, for the caller to replay and then mark
        stored (or dropped)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.directory.stat().st_uid == os.geteuid():
            os.chmod(self.directory, 0o700)  # a mount point may come wider; narrow it if ours
        try:
            content = self.path.read_bytes()
        except FileNotFoundError:
            content = b""
        rotations, corrupt, torn = parse(content)
        if corrupt or torn:
            log.warning(
                "write-ahead log %s: skipped %d corrupt record(s) and %d byte(s) of a torn "
                "last record; the intact records are replayed",
                self.path,
                corrupt,
                torn,
            )
        self.pending = latest_per_grant(rotations)
        self._rewrite()
        if self.pending:
            log.info("write-ahead log %s: %d rotation(s) to replay", self.path, len(self.pending))
        return list(self.pending.values())

    def close(self) -> None:
        """Close the file; what is pending stays in it for the next start."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- the refresh path ----------------------------------------------------------------

    def write(self, rotation: Rotation) -> None:
        """Put one rotation in the file, with one `write` and no await: from then on a killed
        process still has it (the kernel holds it). A failed write leaves no half record."""
        line = rotation.encode()
        fd = self._file()
        try:
            self._write(fd, line)
        except OSError:
            os.ftruncate(fd, self._size)  # so that the next record starts on a clean line
            raise
        self._size += len(line)
        self.pending[rotation.uid] = rotation

    async def append(self, rotation: Rotation) -> None:
        """Log one rotation (unless `write` did already) and sync it to the device before the
        return."""
        if self.pending.get(rotation.uid) is not rotation:
            self.write(rotation)
        # A duplicate descriptor: a compaction may close ours while the thread syncs.
        synced = os.dup(self._file())
        try:
            await asyncio.to_thread(os.fsync, synced)
        finally:
            os.close(synced)

    def mark_stored(self, rotation: Rotation) -> None:
        """The rotation is in the state Secret, or its grant is gone: it need not be replayed."""
        if self.pending.get(rotation.uid) != rotation:
            return
        del self.pending[rotation.uid]
        if not self.pending or self._size > self.compact_at:
            try:
                self._rewrite()
            except OSError as exc:  # harmless: replay skips what the state Secret holds
                log.warning("write-ahead log %s not compacted: %s", self.path, exc.strerror)

    # -- the file ------------------------------------------------------------------------

    def _file(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, _FILE_FLAGS, 0o600)
            os.fchmod(self._fd, 0o600)
            self._size = os.fstat(self._fd).st_size
        return self._fd

    def _write(self, fd: int, data: bytes) -> None:
        written = os.write(fd, data)
        if written != len(data):  # a full disk; a regular file writes all or fails otherwise
            raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")

    def _rewrite(self) -> None:
        """Make the file hold exactly the pending rotations: truncate it when none is left,
        otherwise write a temporary file and rename it over the log, so that a kill at any
        moment leaves one whole version. (Rare, and small: done on the spot.)"""
        if not self.pending:
            os.ftruncate(self._file(), 0)
            self._size = 0
            return
        content = b"".join(r.encode() for r in self.pending.values())
        temp = self.path.with_name(FILE_NAME + ".tmp")
        temp.unlink(missing_ok=True)
        fd = os.open(temp, _TEMP_FLAGS, 0o600)
        try:
            self._write(fd, content)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, self.path)
        self.close()
        self._file()
