"""The ``corral`` command line: ``scheduler``, ``worker``, ``demo``, ``tls`` and
``slurm``/``pbs``/``sge``/``lsf submit``.

One module per command; ``common`` holds the group and what the commands share.
"""

from corral.cli import jobqueue, scheduler, tools, worker  # noqa: F401 - each registers its command
from corral.cli.common import main

__all__ = ["main"]
