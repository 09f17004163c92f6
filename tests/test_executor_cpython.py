"""CPython's own generic executor tests, run against ``corral.Executor``.

``Lib/test/test_concurrent_futures.py`` holds the tests every executor must pass
(``WaitTests``, ``AsCompletedTests``, ``ExecutorTest``, ``ExecutorShutdownTest``); the
standard pools mix them with a mixin that makes ``self.executor``. So does
``CorralExecutorMixin``, with an ``Executor`` on one ``LocalCluster`` shared by the
module: 5 in-process workers of one thread each (the tests expect 5 workers; in-process
workers start fast, and the calls, ``time.sleep`` mostly, behave as in processes).

The file comes with the interpreter's test suite, which this interpreter may lack;
Debian's ``libpython3.11-testsuite`` ships it under ``/usr/lib/python3.11/test`` (CI
installs it). Without it the module is skipped, saying so.
"""

from __future__ import annotations

import importlib.util
import sys
import unittest
from pathlib import Path

import pytest

from corral import Executor, LocalCluster

CPYTHON_TESTS = Path(f"/usr/lib/python{sys.version_info.major}.{sys.version_info.minor}/test")

# Tests of the generic classes that are about the standard pools themselves, not about
# the executor contract: test by test, why each is left out.
EXCLUDED = {
    "ExecutorTest": {
        "test_max_workers_negative": "checks the pools' max_workers argument, which "
                                     "corral.Executor does not take (the cluster sizes it)",
    },
    "ExecutorShutdownTest": {
        "test_interpreter_shutdown": "runs a program that imports the executor class by "
                                     "name from concurrent.futures and builds it with "
                                     "max_workers; test_executor.py runs the same check "
                                     "(pending calls finish at exit) for corral",
        "test_submit_after_interpreter_shutdown": "the same kind of program: a pool "
                                                  "imported from concurrent.futures",
        "test_hang_gh83386": "the same kind of program (shutdown(wait=False), then exit); "
                             "covered for corral in test_executor.py",
    },
}


def _load_cpython_tests():  # -> the test_concurrent_futures module
    """Import the test module from the interpreter's test package, wherever it lives."""
    try:
        import test.test_concurrent_futures as module  # a full CPython install
    except ImportError:
        if not (CPYTHON_TESTS / "test_concurrent_futures.py").exists():
            pytest.skip(
                f"CPython's test_concurrent_futures.py is not installed (no 'test' package; "
                f"on Debian: apt-get install libpython{sys.version_info.major}."
                f"{sys.version_info.minor}-testsuite)",
                allow_module_level=True,
            )
        spec = importlib.util.spec_from_file_location(
            "test", CPYTHON_TESTS / "__init__.py", submodule_search_locations=[str(CPYTHON_TESTS)]
        )
        assert spec is not None
        assert spec.loader is not None
        package = importlib.util.module_from_spec(spec)
        sys.modules["test"] = package
        spec.loader.exec_module(package)
        import test.test_concurrent_futures as module
    return module


cft = _load_cpython_tests()


class CorralExecutorMixin:
    """What the standard pools' ``ExecutorMixin`` does: a fresh executor per test."""

    worker_count = 5
    cluster: LocalCluster | None = None  # set by the module's fixture

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        self.executor = Executor(self.cluster)

    def tearDown(self) -> None:
        self.executor.shutdown(wait=True)
        self.executor = None
        super().tearDown()  # type: ignore[misc]


@pytest.fixture(scope="module", autouse=True)
def cluster():
    with LocalCluster(n_workers=CorralExecutorMixin.worker_count, threads_per_worker=1,
                      processes=False, dashboard_address=None) as c:
        CorralExecutorMixin.cluster = c
        yield c
        CorralExecutorMixin.cluster = None


def _corral_tests(name: str) -> type[unittest.TestCase]:
    generic = getattr(cft, name)
    excluded = dict.fromkeys(EXCLUDED.get(name, {}))  # None: not a test for unittest
    return type(f"Corral{name}", (CorralExecutorMixin, generic, unittest.TestCase), excluded)


CorralWaitTests = _corral_tests("WaitTests")
CorralAsCompletedTests = _corral_tests("AsCompletedTests")
CorralExecutorTest = _corral_tests("ExecutorTest")
CorralExecutorShutdownTest = _corral_tests("ExecutorShutdownTest")


def test_exclusions_name_real_tests():
    """An excluded name that CPython renamed or dropped would silently exclude nothing."""
    for name, tests in EXCLUDED.items():
        for test in tests:
            assert callable(getattr(getattr(cft, name), test)), f"{name}.{test}"
