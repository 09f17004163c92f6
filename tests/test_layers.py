"""Dependencies point one way: what importing one layer of corral loads with it.

Each import runs in a fresh interpreter, since this one has imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# The servers, transports and event loop: no pure state machine may load any of them.
SERVER_SIDE = ("asyncio", "socket", "corral.comm", "corral.core", "corral.protocol",
               "corral.client", "corral.deploy", "corral.dashboard", "corral.nanny",
               "corral.scheduler.server", "corral.worker.server")


def loaded_by(statement: str) -> list[str]:
    """The modules that ``statement`` loads in a fresh interpreter."""
    code = ("import json, sys; before = set(sys.modules); " + statement
            + "; print(json.dumps(sorted(set(sys.modules) - before)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=50, check=True)
    return json.loads(done.stdout)


def server_side(modules: list[str]) -> list[str]:
    return [m for m in modules if m.startswith(SERVER_SIDE)
            and (m in SERVER_SIDE or m.startswith(tuple(f"{p}." for p in SERVER_SIDE)))]


def test_importing_corral_imports_nothing_else_of_it():
    ours = [m for m in loaded_by("import corral") if m.startswith("corral")]
    assert ours == ["corral", "corral._lazy"]


def test_the_worker_state_machine_loads_no_scheduler_and_no_server():
    modules = loaded_by("import corral.worker.state")
    ours = [m for m in modules if m.startswith("corral")]
    assert server_side(modules) == []
    assert not [m for m in ours if m.startswith("corral.scheduler")]
    assert len(ours) <= 12, ours  # 10 at this writing (was 60, the scheduler server among them)
    assert len(modules) <= 40, len(modules)  # 28 at this writing (was 247)


def test_the_scheduler_state_machine_loads_no_worker_and_no_server():
    modules = loaded_by("import corral.scheduler.state")
    ours = [m for m in modules if m.startswith("corral")]
    assert server_side(modules) == []
    assert not [m for m in ours if m.startswith("corral.worker")]
    assert len(ours) <= 24, ours  # 23 at this writing, a pure module per decision (was 60)
    assert len(modules) <= 55, len(modules)  # 42 at this writing (was 247)


@pytest.mark.parametrize("name", ["Client", "Scheduler", "Worker", "progress", "rpc", "wait"])
def test_a_lazy_export_is_the_object_its_module_defines(name):
    import corral

    value = getattr(corral, name)
    assert getattr(sys.modules[value.__module__], name) is value
    assert name in dir(corral)


def test_the_dashboard_reads_a_view_and_never_imports_the_scheduler_server():
    modules = loaded_by("import corral.dashboard.app")
    assert "corral.scheduler.state" in modules  # the pure state it shows
    assert "corral.scheduler.server" not in modules
    assert not [m for m in modules if m.startswith(("corral.comm", "corral.core"))]


def test_futures_and_waiting_use_the_client_through_its_interface_only():
    modules = loaded_by("import corral.client.future, corral.client.waiting, "
                        "corral.client.progress")
    assert not {"corral.client.client", "corral.client.sync"} & set(modules)


def test_dask_get_uses_the_client_through_its_interface_only():
    pytest.importorskip("dask")
    modules = loaded_by("import corral.client.dask_graph")
    assert not {"corral.client.client", "corral.client.sync"} & set(modules)
