"""The scheduler's web dashboard, JSON API and Prometheus ``/metrics``.

``Dashboard`` (and with it aiohttp, ~0.3 s to import) loads on first use, so that the
pure views in ``corral.dashboard.snapshot`` can be used without it.
"""

import typing as _typing

from corral._lazy import lazy_exports as _lazy_exports

__getattr__, __dir__ = _lazy_exports(__name__, {"Dashboard": "corral.dashboard.app"})

if _typing.TYPE_CHECKING:
    from corral.dashboard.app import Dashboard

__all__ = ["Dashboard"]
