"""`python -m bench outage --grants N`: a Lucid outage of three access lifetimes at N grants,
against the real operator process, and what it cost.

The emulated Kubernetes API and the Lucid emulator run as their own processes, as in the
steady-state benchmark (`bench/run.py`, whose profiles give the access lifetime and
refreshBefore for N). Once every grant serves a token, Lucid answers every call with 503 and an
HTML maintenance page for three lifetimes (every access token expires meanwhile), then answers
again. Figures:

- Lucid calls during the outage (from the emulator's counters), and a minute;
- from Lucid's return until each grant's consumer Secret holds a token Lucid issued after the
  return (a watch on the namespace's Secrets): p50, p99, max; grants not served within the
  recovery limit are counted, not waited for;
- the peak of Lucid refreshes in any one second after the return (Lucid's own refresh log,
  sliding by each refresh), and the other calls after the return (probes);
- at the end: refresh tokens lost (the state Secret's refresh token is not Lucid's live one),
  grants flagged for re-authorization, grants not Ready with Lucid's live access token.

This file depends only on what bench/ and the emulators offered before the Lucid gate, so that
the same scenario runs on the code before it (docs/lucid-outages.md gives the command)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from bench import procs
from bench.report import lucid_calls, percentile
from bench.run import profile_for
from bench.setup import CLIENT_ID, CLIENT_SECRET, GRANTS, NAMESPACE, SECRETS, create_grants

ROOT = procs.ROOT
LIFETIMES = 3
CONSUMER_SUFFIX = "-token"  # bench/setup.py's accessTokenSecret names
STATE_SUFFIX = "-lucidgrant-state"
# The operator's longest backoff (timing.py) before the gate: a grant that backed off through
# the whole outage may wait this long after it before trying again.
BACKOFF_CAP = 300.0


def recovery_limit(n: int) -> float:
    """How long to wait after the return before counting the grants not yet served: the longest
    backoff, plus every grant refreshed at 20 a second (what a loaded 2-core machine sustains)."""
    return BACKOFF_CAP + n / 20


def peak_rate(arrivals: list[float], start: float, end: float) -> int:
    """The most calls in any one second of [start, end), the window sliding by each call."""
    times = sorted(t for t in arrivals if start <= t < end)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] < t - 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


class ConsumerWatch:
    """Watches the namespace's Secrets: each consumer Secret's access token (as stored, base64;
    never decoded or printed) and, once `mark_return` is called, when each first holds another
    one."""

    def __init__(self, kube_url: str) -> None:
        self._url = kube_url + SECRETS.format(ns=NAMESPACE)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.tokens: dict[str, str] = {}
        self._baseline: dict[str, str] | None = None
        self._returned_at = 0.0
        self.served: dict[str, float] = {}  # grant name -> seconds from the return
        self._thread = threading.Thread(target=self._run, name="consumer-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def count(self) -> int:
        with self._lock:
            return len(self.tokens)

    def mark_return(self, at: float) -> None:
        with self._lock:
            self._baseline = dict(self.tokens)
            self._returned_at = at

    def _seen(self, obj: dict[str, Any]) -> None:
        name = str(obj["metadata"]["name"])
        token = (obj.get("data") or {}).get("access_token")
        if not name.endswith(CONSUMER_SUFFIX) or not token:
            return
        grant = name[: -len(CONSUMER_SUFFIX)]
        now = time.time()
        with self._lock:
            self.tokens[grant] = token
            if (
                self._baseline is not None
                and grant not in self.served
                and token != self._baseline.get(grant)
            ):
                self.served[grant] = max(0.0, now - self._returned_at)

    def _run(self) -> None:
        with httpx.Client(timeout=httpx.Timeout(60, read=None)) as http:
            listed = http.get(self._url).json()
            for obj in listed.get("items") or []:
                self._seen(obj)
            version = str(listed["metadata"]["resourceVersion"])
            while not self._stop.is_set():
                params = {"watch": "true", "resourceVersion": version, "timeoutSeconds": "5"}
                with http.stream("GET", self._url, params=params) as stream:
                    for line in stream.iter_lines():
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            raise RuntimeError(f"watch of Secrets failed: {event['object']}")
                        obj = event["object"]
                        version = str(obj["metadata"]["resourceVersion"])
                        if event["type"] in ("ADDED", "MODIFIED"):
                            self._seen(obj)


def _get(url: str) -> dict[str, Any]:
    response = httpx.get(url, timeout=60)
    response.raise_for_status()
    return dict(response.json())


def _fault(lucid_url: str, **body: Any) -> None:
    httpx.post(f"{lucid_url}/_emulator/faults", json=body, timeout=60).raise_for_status()


async def _lookups(lucid_url: str, tokens: dict[str, str]) -> dict[str, dict[str, Any] | None]:
    """Lucid's view of the grant each refresh token belongs to (None: a token Lucid never
    issued), concurrently."""
    slots = asyncio.Semaphore(32)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def one(token: str) -> dict[str, Any] | None:
            async with (
                slots,
                session.post(f"{lucid_url}/_emulator/lookup", json={"token": token}) as response,
            ):
                return dict(await response.json()) if response.status == 200 else None

        names = list(tokens)
        found = await asyncio.gather(*(one(tokens[n]) for n in names))
    return dict(zip(names, found, strict=True))


def _b64(value: str | None) -> str | None:
    return None if value is None else base64.b64decode(value).decode()


def _wrong(kube_url: str, lucid_url: str, names: dict[str, str]) -> dict[str, set[str]]:
    """Grants (name -> Lucid grant id) lost, flagged, or not serving Lucid's live access token,
    in one look: a list of grants, a list of Secrets, a lookup per stored refresh token."""
    grants = _get(kube_url + GRANTS.format(ns=NAMESPACE)).get("items") or []
    secrets = _get(kube_url + SECRETS.format(ns=NAMESPACE)).get("items") or []
    data = {s["metadata"]["name"]: s.get("data") or {} for s in secrets}
    conditions = {
        g["metadata"]["name"]: {
            c["type"]: c["status"] for c in (g.get("status") or {}).get("conditions") or []
        }
        for g in grants
    }
    stored = {n: _b64(data.get(n + STATE_SUFFIX, {}).get("refresh_token")) or "" for n in names}
    lucid = asyncio.run(_lookups(lucid_url, stored))
    now = time.time()
    out: dict[str, set[str]] = {"lost": set(), "flagged": set(), "not_serving": set()}
    for name, grant_id in names.items():
        info, conds = lucid[name], conditions.get(name, {})
        if info is None or info["id"] != grant_id or info["refresh_token"] != stored[name]:
            out["lost"].add(name)
        if conds.get("ReauthorizationRequired") == "True":
            out["flagged"].add(name)
        consumer = _b64(data.get(name + CONSUMER_SUFFIX, {}).get("access_token"))
        live = info is not None and consumer == info["access_token"]
        if not (live and info and now < info["access_expires_at"] and conds.get("Ready") == "True"):
            out["not_serving"].add(name)
    return out


def _settled(kube_url: str, lucid_url: str, names: dict[str, str], settle: float = 10.0) -> Any:
    """`_wrong`, each grant counted only if it stays wrong for `settle` seconds: a look can fall
    between Lucid's rotation and the operator's writes, which takes milliseconds, or longer on a
    busy machine; a lost grant stays lost."""
    wrong = _wrong(kube_url, lucid_url, names)
    deadline = time.monotonic() + settle
    while any(wrong.values()) and time.monotonic() < deadline:
        time.sleep(1.0)
        again = _wrong(kube_url, lucid_url, names)
        wrong = {k: v & again[k] for k, v in wrong.items()}
    return {k: sorted(v) for k, v in wrong.items()}


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _code() -> str:
    """The commit measured, and whether its files were changed."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "operator"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return head + ("+changes" if dirty else "")


def run_outage(
    n: int,
    out_dir: Path,
    log: Any = print,
    *,
    limit: float | None = None,
    access_ttl: float | None = None,
) -> dict[str, Any]:
    profile = profile_for(n)
    ttl = access_ttl or profile.access_ttl
    outage = LIFETIMES * ttl
    limit = recovery_limit(n) if limit is None else limit
    out_dir.mkdir(parents=True, exist_ok=True)
    kubeconfig = out_dir / "kubeconfig.yaml"
    result: dict[str, Any] = {
        "grants": n,
        "access_ttl": ttl,
        "refresh_before": profile.refresh_before,
        "outage_s": outage,
        "recovery_limit_s": limit,
        "code": _code(),
        "loadavg_start": _loadavg(),
    }
    kube = procs.start_kubeapi(out_dir, kubeconfig)
    lucid = procs.start_lucid(out_dir, ttl, f"{CLIENT_ID}:{CLIENT_SECRET}")
    op: procs.Proc | None = None
    watch = ConsumerWatch(kube.url)
    try:
        grants = create_grants(kube.url, lucid.url, n, profile.refresh_before)
        names = {g.name: g.lucid_id for g in grants}
        watch.start()
        op = procs.start_operator(out_dir, kubeconfig, lucid.url, profile.concurrency)
        deadline = time.time() + 60 + n / 15
        while watch.count() < n:
            if time.time() > deadline or not op.alive():
                raise RuntimeError(f"{watch.count()} of {n} grants serving: see {op.log_path}")
            time.sleep(1.0)
        result["serving_after_start_s"] = time.time() - op.started_at
        log(f"[{n}] every grant serving {result['serving_after_start_s']:.0f}s after start")

        # Longer than the outage: it is ended explicitly, so that the return is known exactly.
        _fault(lucid.url, fault="outage", seconds=outage + 600)
        down = _get(f"{lucid.url}/_emulator/stats")
        log(f"[{n}] Lucid down for {outage:.0f}s")
        time.sleep(outage)
        if not op.alive():
            raise RuntimeError(f"operator exited: see {op.log_path}")
        before_up = _get(f"{lucid.url}/_emulator/stats")
        watch.mark_return(time.time())
        _fault(lucid.url, fault="clear")
        up = time.time()
        cursor = int(_get(f"{lucid.url}/_emulator/refreshes?since=0")["next"])
        log(f"[{n}] Lucid back; waiting up to {limit:.0f}s for every grant to serve")

        during = lucid_calls(before_up) - lucid_calls(down)
        end = up + limit
        cpu_up = op.cpu()
        while len(watch.served) < n and time.time() < end and op.alive():
            time.sleep(1.0)
        recovered_at = time.time()
        cpu_recovery = op.cpu() - cpu_up
        after = _get(f"{lucid.url}/_emulator/stats")
        page = _get(f"{lucid.url}/_emulator/refreshes?since={cursor}")
        ids = set(names.values())
        refreshed_at = sorted(float(at) for gid, at, _ in page["records"] if gid in ids)
        recovering = [t for t in refreshed_at if t < recovered_at]
        wrong = _settled(kube.url, lucid.url, names)
        served = list(watch.served.values())
        calls_after = lucid_calls(after) - lucid_calls(before_up)
        refreshes_after = after["refresh_count"] - before_up["refresh_count"]
        result.update(
            calls_during_outage=sum(during.values()),
            calls_during_outage_by_endpoint=dict(during),
            calls_per_minute_during_outage=sum(during.values()) / (outage / 60),
            served=len(served),
            not_served_in_limit=n - len(served),
            recovery_p50_s=percentile(served, 50),
            recovery_p99_s=percentile(served, 99),
            recovery_max_s=max(served) if len(served) == n else math.nan,
            peak_refreshes_per_s=peak_rate(refreshed_at, up, recovered_at),
            # Why recovery takes what it takes: the wait for the first refresh (the gate's
            # probe), then the refresh rate, and whether the operator had a core to itself.
            first_refresh_s=recovering[0] - up if recovering else math.nan,
            mean_refreshes_per_s=(len(recovering) - 1) / (recovering[-1] - recovering[0])
            if len(recovering) > 1
            else math.nan,
            operator_cpu_share_recovery=cpu_recovery / (recovered_at - up),
            other_calls_after_return=sum(calls_after.values()) - refreshes_after,
            lost=len(wrong["lost"]),
            flagged=len(wrong["flagged"]),
            not_serving_at_end=len(wrong["not_serving"]),
            wrong=wrong,
            loadavg_end=_loadavg(),
        )
        return result
    finally:
        watch.stop()
        if op is not None:
            op.stop()
        lucid.stop()
        kube.stop()


def _s(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.1f}"


HEADER = (
    "| grants (access TTL, outage) | code | Lucid calls during the outage (a minute) "
    "| return to serving p50 / p99 / max (s) | first refresh after the return (s) "
    "| refreshes a second after the return: peak (other calls) / mean "
    "| operator CPU while recovering (cores) | refresh tokens lost | grants flagged "
    "| load average start / end |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def row(r: dict[str, Any]) -> str:
    late = r["not_served_in_limit"]
    worst = _s(r["recovery_max_s"]) if not late else f"> {r['recovery_limit_s']:.0f} ({late} not)"
    return (
        f"| {r['grants']:,} ({r['access_ttl']:g} s, {r['outage_s']:.0f} s) | {r['code']} "
        f"| {r['calls_during_outage']:,} ({r['calls_per_minute_during_outage']:,.0f}) "
        f"| {_s(r['recovery_p50_s'])} / {_s(r['recovery_p99_s'])} / {worst} "
        f"| {_s(r['first_refresh_s'])} "
        f"| {r['peak_refreshes_per_s']} ({r['other_calls_after_return']}) "
        f"/ {_s(r['mean_refreshes_per_s'])} | {r['operator_cpu_share_recovery']:.2f} "
        f"| {r['lost']} | {r['flagged']} | {r['loadavg_start']} / {r['loadavg_end']} |"
    )


SECTION = "## A Lucid outage of three access lifetimes"

NOTES = """\
How to read it:

- Code: the commit measured. 87d20c0 and ada43f5 are code before the Lucid gate (ada43f5 is
  the parent of 00026ca, which put refreshes through it), run with this scenario file copied
  in: docs/lucid-outages.md gives the commands.
- Lucid calls during the outage: every call Lucid received while it answered 503 with an HTML
  maintenance page, from the emulator's counters; in brackets, a minute.
- Return to serving: from the end of the outage until the grant's consumer Secret holds an
  access token Lucid issued after it (a watch on the namespace's Secrets); every access token
  expired during the outage. A grant not served within the recovery limit (300 s + N/20 s) is
  counted, not waited for.
- Peak refreshes a second: the most refreshes Lucid performed in any one second after the return
  (its refresh log, sliding by each refresh); in brackets, every other call after the return
  (probes, failed calls). The operator's default token bucket allows 100 calls a second and a
  burst of 10.
- First refresh: from the return to Lucid's first refresh after it (with the gate: the next
  probe, every 5 s, reopens it). Mean: refreshes a second from that first one to the last
  before every grant served. Operator CPU: its CPU seconds per second from the return until
  every grant served (1.00: a whole core; the machine has 2, shared with both emulators).
- Lost: the state Secret's refresh token is not Lucid's live one, at the end (a grant counts if
  it stays so for 10 s). Flagged: the grant says ReauthorizationRequired.
"""


def section(results: list[dict[str, Any]]) -> str:
    lines = [SECTION, "", f"Machine: {procs.machine()}", "", HEADER]
    lines += [row(r) for r in results]
    lines += ["", "Commands:", ""]
    lines += [f"- {r['grants']:,} grants, {r['code']}: `{r['command']}`" for r in results]
    return "\n".join([*lines, "", NOTES])


def publish(path: Path, text: str, title: str = SECTION) -> None:
    """Put the section `title` into a results file, replacing the one it had, keeping the rest."""
    old = path.read_text() if path.exists() else ""
    at = old.find(title)
    if at < 0:
        head, tail = old, ""
    else:
        head, nxt = old[:at], old.find("\n## ", at + len(title))
        tail = "" if nxt < 0 else old[nxt:]
    path.write_text(head.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n" + tail)


def main(argv: list[str] | None = None, prog: str = "python -m bench.outage") -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--grants", default="1000", help="comma-separated grant counts")
    parser.add_argument(
        "--recovery-limit", type=float, help="seconds after the return (default 300 + N/20)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / ".bench-out", help="logs and JSON")
    parser.add_argument("--results", type=Path, help="put the table into this file")
    parser.add_argument(
        "--table", type=Path, nargs="+", help="no run: the table of these result.json files"
    )
    args = parser.parse_args(argv)
    command = f"{prog} " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.table:
        results = [json.loads(path.read_text()) for path in args.table]
    else:
        results = []
        args.out.mkdir(parents=True, exist_ok=True)
        for n in [int(s) for s in args.grants.split(",") if s.strip()]:
            out_dir = Path(tempfile.mkdtemp(prefix=f"outage-n{n}-", dir=args.out))
            print(f"[{n}] logs in {out_dir}", flush=True)
            result = run_outage(
                n, out_dir, log=lambda s: print(s, flush=True), limit=args.recovery_limit
            )
            result["command"] = command
            (out_dir / "result.json").write_text(json.dumps(result, indent=2, default=str))
            print(f"[{n}] written to {out_dir / 'result.json'}", flush=True)
            results.append(result)
    text = section(results)
    print()
    print(text)
    if args.results is not None:
        publish(args.results, text)
        print(f"written to {args.results}")


if __name__ == "__main__":
    main()
