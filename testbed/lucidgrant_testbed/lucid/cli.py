"""`python -m lucidgrant_testbed.lucid` (or `lucidgrant-lucid-emulator`): serve the Lucid
emulator in its own process, as the benchmark and the real-cluster test do."""

from __future__ import annotations

import argparse
import asyncio
import signal

from lucidgrant_testbed.lucid.server import LucidEmulator


async def _serve_until_signalled(args: argparse.Namespace) -> None:
    emulator = LucidEmulator(
        access_ttl=args.access_ttl, refresh_ttl=args.refresh_ttl, code_ttl=args.code_ttl
    )
    emulator.auto_consent = not args.manual_consent
    for spec in args.client:
        client_id, _, client_secret = spec.partition(":")
        emulator.add_client(client_id, client_secret)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await emulator.start(args.host, args.port)
    try:
        print(emulator.url, flush=True)
        await stopping.wait()
    finally:
        await emulator.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lucidgrant_testbed.lucid",
        description="Serve the Lucid OAuth emulator; prints its URL once listening.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--access-ttl", type=float, default=3600.0, help="seconds")
    parser.add_argument("--refresh-ttl", type=float, default=180 * 86400.0, help="seconds")
    parser.add_argument("--code-ttl", type=float, default=300.0, help="seconds")
    parser.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="ID:SECRET",
        help="register a client that accepts any redirect URI (repeatable)",
    )
    parser.add_argument(
        "--manual-consent", action="store_true", help="show a consent page instead of approving"
    )
    asyncio.run(_serve_until_signalled(parser.parse_args(argv)))
