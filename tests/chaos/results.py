"""The one-line JSON summaries the chaos scenarios print, kept for the table at the end."""

from __future__ import annotations

import json
from typing import Any

RESULTS: list[dict[str, Any]] = []

COLUMNS = [
    ("scenario", "scenario"),
    ("size", "size"),
    ("grants", "grants"),
    ("fault", "fault"),
    ("injection", "how injected"),
    ("count", "how often"),
    ("lost", "lost"),
    ("flagged", "flagged for a person"),
    ("invalid_grant", "invalid_grant (real)"),
    ("recovery_s", "recovery (s)"),
    ("calls_during_fault", "Lucid calls during fault"),
    ("bound", "bound"),
]


def report(row: dict[str, Any]) -> None:
    RESULTS.append(row)
    print("CHAOS-RESULT " + json.dumps(row, sort_keys=True), flush=True)


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    return str(value).replace("|", "\\|")


def table(rows: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|" + "|".join(" --- " for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(_cell(r.get(k)) for k, _ in COLUMNS) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def details(rows: list[dict[str, Any]]) -> str:
    """The extra figures of each scenario (windows, kills, margins), one line each."""
    known = {k for k, _ in COLUMNS}
    lines = []
    for r in rows:
        extra = {k: v for k, v in r.items() if k not in known and k not in ("rotations", "leaks")}
        lines.append(
            f"- {r['scenario']} ({r['size']}): rotations={r.get('rotations')}, "
            f"leaks={r.get('leaks')}" + "".join(f", {k}={v}" for k, v in sorted(extra.items()))
        )
    return "\n".join(lines)
