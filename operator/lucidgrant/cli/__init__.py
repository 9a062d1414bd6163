"""The command line: `lucidgrant run` starts the operator; other subcommands serve people."""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from typing import Any

import click

from lucidgrant import __version__
from lucidgrant.cli.authorize import authorize_options, run_authorize
from lucidgrant.config import Settings, parse_selector


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """lucidgrant: keeps Lucid OAuth grants alive forever."""


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(__version__)


@main.command()
@click.option(
    "--namespace", "-n", "namespaces", multiple=True, help="Watch this namespace (repeatable)."
)
@click.option("--all-namespaces", "-A", is_flag=True, help="Watch every namespace.")
@click.option(
    "--selector",
    "-l",
    default=None,
    help="Handle only grants with these labels (key=value,...): one shard per replica set.",
)
@click.option("--verbose", "-v", is_flag=True, help="Log debug messages.")
def run(
    namespaces: tuple[str, ...], all_namespaces: bool, selector: str | None, verbose: bool
) -> None:
    """Run the operator (in-cluster config in a pod, KUBECONFIG elsewhere)."""
    if bool(namespaces) == all_namespaces:
        raise click.UsageError("give --namespace (one or more) or --all-namespaces")
    import kopf  # here, so that `kubectl lucidgrant` starts without loading the operator

    import lucidgrant.handlers  # noqa: F401  (registers the kopf handlers)

    kopf.configure(verbose=verbose, log_prefix=False)
    # kopf logs every handled watch event at INFO and httpx every request: at thousands of
    # grants that is noise, so they speak only with --verbose.
    if not verbose:
        for name in ("kopf.objects", "httpx", "aiohttp.access"):
            logging.getLogger(name).setLevel(logging.WARNING)
    settings = Settings.from_env()
    if selector is not None:
        try:
            settings = replace(settings, selector=parse_selector(selector))
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    kopf.run(
        standalone=True,
        clusterwide=all_namespaces,
        namespaces=list(namespaces),
        memo=kopf.Memo(settings=settings),
    )
    sys.exit(0)


@main.command(name="demo")
@click.option("--duration", default=60.0, show_default=True, help="Seconds to run.")
@click.option("--access-ttl", default=9.0, show_default=True, help="Access token lifetime (s).")
def demo_command(duration: float, access_ttl: float) -> None:
    """Run the operator against emulators and show tokens rotating, live."""
    from lucidgrant.demo import run_demo

    run_demo(duration, access_ttl)


@main.command(name="authorize")
@authorize_options
def authorize_command(**options: Any) -> None:
    """Authorize the LucidGrant NAME in a browser and write its bootstrap Secret."""
    run_authorize(**options)
