"""`python -m bench.wal [DIR ...]`: what the write-ahead log adds to one refresh.

For each directory (default: /dev/shm, the memory-backed volume the Deployment uses, and the
system temp dir, a disk here), log and mark stored N rotations one after another, as the refresh
path does, and print per rotation: the CPU time the process spent, the time the event loop was
held (the write; the fsync runs in a thread), and the wall time until the record was synced."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from lucidgrant.wal import Rotation, RotationLog


def rotation(i: int) -> Rotation:
    """A record of realistic size: UUID, names, 64-character tokens, the state annotations."""
    return Rotation(
        uid=f"{i:08d}-0000-4000-8000-000000000000",
        namespace="analytics",
        name=f"grant-{i:05d}",
        issued_at=time.time(),
        refresh_token="r" * 64,
        access_token="a" * 64,
        annotations={
            "lucidgrant.dev/access-expires-at": "1767225600.000",
            "lucidgrant.dev/access-lifetime": "3600.000",
            "lucidgrant.dev/refresh-expires-at": "1782777600.000",
            "lucidgrant.dev/refresh-expiry-source": "Issued",
            "lucidgrant.dev/scopes": "lucidchart.document.content:readonly offline_access",
            "lucidgrant.dev/user-id": "1001",
            "lucidgrant.dev/token-type": "bearer",
            "lucidgrant.dev/last-refresh": "1767222000.000",
        },
    )


HEADER = (
    "| directory | rotations | CPU ms p50 / p99 | loop held ms p50 / p99 | synced ms p50 / p99 |\n"
    "| --- | --- | --- | --- | --- |"
)


def ms(values: list[float], q: int) -> str:
    return f"{1000 * statistics.quantiles(values, n=100)[q - 1]:.3f}"


async def measure(directory: Path, n: int) -> str:
    with tempfile.TemporaryDirectory(dir=directory) as where:
        wal = RotationLog(where)
        wal.open()
        cpu, held, synced = [], [], []
        for i in range(n):
            record = rotation(i)
            c0, t0 = time.process_time(), time.perf_counter()
            appending = asyncio.ensure_future(wal.append(record))
            await asyncio.sleep(0)  # one turn: the task writes, then waits for the fsync thread
            held.append(time.perf_counter() - t0)
            await appending
            wal.mark_stored(record)
            synced.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        wal.close()
    return (
        f"| {directory} | {n} | {ms(cpu, 50)} / {ms(cpu, 99)} | {ms(held, 50)} / {ms(held, 99)} "
        f"| {ms(synced, 50)} / {ms(synced, 99)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.wal", description=__doc__)
    parser.add_argument("dirs", nargs="*", type=Path)
    parser.add_argument("-n", type=int, default=5000, help="rotations per directory")
    args = parser.parse_args()
    dirs = args.dirs or [Path("/dev/shm"), Path(tempfile.gettempdir())]
    print(HEADER)
    for directory in dirs:
        print(asyncio.run(measure(directory, args.n)), flush=True)


if __name__ == "__main__":
    main()
