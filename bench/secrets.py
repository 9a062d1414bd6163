"""`python -m bench secrets --unrelated 0,20000`: the operator's memory with many unrelated
Secrets in the namespace it serves (Helm release Secrets can be megabytes each).

The emulated Kubernetes API and the Lucid emulator run as their own processes, as in the
steady-state benchmark. N grants (`--grants`, their profile from bench/run.py) are created, then
the unrelated Secrets (Opaque, unlabelled, `--kb` KB of random data each), then the operator
starts. Once every grant has been adopted and refreshed again (Lucid's refresh count reaches
twice the grants), the operator runs `--settle` seconds more; figures: its resident memory then
(RSS) and at its peak (VmHWM), and the Secrets it listed or watched (the emulator's log).

This file depends only on what bench/ and the emulators offered before the Secret watch had a
label selector, so that the same scenario runs on the code before it (docs/figures.md gives
the command)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from bench import procs
from bench.outage import publish
from bench.run import profile_for
from bench.setup import CLIENT_ID, CLIENT_SECRET, NAMESPACE, SECRETS, create_grants

ROOT = procs.ROOT
SECTION = "## Memory with unrelated Secrets"


async def _create_unrelated(kube_url: str, count: int, kb: int, concurrency: int = 8) -> None:
    slots = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def one(i: int) -> None:
            async with slots:  # the data made in the slot: 20,000 at once are 2.7 GB
                blob = base64.b64encode(os.urandom(kb * 1024)).decode()
                body = {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": f"unrelated-{i:05d}", "labels": {"owner": "helm"}},
                    "data": {"release": blob},
                }
                async with session.post(kube_url + SECRETS.format(ns=NAMESPACE), json=body) as r:
                    if r.status >= 300:
                        raise RuntimeError(f"unrelated Secret {i}: {r.status} {await r.text()}")

        await asyncio.gather(*(one(i) for i in range(count)))


def _code() -> str:
    """The operator code measured: the commit of the tree `lucidgrant` is imported from."""
    import lucidgrant

    tree = Path(lucidgrant.__file__).resolve().parents[2]
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def run_memory(
    grants: int, unrelated: int, kb: int, settle: float, out_dir: Path
) -> dict[str, Any]:
    profile = profile_for(grants)
    out_dir.mkdir(parents=True, exist_ok=True)
    kubeconfig = out_dir / "kubeconfig.yaml"
    kube = procs.start_kubeapi(out_dir, kubeconfig)
    lucid = procs.start_lucid(out_dir, profile.access_ttl, f"{CLIENT_ID}:{CLIENT_SECRET}")
    op: procs.Proc | None = None
    try:
        create_grants(kube.url, lucid.url, grants, profile.refresh_before)
        started = time.time()
        asyncio.run(_create_unrelated(kube.url, unrelated, kb))
        print(f"[{unrelated}] created in {time.time() - started:.0f} s", flush=True)
        op = procs.start_operator(out_dir, kubeconfig, lucid.url, profile.concurrency)
        give_up = op.started_at + 900
        while httpx.get(f"{lucid.url}/_emulator/stats").json()["refresh_count"] < 2 * grants:
            if time.time() > give_up or not op.alive():
                raise RuntimeError(f"grants not refreshed twice: see {op.log_path}")
            time.sleep(1)
        refreshed_at = time.time() - op.started_at
        time.sleep(settle)
        memory = op.memory()
        return {
            "grants": grants,
            "unrelated": unrelated,
            "kb": kb,
            "code": _code(),
            "rss_mb": memory["VmRSS"] / 1024,
            "peak_mb": memory["VmHWM"] / 1024,
            "refreshed_twice_s": refreshed_at,
        }
    finally:
        if op is not None:
            op.stop()
        lucid.stop()
        kube.stop()


HEADER = (
    "| grants | unrelated Secrets | code | operator RSS | operator peak RSS | "
    "all grants refreshed twice |\n| --- | --- | --- | --- | --- | --- |"
)
NOTES = """\
- Unrelated Secrets: Opaque, unlabelled, each holding the given amount of random data, in the
  namespace the operator serves, created before it starts.
- RSS: the operator's resident memory `--settle` seconds after Lucid counted twice as many
  refreshes as grants (every grant adopted and refreshed again); peak: its VmHWM then.
- Code: the commit measured (before `5b99ab7` the Secret watch had no label selector; run
  with this file copied into that tree, see the commands)."""


def section(results: list[dict[str, Any]]) -> str:
    lines = [SECTION, "", f"Machine: {procs.machine()}", "", HEADER]
    lines += [
        f"| {r['grants']:,} | {r['unrelated']:,} x {r['kb']} KB | {r['code']} "
        f"| {r['rss_mb']:.0f} MB | {r['peak_mb']:.0f} MB | {r['refreshed_twice_s']:.0f} s |"
        for r in results
    ]
    lines += ["", "Commands:", ""]
    lines += sorted({f"- {r['code']}: `{r['command']}`" for r in results})
    return "\n".join([*lines, "", NOTES])


def main(argv: list[str] | None = None, prog: str = "python -m bench.secrets") -> None:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--grants", type=int, default=100, help="grants (100)")
    parser.add_argument("--unrelated", default="0,20000", help="comma-separated Secret counts")
    parser.add_argument("--kb", type=int, default=100, help="KB of data per unrelated Secret")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds before measuring")
    parser.add_argument("--out", type=Path, default=ROOT / ".bench-out", help="logs and JSON")
    parser.add_argument("--results", type=Path, help="put the table into this file")
    parser.add_argument(
        "--table", type=Path, nargs="+", help="no run: the table of these result.json files"
    )
    args = parser.parse_args(argv)
    command = f"{prog} " + shlex.join(sys.argv[1:] if argv is None else argv)
    results = [json.loads(path.read_text()) for path in args.table or []]
    if not args.table:
        args.out.mkdir(parents=True, exist_ok=True)
        for count in [int(s) for s in args.unrelated.split(",") if s.strip()]:
            out_dir = Path(tempfile.mkdtemp(prefix=f"secrets-{count}-", dir=args.out))
            print(f"[{count}] logs in {out_dir}", flush=True)
            result = run_memory(args.grants, count, args.kb, args.settle, out_dir)
            result["command"] = command
            (out_dir / "result.json").write_text(json.dumps(result, indent=2))
            print(f"[{count}] {json.dumps(result)}", flush=True)
            results.append(result)
    text = section(results)
    print()
    print(text)
    if args.results is not None:
        publish(args.results, text, SECTION)
        print(f"written to {args.results}")


if __name__ == "__main__":
    main()
