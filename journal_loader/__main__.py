"""``python -m journal_loader`` and the ``journal-loader`` command.

Importing the command line takes a moment (SQLAlchemy, pydantic, click...); a Ctrl-C in
that moment must end the command as one after it does, quietly with exit code 130, not with
an import traceback. So the entry point is here, in a module that imports nothing heavy
(the package's ``__init__`` is lazy too), and catches the interrupt around the import.
"""

from __future__ import annotations

import sys
from typing import NoReturn


def _interrupted() -> NoReturn:
    try:
        sys.stderr.write("interrupted\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    sys.exit(130)


def main() -> None:
    try:
        from journal_loader.cli import run_main
    except KeyboardInterrupt:
        _interrupted()
    try:
        run_main()
    except KeyboardInterrupt:  # outside a command (the commands handle their own)
        _interrupted()


if __name__ == "__main__":
    main()
