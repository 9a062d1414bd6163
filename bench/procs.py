"""Processes under measurement: the two emulators and the operator, each its own process so
that its CPU time (from /proc/<pid>/stat) and resident memory (from /proc/<pid>/status) are
read apart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx

from lucidgrant_testbed import CRDS

ROOT = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (fields 14 and 15 of /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (peak resident) in kB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0])
    return out


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPUs ({model}), {mem_gb:.0f} GiB RAM, Python {sys.version.split()[0]}"


class Proc:
    """A child process logging to a file; `url` is the first line it prints (the emulators),
    or given (the operator)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
        *,
        prints_url: bool = True,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE if prints_url else self._log,
            stderr=self._log,
            env={**os.environ, **(env or {})},
            cwd=ROOT,
        )
        self.started_at = time.time()
        self.url = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read_url(self, timeout: float = 30.0) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while not line and time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if self.proc.poll() is not None and not line:
                break
        if not line:
            raise RuntimeError(f"{self.name} printed no URL: see {self.log_path}")
        self.url = line.decode().strip()
        return self.url

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def memory(self) -> dict[str, int]:
        return memory_kb(self.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


def start_kubeapi(log_dir: Path, kubeconfig: Path) -> Proc:
    proc = Proc(
        "kubeapi",
        [
            sys.executable,
            "-m",
            "lucidgrant_testbed.kubeapi",
            "--port",
            "0",
            "--crds",
            str(CRDS),
            "--kubeconfig",
            str(kubeconfig),
            # A watch that reconnects must resume, not relist tens of thousands of Secrets.
            "--history-size",
            "1000000",
        ],
        log_dir,
    )
    proc.read_url()
    return proc


def start_lucid(log_dir: Path, access_ttl: float, client: str) -> Proc:
    proc = Proc(
        "lucid",
        [
            sys.executable,
            "-m",
            "lucidgrant_testbed.lucid",
            "--port",
            "0",
            "--access-ttl",
            str(access_ttl),
            "--refresh-ttl",
            "86400",
            "--client",
            client,
        ],
        log_dir,
    )
    proc.read_url()
    return proc


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_operator(
    log_dir: Path, kubeconfig: Path, lucid_url: str, concurrency: int, name: str = "operator"
) -> Proc:
    port = free_port()
    env = {
        "KUBECONFIG": str(kubeconfig),
        "LUCIDGRANT_LUCID_API_URL": lucid_url,
        "LUCIDGRANT_LUCID_APP_URL": lucid_url,
        "LUCIDGRANT_HTTP_HOST": "127.0.0.1",
        "LUCIDGRANT_HTTP_PORT": str(port),
        "LUCIDGRANT_CONCURRENCY": str(concurrency),
        "LUCIDGRANT_MIN_TOKEN_LIFETIME": "1",  # the emulator's tokens live seconds
    }
    proc = Proc(
        name,
        [sys.executable, "-m", "lucidgrant", "run", "--namespace", "default"],
        log_dir,
        env,
        prints_url=False,
    )
    proc.url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"operator exited: see {proc.log_path}")
        try:
            if httpx.get(f"{proc.url}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("operator not ready within 60 s")
