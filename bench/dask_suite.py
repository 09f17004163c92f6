"""dask's own collection tests, on a corral cluster and on dask's own schedulers.

``python bench/dask_suite.py dask/array/tests/test_reductions.py ...`` (paths inside
the installed dask package) runs each file twice: once as dask runs it, once with
``dask_suite_plugin`` routing every compute to one corral client (2 worker processes
x 1 thread). It prints, per file, how many tests passed on each and lists the tests
that fail only on corral: each is a corral bug unless it is inherent to running in
other processes (a test that counts calls with ``nonlocal``, expects a warning raised
in this process, compares objects by identity, ...).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import dask

HERE = Path(__file__).resolve().parent
SITE = Path(dask.__file__).resolve().parent.parent  # where dask's test files are


def outcomes(path: str, corral: bool, keyword: str | None = None
             ) -> dict[str, tuple[str, str]]:
    """``{test id: (passed|failed|skipped, first line of the failure)}`` for one run of
    one file (of its tests that match ``keyword``, pytest's ``-k``, if given)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        plugin = ["-p", "dask_suite_plugin"] if corral else []
        select = ["-k", keyword] if keyword else []
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)])}
        # --tb=short: a long traceback's repr of test_memmap's closed memmap segfaults.
        # --timeout: the many small computes of some tests pass corral's 60 s under load.
        subprocess.run([sys.executable, "-m", "pytest", *plugin, path, *select, "-q",
                        "--tb=short", "--timeout=300", "-p", "no:cacheprovider",
                        "-W", "ignore", f"--junit-xml={report}"],
                       cwd=SITE, env=env, capture_output=True, timeout=3600)
        result = {}
        for case in ET.parse(report).iter("testcase"):
            name = f"{case.get('classname', '').rpartition('.')[2]}::{case.get('name')}"
            kinds = {child.tag: child.get("message", "") for child in case}
            failure = kinds.get("failure", kinds.get("error"))
            result[name] = (("failed", failure.splitlines()[0][:100] if failure else "")
                            if failure is not None else
                            ("skipped", "") if "skipped" in kinds else ("passed", ""))
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="+", help="test files, relative to dask's package")
    parser.add_argument("-k", dest="keyword", help="only the tests matching this "
                        "expression (pytest's -k), to sample a long file")
    opts = parser.parse_args()
    print(f"{'file':45} {'tests':>6} {'dask ok':>8} {'corral ok':>10} {'corral only':>12}")
    for path in opts.paths:
        ours = outcomes(path, True, opts.keyword)
        theirs = outcomes(path, False, opts.keyword)
        only = sorted(t for t, (o, _) in ours.items()
                      if o == "failed" and theirs.get(t, ("",))[0] == "passed")
        print(f"{path:45} {len(theirs):6} "
              f"{sum(o == 'passed' for o, _ in theirs.values()):8} "
              f"{sum(o == 'passed' for o, _ in ours.values()):10} {len(only):12}")
        for test in only:
            print(f"    fails only on corral: {test}: {ours[test][1]}")


if __name__ == "__main__":
    main()
