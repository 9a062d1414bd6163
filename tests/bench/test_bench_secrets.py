"""The unrelated-Secrets memory scenario at a tiny size: it runs end to end, and Secrets the
operator has no business with do not raise its memory."""

from __future__ import annotations

from pathlib import Path

from bench.secrets import run_memory, section


def test_unrelated_secrets_do_not_raise_the_operators_memory(tmp_path: Path) -> None:
    without = run_memory(20, 0, 100, 1.0, tmp_path / "without")
    with_them = run_memory(20, 300, 100, 1.0, tmp_path / "with")
    # 300 x 100 KB is 40 MB of base64 in a list answer: listed, it would show in the peak.
    assert with_them["peak_mb"] - without["peak_mb"] < 20, (without, with_them)
    assert "| 20 | 300 x 100 KB |" in section([{**with_them, "command": "pytest"}])
