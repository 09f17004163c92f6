"""A separate virtual env with dask.distributed, for comparison only (never a corral dep)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

VENV = Path(__file__).parent / ".venv-dask"


# bokeh: dask's dashboard pages; pandas and pyarrow: dask.dataframe and its p2p shuffle
PACKAGES = ("distributed", "numpy", "bokeh", "pandas", "pyarrow")


def dask_python() -> Path | None:
    """The env's python, creating or completing the env on first use; None if impossible."""
    python = VENV / "bin" / "python"
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        modules = ", ".join(PACKAGES)
        if subprocess.run([str(python), "-c", f"import {modules}"],
                          capture_output=True).returncode != 0:
            subprocess.run([str(python), "-m", "pip", "install", "-q", *PACKAGES],
                           check=True, timeout=600)
    except (subprocess.SubprocessError, OSError) as e:
        print(f"dask: unavailable ({e})", file=sys.stderr)
        return None
    return python


def run_in_dask_env(script: str, *args: str, timeout: float = 900) -> dict | None:
    """Run a script with the dask env's python; it prints one JSON object last."""
    python = dask_python()
    if python is None:
        return None
    try:
        result = subprocess.run([str(python), script, *args], capture_output=True, text=True,
                                timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"dask run took over {timeout} s; its figures are left out", file=sys.stderr)
        return None
    if result.returncode != 0:
        print(f"dask run failed:\n{result.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])
