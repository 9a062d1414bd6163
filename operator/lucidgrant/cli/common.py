"""What both command lines share: help that is never cut short, one-line errors with a
non-zero exit, and kubectl's --kubeconfig, --context and --namespace."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, NoReturn, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

# Wide enough that option and command descriptions are not wrapped into a column of stubs.
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Command(click.Command):
    """A command whose line in its group's help is its whole first paragraph (click would cut
    it at about 45 characters and add '...')."""

    def get_short_help_str(self, limit: int = 45) -> str:
        text = self.short_help or self.help or ""
        return " ".join(text.split("\n\n")[0].split())


class Group(click.Group):
    command_class = Command


class AuthorizeError(Exception):
    """A failure of `authorize` to tell the person; the message never holds a token or a
    secret."""


def tell(message: str) -> None:
    """A line for the person, on stderr: stdout is kept for what a script reads."""
    click.echo(message, err=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr and a non-zero exit: what went wrong and what to do."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def run_main(group: click.Group, prog_name: str) -> NoReturn:
    """Run `group` as a program: usage errors and failures as one line, as kubectl prints them,
    instead of click's usage block."""
    try:
        code = group.main(prog_name=prog_name, standalone_mode=False)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else prog_name
        fail(f"{exc.format_message()} (see '{where} --help')", exc.exit_code)
    except click.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
    except click.Abort:
        click.echo("", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def kube_options(fn: F) -> F:
    """kubectl's flags for reaching a cluster and picking a namespace."""
    decorators = [
        click.option(
            "--namespace", "-n", help="The namespace (default: the kubeconfig context's)."
        ),
        click.option(
            "--kubeconfig",
            type=click.Path(dir_okay=False),
            help="The kubeconfig file (default: KUBECONFIG, else ~/.kube/config).",
        ),
        click.option("--context", help="The kubeconfig context (default: its current one)."),
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


def current_namespace(kubeconfig: str | None = None, context: str | None = None) -> str:
    """The namespace of the kubeconfig's context (as kubectl picks it), else default."""
    try:
        from kubernetes.config.kube_config import list_kube_config_contexts

        contexts, active = list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=kubeconfig or os.environ.get("KUBECONFIG")
        )
        chosen = next((c for c in contexts if c.get("name") == context), None) if context else None
        return str(((chosen or active).get("context") or {}).get("namespace") or "default")
    except Exception:  # no kubeconfig, or an unusual one: kubectl's default then
        return "default"


def parse_time(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def human(seconds: float) -> str:
    """A duration as kubectl prints ages (apimachinery's duration.HumanDuration): 45s, 5m30s,
    12m, 3h20m, 20h, 2d5h, 179d."""
    s = int(seconds)
    if s < 120:
        return f"{max(s, 0)}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y{days % 365}d" if days % 365 else f"{days // 365}y"
