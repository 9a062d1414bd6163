"""Lucid answering arbitrary things (any status, JSON, HTML, truncated JSON, empty bodies,
Retry-After or not): the operator never crashes, never flags a grant for a person, and every
grant serves a live token again once Lucid behaves."""

from __future__ import annotations

import time
from typing import Any

import httpx
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from tests.chaos.world import SHORT, world
from tests.e2e.harness import CLIENT_ID, CLIENT_SECRET

answers = st.tuples(
    st.integers(200, 599),
    st.sampled_from(["json", "html", "malformed", "empty"]),
    st.none() | st.integers(0, 3),
)


def generated(n: int) -> list[tuple[int, str, int | None]]:
    out: list[tuple[int, str, int | None]] = []

    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate])
    @given(answers)
    def collect(answer: tuple[int, str, int | None]) -> None:
        out.append(answer)

    collect()
    return out


def test_arbitrary_lucid_answers_never_crash_the_operator(tmp_path: Any) -> None:
    with world(tmp_path, SHORT) as w:
        w.add_grants()
        proc = w.start_operator()
        w.wait_serving(60, "every grant serving before the faults")
        faults = generated(40)
        for status, body, retry_after in faults:
            w.lucid.faults.fail_next(1, status, retry_after=retry_after, body=body)  # type: ignore[arg-type]
        w.lucid.faults.html_next(5)
        w.lucid.faults.malformed_next(5)
        queued = len(faults) + 10  # and the HTML and truncated ones
        # While answers are outage-class the Lucid gate holds refreshes and probes every 2 s,
        # so the answers drain at the probes' pace (all 50 would take 100 s): wait for 20 of
        # them, bounded.
        deadline = time.monotonic() + 60
        while (
            time.monotonic() < deadline
            and queued - w.lucid.stats()["faults"]["pending_failures"] < 20
        ):
            time.sleep(0.25)
            assert proc.proc.poll() is None, "the operator died"
        consumed = queued - w.lucid.stats()["faults"]["pending_failures"]
        w.lucid.faults.clear()
        # The gate, a 429's pause for every grant, and client rejections (which wait for a
        # change of the client Secret) hold refreshes on purpose, so not every answer is used;
        # the operator must still have met a fair share of them.
        assert consumed >= 10, f"only {consumed} of {queued} arbitrary answers were used"
        print(f"arbitrary Lucid answers consumed: {consumed} of {queued}")
        # A 401/403 in the mix is a client rejection, kept until the client Secret changes
        # (by design): change it, as a person fixing the credentials would.
        w.cluster.put_secret(
            "lucid-client",
            {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "touched": str(time.time())},
        )
        w.wait_serving(45, "every grant serving after the arbitrary answers")
        views = w.views()
        assert not [n for n, v in views.items() if v.lost or v.reauth]
        assert w.lucid.invalid_grant_count == 0
        assert httpx.get(f"{proc.url}/healthz", timeout=5).status_code == 200
        w.stop(proc)
        assert "Traceback" not in proc.logs(), proc.logs()[-3000:]
