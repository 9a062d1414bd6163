"""The faults the Lucid emulator can be switched to, as a test or the control API asks: an
outage, failed or garbled answers, slow answers, flaky invalid_grant and partial answers.

The switches may be flipped from any thread while the server answers on its own loop; one lock
guards them. The server takes the grant book's lock first and this one inside it, never the
other way round."""

from __future__ import annotations

import math
import random
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from lucidgrant_testbed.lucid.pages import ERROR_PAGE, MAINTENANCE_PAGE, html_answer, json_answer

FailureBody = Literal["json", "html", "malformed", "empty"]

# A 200 answer cut off mid-way, as a proxy that drops the connection would leave it.
TRUNCATED_JSON = '{"access_token": "lat_trunc'


@dataclass(frozen=True)
class _Failure:
    status: int
    retry_after: float | None
    body: FailureBody


class Faults:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._outage_until = -math.inf
        self._failures: deque[_Failure] = deque()
        self._slow_seconds = 0.0
        self._slow_remaining: int | None = None
        self._slow_process_first = False
        self._flaky_probability = 0.0
        self._flaky_rng = random.Random()
        self._flaky_next = 0
        self._partial_next = 0

    # ---------------------------------------------------------------- switches

    def outage(self, seconds: float) -> None:
        """Answer 503 with an HTML maintenance page for `seconds` of the emulator's clock."""
        self.outage_until(self.clock() + float(seconds))

    def outage_until(self, t: float) -> None:
        with self._lock:
            self._outage_until = float(t)

    def end_outage(self) -> None:
        with self._lock:
            self._outage_until = -math.inf

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        retry_after: float | None = None,
        body: FailureBody = "json",
    ) -> None:
        """Answer the next `n` requests with `status` instead of processing them. Retry-After
        is sent rounded up to whole seconds, the only delay form HTTP defines."""
        if body not in ("json", "html", "malformed", "empty"):
            raise ValueError(f"unknown failure body {body!r}")
        failure = _Failure(int(status), None if retry_after is None else float(retry_after), body)
        with self._lock:
            self._failures.extend([failure] * int(n))

    def malformed_next(self, n: int = 1) -> None:
        self.fail_next(n, 200, body="malformed")

    def html_next(self, n: int = 1) -> None:
        self.fail_next(n, 200, body="html")

    def slow(self, seconds: float, n: int | None = None, process_first: bool = False) -> None:
        """Delay the next `n` answers (all while set, if None) by `seconds` of real time.

        By default the request is processed after the delay, and not at all if the client has
        gone (timed out) by then: a timeout costs the client nothing. With `process_first` the
        grant is rotated before the delay, so a client that times out loses the new tokens, the
        worst case a real network can produce."""
        with self._lock:
            self._slow_seconds = float(seconds)
            self._slow_remaining = None if n is None else int(n)
            self._slow_process_first = bool(process_first)

    def flaky_invalid_grant(self, probability: float, seed: int | None = None) -> None:
        """Answer a live refresh token with 400 invalid_grant at this rate, without rotating."""
        with self._lock:
            self._flaky_probability = float(probability)
            self._flaky_rng = random.Random(seed)

    def flaky_invalid_grant_next(self, n: int = 1) -> None:
        with self._lock:
            self._flaky_next = int(n)

    def partial_answer_next(self, n: int = 1) -> None:
        """Rotate as usual but answer without `access_token`: the worst malformed answer, since
        the new refresh token in it is the only live one."""
        with self._lock:
            self._partial_next = int(n)

    def clear(self) -> None:
        with self._lock:
            self._outage_until = -math.inf
            self._failures.clear()
            self._slow_seconds = 0.0
            self._slow_remaining = None
            self._slow_process_first = False
            self._flaky_probability = 0.0
            self._flaky_next = 0
            self._partial_next = 0

    def switches(self) -> dict[str, Callable[..., None]]:
        """The switches by the names the control API takes."""
        return {
            "outage": self.outage,
            "outage_until": self.outage_until,
            "end_outage": self.end_outage,
            "fail_next": self.fail_next,
            "malformed_next": self.malformed_next,
            "html_next": self.html_next,
            "slow": self.slow,
            "flaky_invalid_grant": self.flaky_invalid_grant,
            "flaky_invalid_grant_next": self.flaky_invalid_grant_next,
            "partial_answer_next": self.partial_answer_next,
            "clear": self.clear,
        }

    def snapshot(self, now: float) -> dict[str, Any]:
        with self._lock:
            return {
                "outage_until": self._outage_until if now < self._outage_until else None,
                "pending_failures": len(self._failures),
                "slow_seconds": self._slow_seconds,
                "slow_remaining": self._slow_remaining,
                "flaky_probability": self._flaky_probability,
                "flaky_next": self._flaky_next,
            }

    # ---------------------------------------------------------------- taken by the server

    def take_delay(self) -> tuple[float, bool]:
        """The delay for the request arriving now, and whether to process it before waiting."""
        with self._lock:
            if self._slow_seconds <= 0 or self._slow_remaining == 0:
                return 0.0, False
            if self._slow_remaining is not None:
                self._slow_remaining -= 1
            return self._slow_seconds, self._slow_process_first

    def take_failure(self) -> web.Response | None:
        """The answer an outage or a queued failure gives instead of processing, if any."""
        with self._lock:
            if self.clock() < self._outage_until:
                return html_answer(503, MAINTENANCE_PAGE)
            if not self._failures:
                return None
            failure = self._failures.popleft()
        if failure.body == "html":
            response = html_answer(failure.status, ERROR_PAGE)
        elif failure.body == "malformed":
            response = web.Response(
                status=failure.status, text=TRUNCATED_JSON, content_type="application/json"
            )
        elif failure.body == "empty":
            response = web.Response(status=failure.status)
        else:
            error = "rate_limit_exceeded" if failure.status == 429 else "server_error"
            response = json_answer(
                failure.status, {"error": error, "error_description": "Try later"}
            )
        if failure.retry_after is not None:
            response.headers["Retry-After"] = str(math.ceil(failure.retry_after))
        return response

    def take_flaky(self) -> bool:
        """Whether this live refresh token is refused as if Lucid were flaky."""
        with self._lock:
            if self._flaky_next > 0:
                self._flaky_next -= 1
                return True
            return (
                self._flaky_probability > 0 and self._flaky_rng.random() < self._flaky_probability
            )

    def take_partial(self) -> bool:
        """Whether this successful refresh is answered without its access token."""
        with self._lock:
            if self._partial_next > 0:
                self._partial_next -= 1
                return True
            return False
