"""The laptop flow's browser side: the loopback redirect target that waits for Lucid's answer
on http://localhost:PORT/callback (127.0.0.1 and ::1), and the browser sent to Lucid's consent
page (a real one, or, for tests, LUCIDGRANT_TEST_BROWSER=httpx: an HTTP client that follows the
real redirect chain)."""

from __future__ import annotations

import asyncio
import errno
import hmac
import os
import webbrowser

import httpx
from aiohttp import web

from lucidgrant.cli.common import AuthorizeError, tell
from lucidgrant.flowpages import page

TEST_BROWSER_ENV = "LUCIDGRANT_TEST_BROWSER"


class LoopbackReceiver:
    """The loopback redirect target: waits for one callback carrying our state."""

    def __init__(self, state: str) -> None:
        self.state = state
        self.result: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._runner: web.AppRunner | None = None

    async def callback(self, request: web.Request) -> web.Response:
        query = request.query
        # Anything without our state is not the answer to our request (another tab, or a page
        # poking at localhost): refuse it and keep waiting.
        if not hmac.compare_digest(query.get("state", "").encode(), self.state.encode()):
            return page(
                400, "Unexpected request", "This request does not carry the expected state."
            )
        if self.result.done():
            return page(400, "Already done", "This authorization has already been received.")
        if "error" in query:
            error = query.get("error", "")[:80]
            self.result.set_exception(AuthorizeError(f"Lucid did not grant access: {error}"))
            return page(400, "Authorization refused", f"Lucid answered: {error}.")
        code = query.get("code")
        if not code:
            self.result.set_exception(AuthorizeError("Lucid sent no authorization code"))
            return page(400, "Authorization failed", "Lucid sent no authorization code.")
        self.result.set_result(code)
        return page(
            200,
            "Authorization received",
            "lucidgrant received Lucid's answer. You can close this page and return to the "
            "terminal.",
        )

    async def start(self, port: int) -> None:
        app = web.Application()
        app.router.add_get("/callback", self.callback)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        # Browsers may resolve localhost to either address: a port another process holds on
        # one of them would hand it the code. A host without ::1 cannot send a browser there.
        for host in ("127.0.0.1", "::1"):
            try:
                await web.TCPSite(self._runner, host, port).start()
            except OSError as exc:
                if host == "::1" and exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                    continue
                await self.stop()
                raise AuthorizeError(
                    f"cannot listen on [{host}]:{port} ({exc.strerror or exc}): another process "
                    "may be waiting for the callback there; stop it or choose another --port "
                    "(and register http://localhost:PORT/callback with the Lucid app)"
                ) from None

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def _follow_with_httpx(url: str) -> None:
    """The test "browser": follow the redirect chain for real, down to the loopback callback."""
    async with httpx.AsyncClient(follow_redirects=True, timeout=30) as browser:
        try:
            await browser.get(url)
        except httpx.HTTPError as exc:
            tell(f"test browser: {type(exc).__name__}")


async def receive_code(
    url: str, receiver: LoopbackReceiver, *, open_browser: bool, timeout: float
) -> str:
    """Send the person (or the test browser) to `url`; the code the callback brings back."""
    follower: asyncio.Task[None] | None = None
    if os.environ.get(TEST_BROWSER_ENV) == "httpx":
        follower = asyncio.create_task(_follow_with_httpx(url))
    elif open_browser and webbrowser.open(url):
        tell("Opened Lucid's consent page in your browser. If it did not open, visit:")
        tell(f"  {url}")
    else:
        tell("Open this URL in a browser and approve the access:")
        tell(f"  {url}")
    tell(f"Waiting up to {timeout:.0f}s for Lucid to redirect back …")
    try:
        return await asyncio.wait_for(asyncio.shield(receiver.result), timeout)
    except TimeoutError:
        raise AuthorizeError(f"no answer from the browser within {timeout:.0f}s") from None
    finally:
        if follower is not None:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
