"""The ``journal-loader`` command line.

Owns: the commands and their output (tables, JSON), one module per command group, each
imported below and registered on ``main`` by name (a group that fails to import fails the
command line: nothing is optional). May import every layer (it is the top one, see
tests/test_layering.py); nothing imports it but ``__main__``. Every error that
journal-loader raises on purpose becomes one line on stderr and its exit code
(``JournalLoaderError.exit_code``): 1 failed, 2 usage or config, 75 source locked. Anything
else is a bug: one line, exit 1, and the traceback only with ``JOURNAL_LOADER_DEBUG=1``.
Output into a pipe whose reader has left (``| head``) ends the command quietly with exit 0.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from journal_loader.cli import admin, audit, dlq, fleet, graph, inspect, ops, run_cmd, source
from journal_loader.errors import JournalLoaderError
from journal_loader.secrets import scrub
from journal_loader.version import __version__

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _stdout_gone() -> None:
    """The reader of our stdout left (``| head``): what is still buffered goes nowhere, so
    neither the rest of the command nor Python's flush at exit raises again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no file descriptor (a test runner's stdout)
        pass


def _flush_stdout() -> None:
    """Flush inside the command, so a reader that left is noticed here, not at exit."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _stdout_gone()


class _Group(click.Group):
    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except BrokenPipeError:  # `journal-loader --help | head -1`
            _stdout_gone()
            raise click.exceptions.Exit(0) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
        except BrokenPipeError:
            # `history 1 25 | head -2`: the reader has what it wanted; nothing went wrong.
            _stdout_gone()
            ctx.exit(0)
        except click.exceptions.Exit:
            _flush_stdout()
            raise
        except JournalLoaderError as e:
            click.echo(f"error: {scrub(str(e))}", err=True)
            ctx.exit(e.exit_code)
        except (click.ClickException, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except Exception as e:
            if os.environ.get("JOURNAL_LOADER_DEBUG"):
                raise
            click.echo(
                f"internal error: {type(e).__name__}: {scrub(str(e))} "
                "(set JOURNAL_LOADER_DEBUG=1 for the traceback)",
                err=True,
            )
            ctx.exit(1)
        _flush_stdout()
        return result


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="journal-loader")
def main() -> None:
    """Rerunnable, resumable, event-sourced data loaders.

    \b
    Load the example, look at it, check the projections:
      journal-loader run examples/business_registry/loader.yaml
      journal-loader status
      journal-loader history 1 4711
      journal-loader projections rebuild --check
    """


run_cmd.register(main)
inspect.register(main)
admin.register(main)
source.register(main)
fleet.register(main)
dlq.register(main)
audit.register(main)
ops.register(main)
graph.register(main)


def run_main() -> None:  # pragma: no cover - console entry point
    main(prog_name="journal-loader")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
