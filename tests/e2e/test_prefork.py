"""The fork server the end-to-end tests start their processes with (tests/prefork.py) gives each
child what a new interpreter would have: its own environment, working directory, stdio and pid,
and the exit status `subprocess` reports, a signal's included."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from tests.prefork import Process, forkable, run

from .test_cli_authorize import CLI, PLUGIN


def test_each_child_reads_its_own_environment_and_directory(tmp_path: Path) -> None:
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        env = {"PATH": "/usr/bin:/bin", "KUBECONFIG": str(tmp_path / name / "none")}
        done = run([*CLI, "run", "-A"], env, cwd=tmp_path / name)
        assert done.returncode == 1
        assert done.stderr.startswith(f"error: no kubeconfig at {tmp_path / name / 'none'} ")
    # A relative KUBECONFIG is found in the child's own working directory, and only there.
    (tmp_path / "first" / "kubeconfig").write_text("not: a kubeconfig\n")
    relative = {"PATH": "/usr/bin:/bin", "KUBECONFIG": "kubeconfig"}
    first = run([*CLI, "run", "-A"], relative, cwd=tmp_path / "first")
    second = run([*CLI, "run", "-A"], relative, cwd=tmp_path / "second")
    assert first.stderr.startswith("error: cannot use kubeconfig: "), first.stderr
    assert second.stderr.startswith("error: no kubeconfig at kubeconfig "), second.stderr


def test_exit_statuses_are_those_of_a_process(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    assert run([*PLUGIN, "--help"], env).returncode == 0
    usage = run([*CLI, "run"], env)
    assert usage.returncode == 2 and "--all-namespaces" in usage.stderr


def test_a_signal_ends_a_child_with_the_signals_status(start_operator) -> None:
    operator = start_operator()
    assert isinstance(operator.proc, Process) and operator.proc.pid > 0
    assert operator.stop(signal.SIGKILL) == -signal.SIGKILL


def test_only_the_operators_commands_are_forked() -> None:
    assert forkable([sys.executable, "-m", "lucidgrant", "run"])
    assert forkable([sys.executable, "-m", "lucidgrant.cli.kubectl", "status"])
    assert not forkable([sys.executable, "-m", "lucidgrant_testbed.lucid"])
    assert not forkable(["lucidgrant-demo"])
    # Anything else is a real subprocess.
    assert run([sys.executable, "-c", "print(1)"], {}).stdout == "1\n"
