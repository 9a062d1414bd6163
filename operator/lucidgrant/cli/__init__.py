"""The command line: `lucidgrant run` starts the operator; other subcommands serve people."""

from __future__ import annotations

from typing import Any, NoReturn

import click

from lucidgrant import __version__
from lucidgrant.cli.authorize import authorize_options, run_authorize
from lucidgrant.cli.common import CONTEXT, Group, run_main
from lucidgrant.cli.logs import FORMATS
from lucidgrant.cli.run import environment_help, run_operator


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(__version__, "--version", message="%(prog)s %(version)s")
def cli() -> None:
    """lucidgrant keeps Lucid OAuth grants alive: it refreshes each LucidGrant's tokens before
    they expire, stores every rotated refresh token first, and writes the access token into a
    Secret that pods mount. `kubectl lucidgrant` (the kubectl-lucidgrant command) shows and
    acts on grants."""


def main() -> NoReturn:
    run_main(cli, "lucidgrant")


@cli.command()
def version() -> None:
    """Print the version (as --version does)."""
    click.echo(__version__)


@cli.command(epilog=environment_help())
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
    run_operator(namespaces, all_namespaces, selector, log_format, verbose)


@cli.command(name="demo")
@click.option("--duration", default=60.0, show_default=True, help="Seconds to run.")
@click.option("--access-ttl", default=9.0, show_default=True, help="Access token lifetime (s).")
def demo_command(duration: float, access_ttl: float) -> None:
    """Run the operator against emulators and show tokens rotating, live."""
    from lucidgrant.demo import run_demo

    run_demo(duration, access_ttl)


@cli.command(name="authorize")
@authorize_options
def authorize_command(**options: Any) -> None:
    """Authorize the LucidGrant NAME in a browser, on this machine, and write the refresh token
    into the grant's bootstrap Secret (as `kubectl lucidgrant authorize` does)."""
    run_authorize(**options)
