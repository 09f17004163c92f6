"""Task graphs to simulate: trees, chains, shuffles, random DAGs, and a mix of them.

A ``Graph`` is what a client would submit (``TaskSpec``s) plus what only the simulation
needs to know: how long each task runs and how big its result is. Every generator takes
a ``random.Random``, so the same seed gives the same graph.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from corral.basic_types import Key
from corral.scheduler.events import TaskSpec

RUN_SPEC = b"simulated"  # opaque to the scheduler; a simulated worker never unpickles it


@dataclass
class Graph:
    """Tasks in submission order (inputs before the tasks that need them)."""

    tasks: list[TaskSpec] = field(default_factory=list)
    durations: dict[Key, float] = field(default_factory=dict)  # seconds of one thread
    nbytes: dict[Key, int] = field(default_factory=dict)  # size of each result
    wanted: list[Key] = field(default_factory=list)  # the keys the client asks for

    def add(self, key: Key, deps: tuple[Key, ...], name: str, duration: float, nbytes: int,
            wanted: bool = False) -> None:
        self.tasks.append(TaskSpec(key, RUN_SPEC, deps, name=name))
        self.durations[key] = duration
        self.nbytes[key] = nbytes
        if wanted:
            self.wanted.append(key)

    def extend(self, other: Graph) -> None:
        self.tasks += other.tasks
        self.durations.update(other.durations)
        self.nbytes.update(other.nbytes)
        self.wanted += other.wanted

    def __len__(self) -> int:
        return len(self.tasks)


def _jitter(rng: random.Random, mean: float) -> float:
    """A duration around ``mean``: real task durations are skewed, never negative."""
    return mean * rng.lognormvariate(0.0, 0.5)


def tree(n: int, rng: random.Random, *, fan_in: int = 8, prefix: str = "tree",
         duration: float = 0.1, nbytes: int = 1_000_000) -> Graph:
    """Reductions: leaves combined ``fan_in`` at a time up to one root per tree; trees of
    at most 4 096 leaves each until about ``n`` tasks are made."""
    g = Graph()
    made, t = 0, 0
    while made < n:
        leaves = min(4096, max(1, (n - made) * (fan_in - 1) // fan_in))
        level = []
        for i in range(leaves):
            key = f"{prefix}-{t}-0-{i}"
            g.add(key, (), "leaf", _jitter(rng, duration), nbytes)
            level.append(key)
        depth = 0
        while len(level) > 1:
            depth += 1
            upper = []
            for j in range(0, len(level), fan_in):
                key = f"{prefix}-{t}-{depth}-{j // fan_in}"
                g.add(key, tuple(level[j:j + fan_in]), "combine", _jitter(rng, duration / 2),
                      nbytes)
                upper.append(key)
            level = upper
        g.wanted.append(level[0])
        made, t = len(g.tasks), t + 1
    return g


def chains(n: int, rng: random.Random, *, length: int = 10, prefix: str = "chain",
           duration: float = 0.1, nbytes: int = 100_000) -> Graph:
    """Independent chains of ``length`` tasks, each using the previous one's result."""
    g = Graph()
    for c in range(max(1, n // length)):
        previous: tuple[Key, ...] = ()
        for i in range(length):
            key = f"{prefix}-{c}-{i}"
            g.add(key, previous, "step", _jitter(rng, duration), nbytes, wanted=i == length - 1)
            previous = (key,)
    return g


def shuffle(n: int, rng: random.Random, *, width: int = 16, stages: int = 3,
            prefix: str = "shuffle", duration: float = 0.05, nbytes: int = 200_000) -> Graph:
    """All-to-all: each task of a stage needs every task of the stage before, in groups of
    ``width`` tasks per stage (so ``width``² edges between two stages of a group)."""
    g = Graph()
    for s in range(max(1, n // (width * stages))):
        previous: tuple[Key, ...] = ()
        for stage in range(stages):
            keys = tuple(f"{prefix}-{s}-{stage}-{i}" for i in range(width))
            for key in keys:
                g.add(key, previous, f"stage{stage}", _jitter(rng, duration),
                      nbytes // width if stage else nbytes, wanted=stage == stages - 1)
            previous = keys
    return g


def random_dag(n: int, rng: random.Random, *, max_inputs: int = 4, window: int = 1000,
               prefix: str = "dag", duration: float = 0.05, nbytes: int = 50_000) -> Graph:
    """Each task needs up to ``max_inputs`` tasks among the ``window`` made before it; the
    client wants the tasks nothing depends on."""
    g = Graph()
    needed: set[int] = set()
    for i in range(n):
        count = rng.randint(0, min(max_inputs, i))
        deps = sorted(set(rng.randrange(max(0, i - window), i) for _ in range(count)))
        needed.update(deps)
        g.add(f"{prefix}-{i}", tuple(f"{prefix}-{d}" for d in deps), "node",
              _jitter(rng, duration), nbytes)
    g.wanted = [f"{prefix}-{i}" for i in range(n) if i not in needed]
    return g


def linked_chains(n: int, rng: random.Random, *, length: int = 100, prefix: str = "linked",
                  duration: float = 0.005, nbytes: int = 8_000, link_every: int = 10,
                  big_every: int = 20, big_nbytes: int = 5 * 2**20) -> Graph:
    """The chaos bench's shape (``bench/_chaos_workload.py``): ``n // length`` chains;
    every ``link_every``-th step also reads the next chain's previous step, every
    ``big_every``-th makes a big result; a pairwise tree sums the chain ends and the
    client wants only its root."""
    g = Graph()
    count = max(1, n // length)
    layer = [f"{prefix}-{c}-0" for c in range(count)]
    for key in layer:
        g.add(key, (), "start", _jitter(rng, duration), nbytes)
    for i in range(1, length):
        keys = [f"{prefix}-{c}-{i}" for c in range(count)]
        for c, key in enumerate(keys):
            deps = (layer[c], layer[(c + 1) % count]) if i % link_every == 0 else (layer[c],)
            g.add(key, tuple(dict.fromkeys(deps)), "step", _jitter(rng, duration),
                  big_nbytes if i % big_every == 0 else nbytes)
        layer = keys
    level = 0
    while len(layer) > 1:
        nxt = []
        for j in range(0, len(layer), 2):
            if j + 1 < len(layer):
                key = f"{prefix}-add-{level}-{j}"
                g.add(key, (layer[j], layer[j + 1]), "add", _jitter(rng, duration), nbytes)
                nxt.append(key)
            else:
                nxt.append(layer[j])
        layer, level = nxt, level + 1
    g.wanted = list[Key](layer)
    return g


def mixed(n: int, rng: random.Random) -> Graph:
    """A third each of trees, chains and shuffles."""
    g = tree(n // 3, rng)
    g.extend(chains(n // 3, rng))
    g.extend(shuffle(n - len(g), rng))
    return g


GENERATORS: dict[str, Callable[[int, random.Random], Graph]] = {
    "tree": tree, "chains": chains, "shuffle": shuffle, "random": random_dag, "mixed": mixed,
}
