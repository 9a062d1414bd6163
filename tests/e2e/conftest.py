from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lucidgrant.testbed.kubeapi import KubeAPI
from lucidgrant.testbed.lucid import LucidEmulator
from lucidgrant.testbed.threaded import running_in_thread

from .harness import CLIENT_ID, CLIENT_SECRET, CRDS, Cluster, OperatorProcess, dump, leaked


@pytest.fixture
def kube_api(tmp_path: Path) -> Iterator[tuple[KubeAPI, Path]]:
    with running_in_thread(KubeAPI([CRDS])) as (api, _):
        yield api, api.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def cluster(kube_api: tuple[KubeAPI, Path]) -> Cluster:
    return Cluster(kube_api[0].url)


@pytest.fixture
def lucid() -> Iterator[LucidEmulator]:
    emulator = LucidEmulator(access_ttl=6.0, refresh_ttl=3600.0)
    emulator.add_client(CLIENT_ID, CLIENT_SECRET)
    with running_in_thread(emulator) as (svc, _):
        yield svc


@pytest.fixture
def start_operator(
    kube_api: tuple[KubeAPI, Path], lucid: LucidEmulator, cluster: Cluster, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    """Start operator processes; at the end stop them and check that no token or client secret
    the test saw reached a log line, an event or a status."""
    started: list[OperatorProcess] = []

    def start(*args: str, **env: str) -> OperatorProcess:
        log = tmp_path / f"operator-{len(started)}.log"
        proc = OperatorProcess(
            kube_api[1], lucid.url, log, args=args or ("--namespace", "default"), **env
        )
        started.append(proc)
        return proc

    yield start
    texts: list[Any] = []
    for proc in started:
        proc.stop()
        texts.append(proc.logs())
    texts.append(dump(cluster.events()))
    texts.append(dump(cluster.statuses()))
    secrets = lucid.all_issued_secrets() | {CLIENT_SECRET}
    assert not leaked(secrets, texts), "a token or client secret leaked"
