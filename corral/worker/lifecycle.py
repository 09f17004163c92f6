"""A worker's start-up and end of life: ``--preload`` modules, and ``--lifetime``.

* A preload is a module name or a ``.py`` file. Its ``corral_setup(worker)`` is called
  once the worker listens, before it registers; its ``corral_teardown(worker)`` when it
  closes (either may be a coroutine function). dask's names ``dask_setup`` and
  ``dask_teardown`` work too, so dask preload scripts run unchanged.
* A worker with a lifetime asks the scheduler to retire it (``RetireMe``) once the
  lifetime, give or take a random stagger, is over: its data moves to other workers
  first, then it is told to close. If the scheduler cannot retire it yet (no other
  worker to take its data), it asks again every ``ASK_AGAIN`` seconds.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import logging
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from corral import messages as msgs

if TYPE_CHECKING:
    from corral.worker.server import Worker

logger = logging.getLogger("corral.worker")

SETUP_NAMES = ("corral_setup", "dask_setup")
TEARDOWN_NAMES = ("corral_teardown", "dask_teardown")
ASK_AGAIN = 30.0  # seconds between requests to be retired, while the scheduler refuses


def load_preload(spec: str) -> ModuleType:
    """A ``--preload``: a path to a ``.py`` file, or a module name importable here."""
    if spec.endswith(".py"):
        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"--preload {spec}: no such file")
        name = f"corral_preload_{path.stem}"
        found = importlib.util.spec_from_file_location(name, path)
        assert found is not None
        assert found.loader is not None
        module = importlib.util.module_from_spec(found)
        sys.modules[name] = module
        found.loader.exec_module(module)
        return module
    return importlib.import_module(spec)


async def call_hook(module: ModuleType, names: tuple[str, ...], *args: Any) -> None:
    """Call the module's first function named in ``names``, awaiting it if need be."""
    for name in names:
        fn = getattr(module, name, None)
        if callable(fn):
            result = fn(*args)
            if inspect.isawaitable(result):
                await result
            return


def lifetime_delay(lifetime: float, stagger: float, rng: random.Random | None = None) -> float:
    """Seconds until a worker asks to retire: ``lifetime`` moved by up to ``stagger``
    either way, so workers started together do not all leave together."""
    rng = rng or random.Random()
    return max(0.0, lifetime + rng.uniform(-stagger, stagger))


class Lifecycle:
    """One worker's preload modules and lifetime."""

    def __init__(self, preload: Sequence[str] = (), lifetime: float | None = None,
                 lifetime_stagger: float = 0.0) -> None:
        self.preload = tuple(preload)
        self.modules: list[ModuleType] = []
        self.lifetime, self.lifetime_stagger = lifetime, lifetime_stagger
        self.lifetime_over = False  # it asked to be retired

    async def start(self, worker: Worker) -> None:
        """Once listening: import each preload and call its setup."""
        for spec in self.preload:
            module = load_preload(spec)
            self.modules.append(module)
            await call_hook(module, SETUP_NAMES, worker)

    async def close(self, worker: Worker) -> None:
        for module in self.modules:
            try:
                await call_hook(module, TEARDOWN_NAMES, worker)
            except Exception:
                logger.exception("preload %s: teardown failed", module.__name__)

    async def retire_in_time(self, worker: Worker) -> None:
        """Once the lifetime (if any) is over, ask the scheduler to retire ``worker``, and
        again every ``ASK_AGAIN`` seconds until it has."""
        if self.lifetime is None:
            return
        await asyncio.sleep(lifetime_delay(self.lifetime, self.lifetime_stagger))
        self.lifetime_over = True
        while worker.serving:
            logger.info("lifetime over: asking the scheduler to retire this worker")
            worker.tell_scheduler(msgs.RetireMe, reason="lifetime")
            await asyncio.sleep(ASK_AGAIN)
