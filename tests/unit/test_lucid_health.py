"""The Lucid gate: when it closes, when probes are due, when it reopens, and in what order the
grants it held are woken. Fake times throughout; nothing sleeps."""

import hashlib

import pytest

from lucidgrant.lucid_answers import (
    ClientRejectedError,
    ContradictedInvalidGrantError,
    InvalidGrantError,
    LucidError,
    PartialAnswerError,
    ScopesRejectedError,
    TransientError,
)
from lucidgrant.lucid_health import (
    PROBE_INTERVAL,
    Gate,
    GateSettings,
    Transition,
    client_label,
    lucid_answered,
    recovery_order,
    unavailable_message,
)

DOWN, UP = False, True

# (grant, answered, time) fed in order; then when the gate closed (None: still open).
CLOSING = {
    "three grants fail together": ([("a", DOWN, 0), ("b", DOWN, 1), ("c", DOWN, 2)], 2),
    "one grant's bad answers, many times": ([("a", DOWN, t) for t in range(20)], None),
    "two grants failing over and over": (
        [(g, DOWN, t) for t in range(10) for g in ("a", "b")],
        None,
    ),
    "three grants, but spread beyond the window": (
        [("a", DOWN, 0), ("b", DOWN, 61), ("c", DOWN, 122)],
        None,
    ),
    "the first failure ages out, a fourth grant closes it": (
        [("a", DOWN, 0), ("b", DOWN, 30), ("c", DOWN, 61), ("d", DOWN, 62)],
        62,
    ),
    "an answer in between clears the failures": (
        [("a", DOWN, 0), ("b", DOWN, 1), ("x", UP, 2), ("c", DOWN, 3), ("d", DOWN, 4)],
        None,
    ),
    "answers about grants (invalid_grant) are no outage": (
        [("a", UP, 0), ("b", UP, 1), ("c", UP, 2), ("d", DOWN, 3)],
        None,
    ),
    "the same grant again does not count twice": (
        [("a", DOWN, 0), ("a", DOWN, 1), ("b", DOWN, 2), ("b", DOWN, 3), ("c", DOWN, 4)],
        4,
    ),
}


@pytest.mark.parametrize(("calls", "closed_at"), CLOSING.values(), ids=CLOSING.keys())
def test_when_the_gate_closes(calls, closed_at):
    gate: Gate[str] = Gate()
    transitions = [gate.record(grant, answered, now) for grant, answered, now in calls]
    assert gate.closed_since == closed_at
    assert transitions.count(Transition.CLOSED) == (closed_at is not None)
    assert gate.is_open == (closed_at is None)


def test_the_threshold_and_window_are_settings():
    gate: Gate[str] = Gate(GateSettings(distinct_grants=2, window=5.0))
    assert gate.record("a", DOWN, 0) is None
    assert gate.record("b", DOWN, 6) is None, "a's failure is older than the window"
    assert gate.record("c", DOWN, 7) is Transition.CLOSED


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"distinct_grants": 1}, "distinct_grants=1"),
        ({"window": 0.0}, "window=0.0"),
        ({"probe_interval": -1.0}, "probe_interval=-1.0"),
    ],
)
def test_bad_settings_say_which(settings, field):
    with pytest.raises(ValueError, match=field):
        GateSettings(**settings)


def closed_gate(at: float = 100.0) -> Gate[str]:
    """A gate closed at `at` by three grants; they are parked with it (see below): taken out
    here, so that a test starts with nothing parked."""
    gate: Gate[str] = Gate()
    for i, grant in enumerate(("x1", "x2", "x3")):
        gate.record(grant, DOWN, at - 2 + i)
    assert gate.closed_since == at
    assert gate.release() == ["x1", "x2", "x3"]
    return gate


def test_probes_every_interval_while_closed_and_an_answer_reopens_at_once():
    gate = closed_gate(100.0)
    assert gate.probe_due_at() == 100.0 + PROBE_INTERVAL
    gate.probe_sent(100.25 + PROBE_INTERVAL)
    assert gate.probe_result(DOWN) is None
    assert gate.closed_since == 100.0, "a failed probe keeps the since-when"
    assert gate.probe_due_at() == 100.25 + 2 * PROBE_INTERVAL, "an interval after the last"
    gate.probe_sent(100.25 + 2 * PROBE_INTERVAL)
    assert gate.probe_result(UP) is Transition.OPENED
    assert gate.is_open and gate.closed_since is None
    assert gate.probe_due_at() is None, "no probe while open"


def test_no_probe_while_open():
    gate: Gate[str] = Gate()
    assert gate.probe_due_at() is None
    assert gate.probe_result(UP) is None, "an open gate does not open again"


def test_an_answer_to_a_refresh_in_flight_reopens_and_a_failure_changes_nothing():
    gate = closed_gate(100.0)
    assert gate.record("d", DOWN, 101) is None
    assert gate.closed_since == 100.0
    assert gate.record("e", UP, 102) is Transition.OPENED
    assert gate.is_open


def test_after_reopening_closing_again_takes_three_fresh_grants():
    gate = closed_gate(100.0)
    gate.probe_sent(105)
    gate.probe_result(UP)
    assert gate.record("a", DOWN, 106) is None
    assert gate.record("b", DOWN, 107) is None
    assert gate.record("c", DOWN, 108) is Transition.CLOSED
    assert gate.closed_since == 108
    assert gate.probe_due_at() == 108 + PROBE_INTERVAL, "the probe clock restarts with it"


def test_parked_grants_are_released_most_urgent_first_once():
    gate = closed_gate(100.0)
    gate.park("valid-late", 5000.0)
    gate.park("expired-long-ago", 10.0)
    gate.park("no-token", None)
    gate.park("valid-soon", 200.0)
    gate.park("expired-just", 99.0)
    gate.park("gone", 150.0)
    gate.forget("gone")
    assert gate.parked == 5
    assert gate.release() == [
        "no-token",
        "expired-long-ago",
        "expired-just",
        "valid-soon",
        "valid-late",
    ]
    assert gate.parked == 0
    assert gate.release() == []


def test_parking_again_keeps_the_newest_expiry():
    gate = closed_gate()
    gate.park("a", 10.0)
    gate.park("b", 20.0)
    gate.park("a", 30.0)
    assert gate.release() == ["b", "a"]


RECOVERY = {
    "empty": ({}, []),
    "expiry ascending": ({"x": 3.0, "y": 1.0, "z": 2.0}, ["y", "z", "x"]),
    "unknown expiry first": ({"x": 1.0, "y": None}, ["y", "x"]),
    "ties keep their order": ({"x": 1.0, "y": 1.0, "z": 0.5}, ["z", "x", "y"]),
}


@pytest.mark.parametrize(("expiries", "order"), RECOVERY.values(), ids=RECOVERY.keys())
def test_recovery_order(expiries, order):
    assert recovery_order(expiries) == order


ANSWERS: dict[str, tuple[LucidError | None, bool]] = {
    "success": (None, True),
    "invalid_grant": (InvalidGrantError("x", status=400), True),
    "invalid_grant that introspection contradicts": (ContradictedInvalidGrantError("x"), True),
    "client rejected": (ClientRejectedError("x", status=401), True),
    "scopes rejected": (ScopesRejectedError("x", status=400), True),
    "5xx, 429, timeout, HTML": (TransientError("x", status=503), False),
    "no answer at all": (TransientError("x"), False),
    "malformed answer": (PartialAnswerError("rt"), False),
}


@pytest.mark.parametrize(("error", "answered"), ANSWERS.values(), ids=ANSWERS.keys())
def test_which_outcomes_show_lucid_answering(error, answered):
    assert lucid_answered(error) is answered


def test_client_label_is_short_stable_and_not_the_id():
    label = client_label("my-client-id")
    assert label == hashlib.sha256(b"my-client-id").hexdigest()[:12]
    assert label == client_label("my-client-id") != client_label("other")
    assert "my-client-id" not in label and len(label) == 12


def test_grants_that_failed_before_the_gate_closed_are_parked_with_it():
    gate: Gate[str] = Gate()
    gate.record("old", DOWN, 0, access_expires_at=500.0)  # aged out of the window, still unanswered
    gate.record("a", DOWN, 100, access_expires_at=300.0)
    gate.record("b", DOWN, 101, access_expires_at=None)
    assert gate.record("c", DOWN, 102, access_expires_at=200.0) is Transition.CLOSED
    gate.record("late", DOWN, 103, access_expires_at=100.0)  # in flight when it closed
    assert gate.parked == 5
    gate.probe_sent(107)
    gate.probe_result(UP)
    assert gate.release() == ["b", "late", "c", "a", "old"]


def test_an_answer_forgets_earlier_failures_for_parking_too():
    gate: Gate[str] = Gate()
    gate.record("x", DOWN, 0, access_expires_at=1.0)
    gate.record("y", UP, 1)
    for i, grant in enumerate("abc"):
        gate.record(grant, DOWN, 2 + i, access_expires_at=10.0 + i)
    assert gate.release() == ["a", "b", "c"]


def test_the_status_message_says_since_when():
    assert unavailable_message(1_800_000_000.0).startswith(
        "Lucid has not answered since 2027-01-15T08:00:00Z: the refresh waits for it"
    )
