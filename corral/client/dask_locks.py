"""dask's in-process locks, made cluster-wide on their way to the workers; in-process
write targets, refused.

``da.store(..., lock=True)``, ``x.to_zarr(..., mode="w")`` and ``from_array(...,
lock=True)`` put a ``dask.utils.SerializableLock`` in the graph when the scheduler is
not dask.distributed's own client. It pickles by a token, so all tasks in one *process*
share it; tasks in two worker processes each get their own, and writes that should
take turns race (a test lost values of a zarr array this way). So a task whose pickled
form names a ``SerializableLock`` is pickled again with each such lock replaced by the
corral ``Lock`` named after its token (``corral.client.coordination``): one lock held by
the scheduler, shared by every task on every worker that used the same dask lock.
A graph without one costs a search of its bytes per task.

A task that writes into an in-memory zarr array (``x.to_zarr(zarr.zeros(...))``) would
write into each worker's unpickled copy, and every write would be lost without a word;
dask.distributed refuses it, and so does corral (``LostWritesError``), found the same
way: a search of the task's bytes (a store into a memory store), then of its objects.
Reading from one is fine: the workers' copies hold the data.
"""

from __future__ import annotations

import io
from typing import Any

import cloudpickle

from corral.exceptions import LostWritesError

_MARK = b"SerializableLock"
_STORE = b"store_chunk"  # dask.array's store_chunk and load_store_chunk: writes
_MEMORY_STORES = (b"MemoryStore", b"KVStore")  # zarr 3's and zarr 2's in-memory stores


def cluster_wide(run_spec: bytes, parts: Any) -> bytes:
    """``run_spec`` (the pickled ``parts``), or ``parts`` pickled again with every dask
    ``SerializableLock`` in it replaced by a cluster-wide corral lock.
    ``LostWritesError`` if it holds an in-memory zarr array."""
    if _STORE in run_spec and any(mark in run_spec for mark in _MEMORY_STORES):
        _NoInMemoryZarr(io.BytesIO(), protocol=5).dump(parts)
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


def _in_memory_zarr(obj: Any) -> bool:
    cls = type(obj)
    if not (cls.__module__.startswith("zarr") and cls.__name__ == "Array"):
        return False
    store = getattr(obj, "store", None)
    if type(store).__name__ == "KVStore":  # zarr 2: in memory if it wraps a dict
        store = getattr(store, "_mutable_mapping", store)
    return isinstance(store, dict) or type(store).__name__ == "MemoryStore"


class _NoInMemoryZarr(cloudpickle.Pickler):  # type: ignore[misc]
    def reducer_override(self, obj: Any) -> Any:
        if _in_memory_zarr(obj):
            raise LostWritesError(
                "cannot write into an in-memory zarr array from a corral cluster: each "
                "worker would write into its own copy and the writes would be lost; write "
                "to a zarr store on disk or in object storage (give a path or URL) instead")
        return super().reducer_override(obj)
