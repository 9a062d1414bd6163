"""Start `python -m lucidgrant ...` processes by forking them from an interpreter that has
already imported the operator, instead of starting a new interpreter each time.

Why: each operator or command-line process spends about 1.5 s of CPU importing kopf and the
`kubernetes` client before it does anything, and the tests start a few hundred of them; on a
2-core machine that import was the largest single cost of `make test` (docs/testing.md). A
forked child is still a process of its own (its own pid, environment, working directory, stdio,
signals and exit status) running the same entry point as `python -m`; it only skips the import.
`lucidgrant --version`, the client-secret prompt (in a new session), the demo and the benchmark
still start real interpreters.

One fork server per test run, shared by pytest-xdist's processes: started by the first that
needs it, ended when the last one's session closes. A request carries the module, the arguments, the environment and the working
directory, with the three stdio descriptors passed over a Unix socket (SCM_RIGHTS); the answer
is the child's pid, then, when it ends, its exit status as `subprocess` reports it (negative for
a signal) and the CPU it used."""

from __future__ import annotations

import contextlib
import fcntl
import gc
import importlib
import json
import logging
import os
import runpy
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from stat import S_ISDIR
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
# What `python -m lucidgrant run`, `lucidgrant authorize` and `kubectl lucidgrant` import.
PRELOAD = ("kopf", "lucidgrant.cli", "lucidgrant.cli.kubectl", "lucidgrant.handlers")
FORKABLE = ("lucidgrant", "lucidgrant.cli.kubectl")


class Process:
    """The part of `subprocess.Popen` the tests use, for a child of the fork server."""

    def __init__(
        self,
        cmd: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path | str = ROOT,
        stdin: Any = None,
        stdout: Any = None,
        stderr: Any = None,
        text: bool = False,
    ) -> None:
        self.args = list(cmd)
        self.returncode: int | None = None
        self.stdin = self.stdout = self.stderr = None
        ours: list[int] = []  # descriptors opened here for the child, closed once it has them
        fds: list[int] = []
        for slot, spec in enumerate((stdin, stdout, stderr)):
            if spec == subprocess.STDOUT:
                fds.append(fds[1])
            elif spec == subprocess.PIPE:
                read, write = os.pipe()
                mine, theirs = (write, read) if slot == 0 else (read, write)
                setattr(self, ("stdin", "stdout", "stderr")[slot], _wrap(mine, slot, text))
                fds.append(theirs)
                ours.append(theirs)
            elif (spec is None and slot == 0) or spec == subprocess.DEVNULL:
                fds.append(os.open(os.devnull, os.O_RDWR))
                ours.append(fds[-1])
            elif spec is None:
                fds.append(slot)
            else:
                fds.append(spec if isinstance(spec, int) else spec.fileno())
        if not forkable(self.args):
            raise ValueError(f"not a command the fork server starts: {self.args[:3]}")
        request = {"module": self.args[2], "args": self.args[3:], "cwd": str(cwd)}
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._conn.connect(_server())
        message = json.dumps({**request, "env": dict(env)}).encode() + b"\n"
        socket.send_fds(self._conn, [message], fds)
        for fd in ours:
            os.close(fd)
        self._buffer = b""
        self.pid = int(self._line(None))

    def _line(self, timeout: float | None) -> bytes:
        self._conn.settimeout(timeout)
        while b"\n" not in self._buffer:
            chunk = self._conn.recv(64)
            if not chunk:
                raise ConnectionError("the fork server went away")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self._ended(self._line(0.0))
            except (BlockingIOError, TimeoutError):
                pass
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            try:
                self._ended(self._line(timeout))
            except TimeoutError:
                raise subprocess.TimeoutExpired(self.args, timeout or 0) from None
        assert self.returncode is not None
        return self.returncode

    def _ended(self, line: bytes) -> None:
        global children_cpu
        code, cpu = line.split()
        self.returncode = int(code)
        children_cpu += float(cpu)
        self._conn.close()

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def popen(cmd: Sequence[str], *, env: Mapping[str, str], **kwargs: Any) -> Any:
    """A `Process` for `python -m lucidgrant ...` or `python -m lucidgrant.cli.kubectl ...`;
    any other command gets a real `subprocess.Popen`."""
    if forkable(cmd):
        return Process(cmd, env=env, **kwargs)
    return subprocess.Popen(cmd, env=env, **kwargs)


def run(
    cmd: Sequence[str],
    env: Mapping[str, str],
    *,
    cwd: Path | str = ROOT,
    input: str | None = None,
    timeout: float = 20,
) -> subprocess.CompletedProcess[str]:
    """`subprocess.run(cmd, capture_output=True, text=True, ...)` through the fork server."""
    if not forkable(cmd):
        return subprocess.run(
            cmd, env=env, cwd=cwd, input=input, capture_output=True, text=True, timeout=timeout
        )
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        with tempfile.TemporaryFile() as given:
            given.write((input or "").encode())
            given.seek(0)
            proc = Process(cmd, env=env, cwd=cwd, stdin=given, stdout=out, stderr=err)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        texts = []
        for f in (out, err):
            f.seek(0)
            texts.append(f.read().decode(errors="replace"))
    return subprocess.CompletedProcess(proc.args, int(proc.returncode or 0), *texts)


def forkable(cmd: Sequence[str]) -> bool:
    return len(cmd) >= 3 and cmd[0] == sys.executable and cmd[1] == "-m" and cmd[2] in FORKABLE


def _wrap(fd: int, slot: int, text: bool) -> IO[Any]:
    mode = ("w" if slot == 0 else "r") + ("" if text else "b")
    return open(fd, mode)  # the caller's to close, as with Popen's pipes


# CPU seconds (user and system) of the children that have ended and been waited for here, as
# RUSAGE_CHILDREN would count them had this process started them itself (tests/cpu_per_test.py).
children_cpu = 0.0
_address: str | None = None
_session: socket.socket | None = None  # open while this process lives: keeps the server up
_lock = threading.Lock()
SESSION = b"session\n"


def _server() -> str:
    """The Unix socket of the fork server this test run shares (one for all of pytest-xdist's
    workers: each would otherwise pay the server's own imports), started by whichever needs it
    first. Each test process keeps a session open; the server ends when the last one closes."""
    global _address, _session
    with _lock:
        if _address is None:
            run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
            folder = os.path.join(tempfile.gettempdir(), f"lucidgrant-prefork-{os.getuid()}")
            os.makedirs(folder, mode=0o700, exist_ok=True)
            # A shared /tmp: the requests carry the tests' environments, so the socket must be
            # in a folder no other user made or can enter.
            info = os.lstat(folder)
            if info.st_uid != os.getuid() or info.st_mode & 0o077 or not S_ISDIR(info.st_mode):
                raise RuntimeError(f"{folder} is not this user's alone: remove it")
            address = os.path.join(folder, f"{run}.socket")
            with open(os.path.join(folder, "lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # one test process at a time starts or joins
                session = _connect(address)
                if session is None:
                    _start(address)
                    session = _connect(address)
                assert session is not None, "the fork server does not answer"
                session.sendall(SESSION)
                if session.recv(8) != b"ok\n":
                    raise RuntimeError("the fork server refused the session")
            _address, _session = address, session
        return _address


def _connect(address: str) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(address)
    except OSError:  # none yet, or one that has ended
        conn.close()
        return None
    return conn


def _start(address: str) -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.prefork", address],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        start_new_session=True,  # outlives the test process that started it, if need be
    )
    assert server.stdout is not None
    if server.stdout.readline() != b"ready\n":
        raise RuntimeError("the fork server did not start")
    server.stdout.close()


def serve(address: str) -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    gc.freeze()  # the children share the imported modules' pages instead of copying them
    with contextlib.suppress(FileNotFoundError):
        os.unlink(address)  # a server that ended
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(64)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    waiting: dict[int, socket.socket] = {}
    sessions = 0
    os.write(1, b"ready\n")
    while True:
        for key, _ in selector.select():
            if key.fileobj is listener:
                conn, _ = listener.accept()
                message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
                while message and not message.endswith(b"\n"):
                    message += conn.recv(1 << 20)
                if message == SESSION:
                    selector.register(conn, selectors.EVENT_READ)
                    sessions += 1
                    conn.sendall(b"ok\n")
                    continue
                pid = os.fork()
                if pid == 0:
                    _child(json.loads(message), fds)
                for fd in fds:
                    os.close(fd)
                conn.sendall(b"%d\n" % pid)
                waiting[pid] = conn
            elif key.fileobj == wake_read:
                os.read(wake_read, 512)
                _reap(waiting)
            else:  # a session ended: its test process is gone
                selector.unregister(key.fileobj)
                key.fileobj.close()  # type: ignore[union-attr]
                sessions -= 1
                if sessions == 0 and _may_end(address):
                    return


def _may_end(address: str) -> bool:
    """No session left: end, unless a test process is joining (it holds the lock); the lock is
    held until this process exits, so none joins an ending server."""
    lock = open(os.path.join(os.path.dirname(address), "lock"), "w")  # noqa: SIM115
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return False
    os.unlink(address)
    return True


def _reap(waiting: dict[int, socket.socket]) -> None:
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = waiting.pop(pid, None)
        if conn is not None:
            try:
                cpu = usage.ru_utime + usage.ru_stime
                conn.sendall(b"%d %f\n" % (os.waitstatus_to_exitcode(status), cpu))
            except OSError:  # the test that started it is gone
                pass
            conn.close()


def _child(request: dict[str, Any], fds: list[int]) -> None:
    """Become what `python -m MODULE ARGS` would be, then exit with its status."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    os.closerange(3, 1 << 16)  # the server's sockets and pipes, and the descriptors passed
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["-m", *request["args"]]
    sys.path[0] = request["cwd"]
    code = 1
    try:
        # As under `python -m`, the module runs as __main__ only, never imported by its name.
        sys.modules.pop(request["module"], None)
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


if __name__ == "__main__":
    serve(sys.argv[1])
