"""Objects that travel by name and are opened again on the other side.

An open h5py file or dataset holds an OS handle and cannot be pickled. As
dask.distributed does, corral sends a file opened read-only as its file name, and a
dataset or group as its file name and path within the file; the receiver opens the file
again (read-only) and looks the path up. A file open for writing is refused with a line
that says to open it read-only (writes from several processes need one writer, or a
format made for it, such as zarr).

The reducers are registered with ``copyreg`` once h5py has been imported in this
process (``register_if_loaded``, called by ``dumps_pickle``): corral never imports
h5py itself.
"""

from __future__ import annotations

import copyreg
import sys
from typing import Any

_registered = False


def register_if_loaded() -> None:
    global _registered
    if _registered or "h5py" not in sys.modules:
        return
    import h5py  # type: ignore[import-untyped]

    copyreg.pickle(h5py.File, _reduce_file)
    copyreg.pickle(h5py.Dataset, _reduce_member)
    copyreg.pickle(h5py.Group, _reduce_member)
    _registered = True


def _read_only_name(file: Any) -> str:
    if file.mode != "r":
        raise TypeError(f"h5py file {file.filename!r} is open for writing and cannot be "
                        "sent to other processes: open it read-only (mode='r') to pass it "
                        "to tasks, or have one task write it")
    return str(file.filename)


def _reduce_file(file: Any) -> tuple[Any, tuple[str]]:
    return _open_file, (_read_only_name(file),)


def _reduce_member(member: Any) -> tuple[Any, tuple[str, str]]:
    return _open_member, (_read_only_name(member.file), member.name)


def _open_file(filename: str) -> Any:
    import h5py

    return h5py.File(filename, mode="r")


def _open_member(filename: str, name: str) -> Any:
    return _open_file(filename)[name]
