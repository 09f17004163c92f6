"""Data-local word count: every worker counts only the files on its own disk.

Each worker writes a few text files into a directory of its own (the workers share one
machine here, but each reads only its own files, as on separate hosts). One counting
task per file is pinned to the worker holding it (``workers=[address]``); the counts are
merged pairwise in a tree. Prints the top words, and how many bytes were read in place
against how many moved between workers. Then the files are removed.

    python examples/word_count.py [SCHEDULER_ADDRESS]
"""

import random
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

from corral import Client, LocalCluster, get_worker

FILES_PER_WORKER = 3
WORDS_PER_FILE = 5_000
VOCABULARY = "the of and to a in corral worker data task future local moves".split()


def write_files() -> tuple[str, dict[str, int]]:
    """On a worker: write text files into a new directory; ``(directory, {path: size})``."""
    directory = tempfile.mkdtemp(prefix="corral-word-count-")
    rng = random.Random(get_worker().address)
    weights = [1 / rank for rank in range(1, len(VOCABULARY) + 1)]  # a Zipf-like mix
    sizes = {}
    for i in range(FILES_PER_WORKER):
        words = rng.choices(VOCABULARY, weights, k=WORDS_PER_FILE)
        path = Path(directory, f"part-{i}.txt")
        path.write_text("\n".join(" ".join(words[j:j + 10]) for j in range(0, len(words), 10)))
        sizes[str(path)] = path.stat().st_size
    return directory, sizes


def count_words(path: str) -> Counter:
    return Counter(Path(path).read_text().split())


def add_counts(*counts: Counter) -> Counter:
    return sum(counts, Counter())


def transfers(client: Client) -> tuple[int, int]:
    """Bytes of task inputs fetched from peers, and used where they were, on all workers."""
    stats = client.run(lambda: dict(get_worker().stats)).values()
    return sum(s["fetched_bytes"] for s in stats), sum(s["local_input_bytes"] for s in stats)


def main(address: str) -> None:
    with Client(address) as client:
        before = transfers(client)
        written = client.run(write_files)
        try:
            counts = [client.submit(count_words, path, workers=[worker])
                      for worker, (_, files) in written.items() for path in files]
            while len(counts) > 1:  # a tree reduction: pairs, then pairs of pairs, ...
                counts = [client.submit(add_counts, *counts[i:i + 2])
                          for i in range(0, len(counts), 2)]
            total = counts[0].result()
            moved, in_place = (b - a for a, b in zip(before, transfers(client), strict=True))
        finally:
            for worker, (directory, _) in written.items():
                client.run(shutil.rmtree, directory, workers=[worker])

    sizes = [size for _, files in written.values() for size in files.values()]
    print(f"counted {total.total():,} words in {len(sizes)} files on {len(written)} workers")
    print("top words:", ", ".join(f"{w} {n:,}" for w, n in total.most_common(5)))
    print(f"read from local files: {sum(sizes):,} bytes; counts moved between workers: "
          f"{moved:,} bytes, used where they were: {in_place:,} bytes")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as c:
            main(c.scheduler_address)
