"""The public surface: exports, the exception tree, and the command line."""

from __future__ import annotations

import subprocess
import sys
import types

import corral
import corral.core
import corral.exceptions as exc


def test_all_is_complete_and_importable():
    for name in corral.__all__:  # each export is imported on first use
        assert getattr(corral, name) is not None
    public = {
        name
        for name, value in vars(corral).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    } | {"config"}  # the one submodule that is public surface: corral.config.set(...)
    assert isinstance(corral.config, types.ModuleType)
    assert public == set(corral.__all__) - {"__version__"}
    assert set(corral.__all__) <= set(dir(corral))
    for name in corral.core.__all__:
        assert hasattr(corral.core, name)


def test_exception_tree():
    assert issubclass(exc.CommClosedError, ConnectionError)
    assert issubclass(exc.ConnectTimeoutError, TimeoutError)
    assert issubclass(exc.AuthenticationError, exc.HandshakeError)
    assert issubclass(exc.FrameLimitError, exc.ProtocolError)
    for name in dir(exc):
        value = getattr(exc, name)
        ours = isinstance(value, type) and value.__module__ == exc.__name__
        if ours and issubclass(value, Exception):
            assert issubclass(value, exc.CorralError), name
            assert name in exc.__doc__, f"{name} is missing from the tree in the docstring"


def test_corral_demo_runs_a_data_local_computation():
    result = subprocess.run(
        [sys.executable, "-m", "corral.cli", "demo"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "16,000,000 samples: mean" in out
    assert "partitions per worker: [4, 4]" in out or "partitions per worker" in out
    moved = float(out.split("data moved between workers: ")[1].split(" MB")[0])
    in_place = float(out.split("used where it lay: ")[1].split(" MB")[0])
    assert in_place > moved  # most input bytes were used where they were made


def test_corral_demo_foundation_runs_for_real():
    result = subprocess.run(
        [sys.executable, "-m", "corral.cli", "demo", "--foundation"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "sequential rpc calls: median round trip" in out
    assert "streaming handler sent [1, 2, 3]" in out
    assert "a wrong token is refused: authentication failed" in out


def test_version_flag():
    result = subprocess.run(
        [sys.executable, "-m", "corral.cli", "--version"], capture_output=True, text=True
    )
    assert corral.__version__ in result.stdout
