"""``python -m clipresc`` and the ``clipresc`` console script.

The command line needs the ``cli`` extra (click). This module imports nothing beyond the
standard library until it runs, so that without the extra the script can say what to
install instead of failing with a traceback.
"""

from __future__ import annotations

import sys
from typing import NoReturn

MISSING_CLI = (
    'clipresc: error: the command line needs click; install it with: pip install "clipresc[cli]"'
)


def main(argv: list[str] | None = None) -> int:
    """Run the ``clipresc`` command with ``argv`` (default ``sys.argv[1:]``); the exit status.

    >>> main(["--version"])  # doctest: +ELLIPSIS
    clipresc ...
    0
    """
    try:
        from . import cli
    except ModuleNotFoundError as e:
        if e.name != "click" and not (e.name or "").startswith("click."):
            raise
        print(MISSING_CLI, file=sys.stderr)
        return 1
    return cli.main(argv)


def console() -> NoReturn:
    """The console script: :func:`main` with ``sys.argv``, exiting with its status."""
    sys.exit(main())


if __name__ == "__main__":
    console()
