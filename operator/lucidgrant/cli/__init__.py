"""The command line: `lucidgrant run` starts the operator; other subcommands serve people."""

from __future__ import annotations

from typing import Any, NoReturn

import click

from lucidgrant import __version__
from lucidgrant.cli.authorize import authorize_options, run_authorize
from lucidgrant.cli.common import CONTEXT, Group, run_main
from lucidgrant.cli.run import run


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


cli.add_command(run)


@cli.command(name="authorize")
@authorize_options
def authorize_command(**options: Any) -> None:
    """Authorize the LucidGrant NAME in a browser, on this machine, and write the refresh token
    into the grant's bootstrap Secret (as `kubectl lucidgrant authorize` does)."""
    run_authorize(**options)
