"""Workers as batch jobs: SLURM, PBS, SGE and LSF.

``script`` says what a job asks for and how its workers start (pure), ``systems`` how
each batch system is spoken to (pure), ``commands`` runs their commands, and
``cluster`` (``SLURMCluster``, ``PBSCluster``, ...) keeps a cluster's jobs.
"""

from corral.deploy.jobqueue.script import JobSpec, parse_walltime
from corral.deploy.jobqueue.systems import LSF, PBS, SGE, SLURM, SYSTEMS, BatchSystem

__all__ = ["LSF", "PBS", "SGE", "SLURM", "SYSTEMS", "BatchSystem", "JobSpec", "parse_walltime"]
