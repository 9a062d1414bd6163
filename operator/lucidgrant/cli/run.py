"""`lucidgrant run`: check what would only fail later (settings, cluster configuration, the
HTTP port) and stop with one line if something is wrong, log one line saying what this process
will do, then hand over to kopf."""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import replace

import click

from lucidgrant import __version__
from lucidgrant.cli.common import Command, fail
from lucidgrant.cli.logs import FORMATS, configure_logging
from lucidgrant.config import ENVIRONMENT, Settings, SettingsError, parse_selector
from lucidgrant.kube import KubeConfigError, load_configuration

log = logging.getLogger(__name__)


def environment_help() -> str:
    """The epilog of `run --help`: every variable `Settings.from_env` reads, with its default."""
    width = max(len(var.name) for var in ENVIRONMENT)
    lines = [f"  {var.name.ljust(width)}  {var.help} [{var.default()}]" for var in ENVIRONMENT]
    # \b keeps click from rewrapping the list into one paragraph.
    return "\b\nEnvironment variables [default]:\n" + "\n".join(lines)


def check_port(
    host: str, port: int, names: tuple[str, str] = ("LUCIDGRANT_HTTP_PORT", "LUCIDGRANT_HTTP_HOST")
) -> None:
    """Bind the HTTP address once, as aiohttp will (SO_REUSEADDR), to fail now rather than in
    kopf's start-up handler, which would retry every minute."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        fail(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}): stop the process that "
            f"holds it, or set {names[0]} (and {names[1]})"
        )


def summary(settings: Settings, namespaces: tuple[str, ...]) -> str:
    scope = ",".join(namespaces) if namespaces else "all"
    if settings.selector:
        scope += " selector " + ",".join(f"{k}={v}" for k, v in settings.selector.items())
    leader = (
        f"on (Lease {settings.pod_namespace}/{settings.lease_name})"
        if settings.leader_election
        else "off"
    )
    flow = (
        f"web flow {settings.flow_host}:{settings.flow_port} for {settings.external_url}"
        if settings.external_url
        else "web flow off"
    )
    return (
        f"lucidgrant {__version__} starting: namespaces {scope}; Lucid {settings.lucid_api_url}; "
        f"HTTP {settings.http_host}:{settings.http_port}; {flow}; leader election {leader}; "
        f"identity {settings.identity}"
    )


@click.command(cls=Command, epilog=environment_help())
@click.option(
    "--namespace", "-n", "namespaces", multiple=True, help="Watch this namespace (repeatable)."
)
@click.option("--all-namespaces", "-A", is_flag=True, help="Watch every namespace.")
@click.option(
    "--selector",
    "-l",
    default=None,
    help="Handle only grants with these labels (key=value,...): one shard per replica set. "
    "Overrides LUCIDGRANT_SELECTOR.",
)
@click.option(
    "--log-format",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="text for people; json for one JSON object a line (time, level, logger, message).",
)
@click.option("--verbose", "-v", is_flag=True, help="Log debug messages, and every watch event.")
def run(
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    selector: str | None,
    log_format: str,
    verbose: bool,
) -> None:
    """Run the operator. In a pod it uses the in-cluster configuration; elsewhere KUBECONFIG (or
    ~/.kube/config). It stops at once, with one line saying why, when that configuration, a
    setting or the HTTP port is unusable."""
    if bool(namespaces) == all_namespaces:
        raise click.UsageError("give --namespace (one or more) or --all-namespaces")
    try:
        settings = Settings.from_env()
        if selector is not None:
            settings = replace(settings, selector=parse_selector(selector))
    except SettingsError as exc:
        fail(f"{exc} (see 'lucidgrant run --help')")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--selector") from None
    try:
        asyncio.run(load_configuration())
    except KubeConfigError as exc:
        fail(str(exc))
    check_port(settings.http_host, settings.http_port)
    if settings.external_url:
        flow_names = ("LUCIDGRANT_FLOW_PORT", "LUCIDGRANT_FLOW_HOST")
        check_port(settings.flow_host, settings.flow_port, flow_names)
    configure_logging(log_format, verbose)
    log.info("%s", summary(settings, namespaces))

    import kopf  # here, so that the other commands start without loading the operator

    import lucidgrant.handlers  # noqa: F401  (registers the kopf handlers)

    kopf.run(
        standalone=True,
        clusterwide=all_namespaces,
        namespaces=list(namespaces),
        memo=kopf.Memo(settings=settings),
    )
