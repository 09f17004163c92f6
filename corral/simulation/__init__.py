"""Simulate a cluster exactly: the real scheduler and worker state machines, in virtual time.

``Simulation`` runs ``corral.scheduler.state.SchedulerState`` and one
``corral.worker.state.WorkerState`` per simulated worker, with simulated threads, links
and clock, so that "what would this graph do on 1 000 workers?" takes seconds on a laptop
and gives the same answer for the same seed. ``corral.simulation.graphs`` makes graphs
to try; ``python -m corral.simulation --help`` runs one from the command line.
"""

from corral.simulation.cluster import Simulation, Summary
from corral.simulation.graphs import GENERATORS, Graph, chains, mixed, random_dag, shuffle, tree

__all__ = [
    "GENERATORS", "Graph", "Simulation", "Summary", "chains", "mixed", "random_dag", "shuffle",
    "tree",
]
