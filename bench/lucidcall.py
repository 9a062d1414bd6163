"""`python -m bench lucidcall`: the operator's CPU for one call to Lucid, through the Lucid
client as the operator builds it (lucid_pool.lucid_http) and through a plain httpx client with
the same connection cap (how it was built before). The Lucid emulator runs as its own process,
so only the client's CPU (this process) is counted; each call is an introspection, which goes
the same way as a refresh (lucid.py's `_post`) and changes nothing at the emulator.

A profile of 1,000 grants recovering from an outage showed a Lucid call at about a third of the
operator's CPU, much of it in httpcore: a failed `import sniffio` on every request, and a look
at every pooled connection to find an idle one."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench import procs
from lucidgrant.lucid import LucidClient
from lucidgrant.lucid_answers import ClientCredentials
from lucidgrant.lucid_pool import lucid_http

CLIENT = ClientCredentials("bench-client", "bench-secret")
CONNECTIONS = 32  # the operator's default concurrency, its pool's cap


async def cpu_per_call(http: httpx.AsyncClient, url: str, calls: int, concurrency: int) -> float:
    """Milliseconds of this process's CPU per call, with `concurrency` calls in flight."""
    lucid = LucidClient(http, url)
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await lucid.introspect(CLIENT, "no-such-token")

    await asyncio.gather(*(one() for _ in range(CONNECTIONS)))  # the pool at its size
    start = time.process_time()
    await asyncio.gather(*(one() for _ in range(calls)))
    return (time.process_time() - start) / calls * 1000


async def measure(url: str, calls: int, concurrency: int, rounds: int) -> dict[str, float]:
    def plain() -> httpx.AsyncClient:
        sys.modules.pop("sniffio", None)  # as without lucid_pool: httpcore searches each time
        return httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=CONNECTIONS))

    builds = {"plain httpx": plain, "lucid_http": lambda: lucid_http(10, CONNECTIONS)}
    samples: dict[str, list[float]] = {name: [] for name in builds}
    for _ in range(rounds):  # alternate, so that drift on a shared machine hits both alike
        for name, build in builds.items():
            async with build() as http:
                samples[name].append(await cpu_per_call(http, url, calls, concurrency))
    return {name: statistics.median(values) for name, values in samples.items()}


def main(argv: list[str] | None = None, prog: str = "python -m bench lucidcall") -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", default="1,8,32", help="calls in flight, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        lucid = procs.start_lucid(Path(tmp), 3600, f"{CLIENT.client_id}:{CLIENT.client_secret}")
        try:
            print("| calls in flight | plain httpx (ms CPU a call) | lucid_http | ratio |")
            print("| --- | --- | --- | --- |")
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                got = asyncio.run(measure(lucid.url, args.calls, concurrency, args.rounds))
                plain, pooled = got["plain httpx"], got["lucid_http"]
                print(f"| {concurrency} | {plain:.3f} | {pooled:.3f} | {plain / pooled:.2f} |")
        finally:
            lucid.stop()
