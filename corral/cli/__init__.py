"""The ``corral`` command line: ``scheduler``, ``worker``, ``demo`` and ``tls``.

One module per command; ``common`` holds the group and what the commands share.
"""

from corral.cli import scheduler, tools, worker  # noqa: F401 - each registers its command
from corral.cli.common import main

__all__ = ["main"]
