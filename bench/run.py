"""`python -m bench`: N grants, the real operator for a set time, and the figures.

One run per size: start the Kubernetes API emulator and the Lucid emulator (each its own
process), create N grants, start the operator, and poll Lucid's refresh log while the operator
adopts every grant and then keeps refreshing them. The steady-state window starts once every
grant has had a routine refresh (its second), so adoption and its follow-ups (introspection,
consumer Secret creates and reads) are over even on a busy machine; calls, CPU and refresh rates
are counted inside it, refreshes and Lucid calls from the same Lucid snapshots. After the
operator stops, the one-shot baseline refreshes a few grants of its own, one process per
refresh."""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import procs
from bench.report import (
    baseline_table,
    kube_delta,
    lucid_calls,
    punctuality,
    table,
)
from bench.setup import (
    CLIENT_ID,
    CLIENT_SECRET,
    ONESHOT_NAMESPACE,
    create_grants,
    create_oneshot_secrets,
)

ROOT = procs.ROOT


@dataclass
class Profile:
    n: int
    # Lucid's access-token lifetime. Half a second over a whole number: Lucid's `expires_in` is
    # rounded down, so the operator's idea of the expiry is a known 0.5 s early.
    access_ttl: float
    refresh_before: str
    refresh_before_s: float
    # How long the operator runs, from its start: adoption of every grant, then at least one
    # refresh interval until every grant has had its routine refresh, then the measured window.
    # On a busy machine adoption takes longer, so the run goes on until the window has lasted
    # one access lifetime (every grant refreshed in it), but never past three durations.
    duration: float
    concurrency: int = 32
    oneshot_samples: int = 10


# Refreshes come every (TTL - margin) seconds per grant, margin = min(refreshBefore, TTL/3).
PROFILES: dict[int, Profile] = {
    20: Profile(20, 6.5, "2s", 2.0, 20.0, oneshot_samples=3),
    100: Profile(100, 20.5, "5s", 5.0, 60.0),
    1000: Profile(1000, 40.5, "10s", 10.0, 120.0),
    10000: Profile(10000, 240.5, "30s", 30.0, 500.0),
}


def profile_for(n: int) -> Profile:
    if n in PROFILES:
        return PROFILES[n]
    base = PROFILES[min(PROFILES, key=lambda k: abs(math.log(k) - math.log(max(n, 1))))]
    return Profile(n, base.access_ttl, base.refresh_before, base.refresh_before_s, base.duration)


def _get(url: str) -> dict[str, Any]:
    response = httpx.get(url, timeout=60)
    response.raise_for_status()
    return dict(response.json())


def _snapshot(kube: procs.Proc, lucid: procs.Proc, op: procs.Proc) -> dict[str, Any]:
    return {
        "t": time.time(),
        "kube_stats": _get(f"{kube.url}/_emulator/stats")["requests"],
        "lucid_stats": _get(f"{lucid.url}/_emulator/stats"),
        "cpu": {"kubeapi": kube.cpu(), "lucid": lucid.cpu(), "operator": op.cpu()},
    }


def _oneshot(
    kubeconfig: Path, lucid_url: str, kube_url: str, samples: int
) -> dict[str, float | int]:
    """Refresh `samples` grants the one-shot way; CPU from the children's rusage."""
    if samples <= 0:
        return {"samples": 0}
    names = create_oneshot_secrets(kube_url, lucid_url, samples)
    env = {**os.environ, "LUCID_CLIENT_ID": CLIENT_ID, "LUCID_CLIENT_SECRET": CLIENT_SECRET}
    cpu = wall = 0.0
    for name, _ in names:
        argv = [
            sys.executable,
            "-m",
            "bench.oneshot",
            "--kubeconfig",
            str(kubeconfig),
            "--namespace",
            ONESHOT_NAMESPACE,
            "--secret",
            name,
            "--lucid",
            lucid_url,
        ]
        started = time.perf_counter()
        pid = os.posix_spawn(sys.executable, argv, env)
        _, status, usage = os.wait4(pid, 0)
        wall += time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"one-shot refresh of {name} failed")
        cpu += usage.ru_utime + usage.ru_stime
    return {"samples": samples, "cpu_ms": cpu / samples * 1000, "wall_ms": wall / samples * 1000}


def _start_profiler(pid: int, out_dir: Path) -> Any:
    """py-spy (installed by hand, never a dependency) sampling the operator into folded stacks."""
    import shutil
    import subprocess

    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = out_dir / "operator.folded"
    argv = [exe, "record", "--pid", str(pid), "--format", "raw", "--rate", "50", "--nonblocking"]
    return subprocess.Popen(
        [*argv, "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def run_size(
    profile: Profile, out_dir: Path, log: Any = print, *, profiler: bool = False
) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    kubeconfig = out_dir / "kubeconfig.yaml"
    kube = procs.start_kubeapi(out_dir, kubeconfig)
    lucid = procs.start_lucid(out_dir, profile.access_ttl, f"{CLIENT_ID}:{CLIENT_SECRET}")
    op: procs.Proc | None = None
    try:
        t0 = time.time()
        grants = create_grants(kube.url, lucid.url, profile.n, profile.refresh_before)
        by_id = {g.lucid_id: g for g in grants}
        log(f"[{profile.n}] created {profile.n} grants in {time.time() - t0:.1f}s")

        op = procs.start_operator(out_dir, kubeconfig, lucid.url, profile.concurrency)
        op_start = op.started_at
        spy = _start_profiler(op.pid, out_dir) if profiler else None
        rss_ready = op.memory()["VmRSS"]
        records: list[tuple[str, float, float]] = []
        cursor = 0
        refreshed: Counter[str] = Counter()
        window_start: dict[str, Any] | None = None
        adopted_logged = False
        peak_rss = 0
        end = op_start + profile.duration
        give_up = op_start + 3 * profile.duration
        next_note = time.time() + 15
        while time.time() < give_up and (
            time.time() < end
            or window_start is None
            or time.time() < window_start["t"] + profile.access_ttl
        ):
            time.sleep(1.0)
            if not op.alive():
                raise RuntimeError(f"operator exited: see {op.log_path}")
            page = _get(f"{lucid.url}/_emulator/refreshes?since={cursor}")
            cursor = int(page["next"])
            for gid, at, prev in page["records"]:
                if gid in by_id:
                    records.append((gid, float(at), float(prev)))
                    refreshed[gid] += 1
            peak_rss = max(peak_rss, op.memory()["VmRSS"])
            if not adopted_logged and len(refreshed) == len(by_id):
                adopted_logged = True
                log(f"[{profile.n}] all grants adopted {time.time() - op_start:.1f}s after start")
            # Adoption's follow-ups lag its refresh under load; a grant's second refresh is routine.
            if window_start is None and min(refreshed[g] for g in by_id) >= 2:
                window_start = _snapshot(kube, lucid, op)
                log(f"[{profile.n}] window starts {window_start['t'] - op_start:.1f}s after start")
            if time.time() >= next_note:
                next_note += 15
                log(
                    f"[{profile.n}] t={time.time() - op_start:.0f}s adopted={len(refreshed)} "
                    f"refreshes={len(records)} operator cpu={op.cpu():.1f}s"
                )
        window_end = _snapshot(kube, lucid, op)
        page = _get(f"{lucid.url}/_emulator/refreshes?since={cursor}")
        for gid, at, prev in page["records"]:
            if gid in by_id:
                records.append((gid, float(at), float(prev)))
        memory = op.memory()
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
        op.stop()
        op_stopped = time.time()

        punct = punctuality(
            records,
            by_id,
            profile.access_ttl,
            profile.refresh_before_s,
            window_end["t"],
            steady_from=window_start["t"] if window_start else None,
        )
        first = punct.pop("first_refresh")
        result: dict[str, Any] = {
            **asdict(profile),
            "access_ttl": profile.access_ttl,
            **punct,
            "time_to_all_scheduled": (max(first.values()) - op_start)
            if len(first) == len(by_id)
            else math.nan,
            "operator_rss_mb": max(memory.get("VmHWM", 0), peak_rss) / 1024,
            "operator_rss_end_mb": memory["VmRSS"] / 1024,
            "operator_rss_ready_mb": rss_ready / 1024,
            "rss_kb_per_grant": (max(memory.get("VmHWM", 0), peak_rss) - rss_ready) / profile.n,
        }
        if window_start is not None:
            w0, w1 = window_start, window_end
            span = w1["t"] - w0["t"]
            # Refreshes and calls from the same Lucid snapshots, so none falls between them.
            in_window = w1["lucid_stats"]["refresh_count"] - w0["lucid_stats"]["refresh_count"]
            lucid_delta = lucid_calls(w1["lucid_stats"]) - lucid_calls(w0["lucid_stats"])
            kube_calls = kube_delta(w0["kube_stats"], w1["kube_stats"])
            per = max(in_window, 1)
            result.update(
                window_s=span,
                window_refreshes=in_window,
                refreshes_per_s=in_window / span if span > 0 else math.nan,
                lucid_calls=dict(lucid_delta),
                lucid_per_refresh=sum(lucid_delta.values()) / per,
                kube_calls=dict(kube_calls),
                kube_per_refresh={k: v / per for k, v in sorted(kube_calls.items())},
                operator_cpu_ms=(w1["cpu"]["operator"] - w0["cpu"]["operator"]) / per * 1000,
                kubeapi_cpu_ms=(w1["cpu"]["kubeapi"] - w0["cpu"]["kubeapi"]) / per * 1000,
                lucid_cpu_ms=(w1["cpu"]["lucid"] - w0["cpu"]["lucid"]) / per * 1000,
                operator_cpu_share=(w1["cpu"]["operator"] - w0["cpu"]["operator"]) / span,
                emulators_cpu_share=(
                    w1["cpu"]["kubeapi"]
                    - w0["cpu"]["kubeapi"]
                    + w1["cpu"]["lucid"]
                    - w0["cpu"]["lucid"]
                )
                / span,
            )
        else:
            result.update(
                refreshes_per_s=math.nan,
                lucid_per_refresh=math.nan,
                kube_per_refresh={},
                operator_cpu_ms=math.nan,
                kubeapi_cpu_ms=math.nan,
                lucid_cpu_ms=math.nan,
            )
        result["operator_run_s"] = op_stopped - op_start
        result["oneshot"] = _oneshot(kubeconfig, lucid.url, kube.url, profile.oneshot_samples)
        return result
    finally:
        if op is not None:
            op.stop()
        lucid.stop()
        kube.stop()


NOTES = """\
How to read it:

- Routine refresh: every refresh of a grant after its first (the first adopts the bootstrap
  refresh token and also introspects it). Counts, rates, calls and CPU per refresh come from the
  steady-state window: from the moment every grant has had a routine refresh (adoption and its
  follow-up calls are over) to the end of the run.
- Late vs due: Lucid's refresh time minus the due time the operator computes
  (`lucidgrant.timing.refresh_due_at`: the access token's expiry minus
  min(refreshBefore, lifetime / 3) minus the grant's jitter), over every routine refresh of the
  run. Expired tokens: routine refreshes that came after the old access token's expiry, plus
  grants whose token expired unrefreshed by the end (target 0).
- Kubernetes calls: from the emulated API server's request log. A routine refresh is 3 Secret
  patches (take the lock; store the rotated tokens and unlock; the consumer Secret) and 1 status
  patch; no reads. `watch` rows are the operator's watch reconnections.
- Operator CPU: user + system time of the operator process over the window, divided by the
  refreshes in it (watch-event handling included). RSS: the operator's peak resident memory;
  KB per grant is (peak - resident at start) / grants.
- Start to all grants scheduled: from starting the operator (grants already created) to the last
  grant's first refresh at Lucid (adoption; its next refresh is scheduled in the same step).
- One-shot baseline: `bench/oneshot.py` started once per refresh (start Python, load the
  kubernetes client and kubeconfig, read the Secret, refresh with httpx, patch the Secret); CPU
  from the children's rusage. Run in the same invocation after the operator stopped.
- Lifetimes are compressed so that every grant rotates within the run; at 10,000 grants the TTL
  is set so the refresh rate (about 50/s) stays within what 2 cores give three Python processes.
"""


def render(results: list[dict[str, Any]], command: str) -> str:
    parts = [
        "# Benchmark results",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {procs.machine()}",
        "",
        table(results),
        "",
        "One-shot baseline (Lucid's sample-code style: one process per grant per refresh):",
        "",
        baseline_table(results),
        "",
        "Kubernetes calls per routine refresh, by verb (steady-state window):",
        "",
    ]
    for r in results:
        kube = ", ".join(f"`{k}` {v:.3f}" for k, v in r.get("kube_per_refresh", {}).items())
        parts.append(f"- {r['n']:,} grants: {kube or 'n/a'}")
    parts += ["", NOTES]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--sizes", default="100,1000,10000", help="comma-separated grant counts (100,1000,10000)"
    )
    parser.add_argument("--quick", action="store_true", help="CI size: 20 grants for 20 s")
    parser.add_argument("--duration", type=float, help="override the operator's run time (s)")
    parser.add_argument("--access-ttl", type=float, help="override Lucid's access-token TTL (s)")
    parser.add_argument("--oneshot", type=int, help="override the one-shot sample count")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the operator (operator.folded in --out)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / ".bench-out", help="logs and JSON")
    parser.add_argument(
        "--results",
        type=Path,
        help="write the markdown table here (default bench/RESULTS.md, none with --quick)",
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="*",
        default=[],
        help="result.json files of earlier runs to add to the table",
    )
    args = parser.parse_args(argv)
    sizes = [20] if args.quick else [int(s) for s in args.sizes.split(",") if s.strip()]
    results_path = args.results or (None if args.quick else ROOT / "bench" / "RESULTS.md")
    command = (
        "make bench"
        if argv is None and len(sys.argv) == 1
        else ("python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv))
    )
    args.out.mkdir(parents=True, exist_ok=True)
    results = [json.loads(path.read_text()) for path in args.merge]
    for n in sizes:
        profile = profile_for(n)
        if args.duration:
            profile.duration = args.duration
        if args.access_ttl:
            profile.access_ttl = args.access_ttl
        if args.oneshot is not None:
            profile.oneshot_samples = args.oneshot
        out_dir = Path(tempfile.mkdtemp(prefix=f"n{n}-", dir=args.out))
        print(f"[{n}] logs in {out_dir}", flush=True)
        result = run_size(
            profile, out_dir, log=lambda s: print(s, flush=True), profiler=args.profile
        )
        (out_dir / "result.json").write_text(json.dumps(result, indent=2, default=str))
        results.append(result)
    results.sort(key=lambda r: int(r["n"]))
    text = render(results, command)
    print()
    print(text)
    if results_path is not None:
        # Sections other scenarios wrote (the outage, bench/outage.py) stay.
        kept = results_path.read_text() if results_path.exists() else ""
        at = kept.find("\n## ")
        results_path.write_text(text + (kept[at:] if at >= 0 else ""))
        print(f"written to {results_path}")
