"""corral's peer-to-peer shuffle for dask dataframes (``shuffle_method="corral"``).

Theory of operation (docs/shuffle.md tells users):

1. **Lowering** (``lowering``): dask's abstract ``Shuffle`` expression becomes
   ``CorralShuffle`` when its method is ``"corral"``, the default while a corral client
   is dask's scheduler. Its graph: one *transfer* task per input partition, one
   *barrier* on all of them, one *unpack* task per output partition.
2. **Placement** (``plan.place``, in the client's dask door, ``corral.client.dask_shuffle``):
   when the graph is submitted the output partitions are given to the workers the
   scheduler knows then, in contiguous blocks; each unpack task is pinned to its owner
   (loosely: it may run elsewhere if the owner is gone, and then fails as below).
3. **Transfer** (a worker, ``tasks.transfer``): the input partition is split by output
   partition and each owner is sent one batch with its pieces, straight over the
   workers' connection pool; an owner stores the pieces in its data store, which spills
   them to its local directory under memory pressure (``corral.worker.shuffle``). Each
   byte crosses the network once; pieces for the sending worker do not cross it at all.
4. **Unpack** (on the owner, after the barrier): the owner checks it heard from every
   input and concatenates its partition's pieces in input order (the order a
   tasks-based shuffle gives).
5. **Failure**: a worker lost mid-shuffle makes a transfer fail to reach it, or an
   unpack find its owner gone or pieces missing: ``ShuffleFailed``. dask's ``get`` on
   corral then releases the attempt and submits the graph again with a fresh run
   (fresh transfer keys, a placement over the workers alive now): the whole shuffle
   reruns from its inputs, so the result is exact. A piece is keyed by its input, so a
   transfer that ran twice in one run overwrites, never duplicates.

The scheduler never sees the pieces: it schedules ordinary tasks and holds no user
code or data for a shuffle.
"""

METHOD = "corral"  # the name of this method in dask's ``shuffle_method=`` and config
