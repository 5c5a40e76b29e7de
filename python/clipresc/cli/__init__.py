"""The ``clipresc`` command: ``demo``, ``noise`` and ``perturb`` on ``.npy`` files.

``noise`` and ``perturb`` memory-map their inputs and process them in chunks of whole
vectors along axis 0 (axis 0 is the batch, every other axis forms one vector; a 1-D file is
one vector), so memory stays bounded whatever the file size. The result goes to a temporary
file beside OUT, renamed over OUT only when every chunk is written: an error, Ctrl-C or
SIGTERM leaves no OUT (and no temporary file). A chunked ``noise`` run gives the same bytes
as ``clipresc.noise`` on the whole array with the same seed.

``clipresc --version`` prints the version; ``python -m clipresc`` is the same command.

Exit status: 0 on success, 1 for bad files or data (one line on stderr), 2 for bad
arguments, 130 when interrupted.
"""

from __future__ import annotations

import signal
import sys
from typing import Any, NoReturn

import click

from .. import _errors
from .commands import cli

__all__ = ["CliError", "cli", "console", "main"]

CliError = _errors.CommandLineError


class _Terminated(BaseException):
    """SIGTERM, handled like Ctrl-C."""


def _on_sigterm(signum: int, frame: Any) -> NoReturn:
    raise _Terminated


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``clipresc`` console script; returns the exit status."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        cli.main(args=argv, prog_name="clipresc", standalone_mode=False)
        return 0
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError" and e.ctx is not None:
            click.echo(e.ctx.get_help())
            return 2
        hint = ""
        if e.ctx is not None:
            name = e.ctx.command_path if e.ctx.parent is not None else "clipresc"
            hint = f" (see '{name} --help')"
        click.echo(
            f"clipresc: error: {_errors.one_line(Exception(e.format_message()))}{hint}", err=True
        )
        return 2
    except (CliError, click.ClickException) as e:
        msg = e.format_message() if isinstance(e, click.ClickException) else str(e)
        click.echo(f"clipresc: error: {_errors.one_line(Exception(msg))}", err=True)
        return 1
    except (KeyboardInterrupt, _Terminated, click.exceptions.Abort):
        click.echo(_errors.INTERRUPTED, err=True)
        return 130
    except MemoryError:
        click.echo(f"clipresc: error: {_errors.OUT_OF_MEMORY}", err=True)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


def console() -> NoReturn:
    """Exit with :func:`main`'s status for ``sys.argv`` (the installed script runs
    :func:`clipresc.__main__.console`, which first checks that click is there)."""
    sys.exit(main())
