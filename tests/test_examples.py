"""The scripts in ``examples/`` run as written and print the right results.

Each runs as a child process with the suite's environment (so the schedulers they start
write credentials to the suite's private scheduler file), on a local cluster of its own
or, given an address, on one this test started.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from corral import LocalCluster

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``examples/NAME``; its stdout, after checking it exited 0."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True, text=True, timeout=45, cwd=EXAMPLES.parent,
        env=env if env is not None else os.environ.copy(),
    )
    assert result.returncode == 0, f"{name} exited {result.returncode}:\n{result.stderr}"
    return result.stdout


def printed(stdout: str, label: str) -> str:
    """The rest of the line that starts with ``label``."""
    match = re.search(rf"^{re.escape(label)}\s*(.*)$", stdout, re.MULTILINE)
    assert match, f"no line starting {label!r} in:\n{stdout}"
    return match.group(1)


@pytest.fixture(scope="module")
def given_cluster():
    """A running cluster: its address, and an environment carrying its token."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        yield cluster.scheduler_address, {**os.environ, **cluster.security.environment()}


def check_pool_seed(stdout: str) -> None:
    assert ast.literal_eval(printed(stdout, "map:")) == [10, 20, 30]
    assert printed(stdout, "apply:") == "1024"


def check_async_client(stdout: str) -> None:
    squares = [x * x for x in range(10)]
    assert sorted(ast.literal_eval(printed(stdout, "as_completed, in the order they finished:"))
                  ) == squares
    assert printed(stdout, "wait:") == "1 done, 0 pending"
    assert ast.literal_eval(printed(stdout, "gather squares:")) == squares
    assert ast.literal_eval(printed(stdout, "gather cubes:")) == [x**3 for x in range(10)]
    assert printed(stdout, "sum of squares:") == str(sum(squares))


CHECKS = {"pool_seed.py": check_pool_seed, "async_client.py": check_async_client}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_on_a_cluster_of_its_own(name):
    CHECKS[name](run_example(name))


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_on_a_given_scheduler(name, given_cluster):
    address, env = given_cluster
    CHECKS[name](run_example(name, address, env=env))


def test_word_count_counts_what_was_written_and_moves_only_counts(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # where the workers write their files
    stdout = run_example("word_count.py", env=env)
    # 2 workers x 3 files x 5 000 words, each file read by the worker that wrote it
    assert printed(stdout, "counted") == "30,000 words in 6 files on 2 workers"
    top = re.findall(r"(\w+) ([\d,]+)", printed(stdout, "top words:"))
    assert [word for word, _ in top][:1] == ["the"]  # the most frequent word by design
    counts = [int(n.replace(",", "")) for _, n in top]
    assert counts == sorted(counts, reverse=True)
    assert sum(counts) <= 30_000
    read, moved, in_place = (int(n.replace(",", "")) for n in re.findall(
        r"([\d,]+) bytes", printed(stdout, "read from local files:")))
    assert read > 100_000  # about 20 kB a file
    assert 0 < moved < read / 10  # only the small counts crossed between workers
    assert in_place > 0
    assert not list(tmp_path.glob("corral-word-count-*")), "the files were not cleaned up"


@pytest.mark.skipif(importlib.util.find_spec("dask") is None,
                    reason="dask is not installed (pip install 'dask[array]')")
def test_dask_array_on_corral_matches_dask_threads():
    stdout = run_example("dask_array.py")
    assert printed(stdout, "corral:") == printed(stdout, "dask threads:")
    assert len(printed(stdout, "corral:").strip("[]").split()) == 5
    assert "the results match" in stdout
