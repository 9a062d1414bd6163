from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lucidgrant_testbed import CRDS
from lucidgrant_testbed.kubeapi import KubeAPI
from lucidgrant_testbed.lucid import LucidEmulator
from lucidgrant_testbed.threaded import running_in_thread

from .harness import CLIENT_ID, CLIENT_SECRET, Cluster, OperatorProcess, dump, leaked
from .install import OPERATOR, installed


@pytest.fixture
def install_mode() -> str:
    """How deploy/ is installed for the test (parametrize it to change): the operator runs
    with --namespace default, so the namespaced install is the default."""
    return "namespaced"


@pytest.fixture
def admission_plugins() -> tuple[str, ...]:
    """Optional admission plugins switched on (parametrize it): none, as in kube-apiserver."""
    return ()


@pytest.fixture
def kube_api(
    tmp_path: Path, install_mode: str, admission_plugins: tuple[str, ...]
) -> Iterator[tuple[KubeAPI, Path]]:
    """The emulated API with deploy/'s RBAC enforced: the operator's kubeconfig authenticates
    as its ServiceAccount (the tests' own clients, with no credentials, are the cluster
    admin)."""
    with running_in_thread(KubeAPI([CRDS], admission=admission_plugins)) as (api, _):
        api.apply(installed(install_mode))
        yield api, api.write_kubeconfig(tmp_path / "kubeconfig", user=OPERATOR)


@pytest.fixture
def admin_kubeconfig(kube_api: tuple[KubeAPI, Path], tmp_path: Path) -> Path:
    """A kubeconfig for a person's kubectl: the cluster admin."""
    return kube_api[0].write_kubeconfig(tmp_path / "admin-kubeconfig")


@pytest.fixture
def cluster(kube_api: tuple[KubeAPI, Path]) -> Cluster:
    return Cluster(kube_api[0].url)


@pytest.fixture
def access_ttl() -> float:
    """Seconds an access token lives at the Lucid emulator (parametrize it to change): a test
    that waits for rotations waits a few of these."""
    return 6.0


@pytest.fixture
def lucid(access_ttl: float) -> Iterator[LucidEmulator]:
    emulator = LucidEmulator(access_ttl=access_ttl, refresh_ttl=3600.0)
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
        if proc.proc.poll() is None:
            try:
                texts.append(proc.metrics())
            except httpx.TransportError:  # a test that failed mid-shutdown: the port is closed
                pass
        proc.stop()
        texts += proc.said()
    texts.append(dump(cluster.events()))
    texts.append(dump(cluster.statuses()))
    secrets = lucid.all_issued_secrets() | {CLIENT_SECRET}
    assert not leaked(secrets, texts), "a token or client secret leaked"
