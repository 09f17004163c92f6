"""The ``corral`` command line: ``scheduler``, ``worker``, ``demo``, ``tls`` and
``slurm``/``pbs``/``sge``/``lsf submit``.

One module per command, imported when its command is run (``common.LazyGroup``);
``common`` holds the group and what the commands share.
"""

from corral.cli.common import main

__all__ = ["main"]
