"""The version of journal-loader: the one place it is written.

The wheel's metadata reads it from here (pyproject.toml, ``[tool.hatch.version]``); the
package's ``__init__``, ``journal-loader --version`` and the journal's run records import it
from here. Base layer: imports nothing.
"""

__version__ = "0.1.0"
