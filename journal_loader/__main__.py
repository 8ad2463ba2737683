"""``python -m journal_loader``: the same as the ``journal-loader`` command."""

from journal_loader.cli import run_main

run_main()
