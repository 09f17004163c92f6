"""How a shuffle's pieces travel and wait: as bytes, made on the transfer task's
thread and read on the unpack task's (``corral.shuffle`` explains the whole).

Most frames go as Apache Arrow: the input is converted once, its rows ordered by output
partition, and each partition's rows become one Arrow IPC stream; an unpack reads its
streams, joins them as one table and converts that to pandas once. Pickling each piece
as a DataFrame instead costs about half a millisecond a piece each way, mostly in
pandas' per-object overhead, and a shuffle has ``n²`` pieces. Frames Arrow cannot hold
(mixed-type object columns, ...) go pickled, piece by piece. The first byte says which.
"""

from __future__ import annotations

from typing import Any

from corral.shuffle.plan import ShuffleSpec
from corral.worker.spill import dump_frames, load_frames

ARROW, PICKLE = b"A", b"P"


def split(frame: Any, spec: ShuffleSpec) -> dict[int, bytes]:
    """Input ``frame`` as packed pieces by wanted output partition (empty ones left out)."""
    try:
        return _split_arrow(frame, spec)
    except (ImportError, TypeError, ValueError):  # (pyarrow's ArrowInvalid is a ValueError)
        pass
    from dask.dataframe.shuffle import shuffle_group

    n = spec.npartitions
    groups = shuffle_group(frame, spec.column, 0, n, n, spec.ignore_index, n)
    return {p: PICKLE + b"".join(dump_frames(piece)) for p, piece in groups.items()
            if spec.wanted(p) and len(piece)}


def join(pieces: list[bytes | memoryview], spec: ShuffleSpec) -> Any:
    """One output partition from its pieces, in the order given."""
    if not pieces:
        return spec.meta
    if all(p[:1] == ARROW for p in pieces):
        try:
            return _conform(_table(pieces).to_pandas(), spec.meta)
        except (TypeError, ValueError):  # tables that do not line up: one by one
            pass
    from dask.dataframe.dispatch import concat

    out = concat([_unpack(p, spec) for p in pieces], uniform=True)
    return out.reset_index(drop=True) if spec.ignore_index else out  # as Arrow's


def _split_arrow(frame: Any, spec: ShuffleSpec) -> dict[int, bytes]:
    import numpy as np
    import pyarrow as pa

    if spec.column != "_partitions":  # (dask hashes other columns itself: its own way)
        raise TypeError("not split by partition numbers")
    n = spec.npartitions
    target = (frame[spec.column].to_numpy() % n).astype(np.intp)
    order = np.argsort(target, kind="stable")  # rows keep their order within a piece
    counts = np.bincount(target, minlength=n)
    starts = np.concatenate([[0], np.cumsum(counts)])
    table = pa.Table.from_pandas(frame, preserve_index=not spec.ignore_index).take(order)
    # An IPC stream is its schema's message, then its batches': the schema is
    # serialized once for all pieces (a stream writer per piece took five times longer),
    # unless dictionaries (categoricals) must go with each piece.
    plain = not any(pa.types.is_dictionary(field.type) for field in table.schema)
    schema = table.schema.serialize() if plain else None
    return {p: ARROW + _ipc(table.slice(starts[p], counts[p]), schema)
            for p in range(n) if counts[p] and spec.wanted(p)}


def _ipc(table: Any, schema: Any) -> bytes:
    """``table`` as an Arrow IPC stream, its schema's message given if it has one."""
    import pyarrow as pa

    if schema is not None:
        return b"".join([schema, *(batch.serialize() for batch in table.to_batches())])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def _table(pieces: list[bytes | memoryview]) -> Any:
    import pyarrow as pa

    tables = [pa.ipc.open_stream(memoryview(p)[1:]).read_all() for p in pieces]
    return pa.concat_tables(tables, promote_options="default")


def _unpack(piece: bytes | memoryview, spec: ShuffleSpec) -> Any:
    if piece[:1] == ARROW:
        return _conform(_table([piece]).to_pandas(), spec.meta)
    return load_frames(bytearray(memoryview(piece)[1:]))  # (writable arrays)


def _conform(frame: Any, meta: Any) -> Any:
    """``frame`` with ``meta``'s dtypes where Arrow gave others back (a column that was
    all missing in every piece, categories, ...)."""
    differ = {c: t for c, t in meta.dtypes.items() if c in frame and frame[c].dtype != t}
    return frame.astype(differ) if differ else frame
