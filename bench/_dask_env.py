"""Separate virtual envs for the peers we compare against (never corral dependencies):
dask.distributed in ``.venv-dask``, Ray in ``.venv-ray``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
VENV = HERE / ".venv-dask"
RAY_VENV = HERE / ".venv-ray"

# bokeh: dask's dashboard pages; pandas and pyarrow: dask.dataframe and its p2p shuffle
PACKAGES = ("distributed", "numpy", "bokeh", "pandas", "pyarrow")
RAY_PACKAGES = ("ray", "numpy")


def env_python(venv: Path, packages: tuple[str, ...]) -> Path | None:
    """The env's python, creating or completing the env on first use; None if impossible."""
    python = venv / "bin" / "python"
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        modules = ", ".join(packages)
        if subprocess.run([str(python), "-c", f"import {modules}"],
                          capture_output=True).returncode != 0:
            subprocess.run([str(python), "-m", "pip", "install", "-q", *packages],
                           check=True, timeout=600)
    except (subprocess.SubprocessError, OSError) as e:
        print(f"{venv.name}: unavailable ({e})", file=sys.stderr)
        return None
    return python


def dask_python() -> Path | None:
    return env_python(VENV, PACKAGES)


def run_in_env(python: Path | None, script: str, *args: str, timeout: float = 900) -> dict | None:
    """Run a script with another env's python; it prints one JSON object last."""
    if python is None:
        return None
    try:
        result = subprocess.run([str(python), script, *args], capture_output=True, text=True,
                                timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"{script} {' '.join(args)} took over {timeout} s; its figures are left out",
              file=sys.stderr)
        return None
    if result.returncode != 0:
        print(f"{script} {' '.join(args)} failed:\n{result.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_in_dask_env(script: str, *args: str, timeout: float = 900) -> dict | None:
    return run_in_env(dask_python(), script, *args, timeout=timeout)


def run_in_ray_env(script: str, *args: str, timeout: float = 900) -> dict | None:
    return run_in_env(env_python(RAY_VENV, RAY_PACKAGES), script, *args, timeout=timeout)
