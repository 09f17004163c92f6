"""dask's in-process locks, made cluster-wide on their way to the workers.

``da.store(..., lock=True)``, ``x.to_zarr(..., mode="w")`` and ``from_array(...,
lock=True)`` put a ``dask.utils.SerializableLock`` in the graph when the scheduler is
not dask.distributed's own client. It pickles by a token, so all tasks in one *process*
share it; tasks in two worker processes each get their own, and writes that should
take turns race (a test lost values of a zarr array this way). So a task whose pickled
form names a ``SerializableLock`` is pickled again with each such lock replaced by the
corral ``Lock`` named after its token (``corral.client.coordination``): one lock held by
the scheduler, shared by every task on every worker that used the same dask lock.
A graph without one costs a search of its bytes per task.
"""

from __future__ import annotations

import io
from typing import Any

import cloudpickle

_MARK = b"SerializableLock"


def cluster_wide(run_spec: bytes, parts: Any) -> bytes:
    """``run_spec`` (the pickled ``parts``), or ``parts`` pickled again with every dask
    ``SerializableLock`` in it replaced by a cluster-wide corral lock."""
    if _MARK not in run_spec:
        return run_spec
    buffer = io.BytesIO()
    _LockSwapping(buffer, protocol=5).dump(parts)
    return buffer.getvalue()


def lock_for(token: str) -> Any:
    """On the worker: the corral lock standing for dask's lock ``token``."""
    from corral.client.coordination import Lock

    return Lock(name=f"dask-lock-{token}")


class _LockSwapping(cloudpickle.Pickler):  # type: ignore[misc]
    def reducer_override(self, obj: Any) -> Any:
        from dask.utils import SerializableLock

        if type(obj) is SerializableLock:
            return lock_for, (obj.token,)
        return super().reducer_override(obj)
