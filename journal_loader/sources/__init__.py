"""Input sources: identifying a source file and reading its records (see ``readers``)."""
