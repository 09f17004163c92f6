"""corral's peer-to-peer dataframe shuffle (``corral.shuffle``): its pure decisions, a
worker's store of pieces (spilled to the worker's directory), and dataframe shuffles,
merges, ``set_index`` and ``groupby(split_out=2)`` across two worker processes with
local directories of their own, checked against pandas; last, a worker killed in the
middle of a shuffle, and the result still exact.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from corral import Client, LocalCluster
from corral.exceptions import ShuffleFailed
from corral.shuffle import METHOD, pieces, plan
from corral.shuffle.plan import Inbox, ShuffleSpec
from corral.worker.shards import Shards
from corral.worker.shuffle import ShuffleExtension
from tests._helpers import wait_until_blocking


def spec(n_inputs=3, npartitions=4, parts_out=None) -> ShuffleSpec:
    return ShuffleSpec(name="abc", n_inputs=n_inputs, npartitions=npartitions,
                       column="_partitions", ignore_index=False, meta=None,
                       parts_out=parts_out)


# -- pure -------------------------------------------------------------------------------


def test_placement_gives_each_worker_a_contiguous_block_whatever_their_order():
    s = plan.place(spec(npartitions=5), ["tcp://b:2", "tcp://a:1", "tcp://b:2"], run="r1")
    assert s.run == "r1"
    assert s.owners == ("tcp://a:1", "tcp://b:2")
    assert [s.owner_of(p) for p in range(5)] == ["tcp://a:1"] * 3 + ["tcp://b:2"] * 2
    assert plan.owned(s, "tcp://b:2") == [3, 4]


def test_an_unplaced_shuffle_and_one_without_workers_fail_clearly():
    with pytest.raises(ShuffleFailed, match="never placed"):
        spec().owner_of(0)
    with pytest.raises(ShuffleFailed, match="no workers"):
        plan.place(spec(), [], run="r")


def test_every_owner_of_a_wanted_partition_gets_a_batch_even_an_empty_one():
    s = plan.place(spec(npartitions=4, parts_out=(0, 1, 3)), ["a", "b"], run="r")
    pieces = {0: [1, 2], 1: [], 2: [5], 3: [7]}
    assert plan.batches(s, pieces) == {"a": [(0, [1, 2])], "b": [(3, [7])]}
    assert plan.batches(s, {}) == {"a": [], "b": []}


def test_a_partition_is_taken_once_every_input_was_heard():
    s = plan.place(spec(n_inputs=3, npartitions=4), ["a", "b"], run="r")
    inbox = Inbox()
    assert inbox.receive("abc", "r", 2) is None
    inbox.receive("abc", "r", 0)
    with pytest.raises(ShuffleFailed, match="1 of 3 inputs never reached a") as e:
        inbox.take(s, 0, "a")
    assert e.value.worker == ""  # not a lost worker: nobody to avoid next time
    inbox.receive("abc", "r", 1)
    inbox.receive("abc", "r", 2)  # a transfer that ran twice
    assert inbox.take(s, 0, "a") is False
    assert inbox.take(s, 1, "a") is True  # the last partition a owns: the run is over
    assert inbox.heard == {}


def test_an_unpack_away_from_its_owner_or_run_twice_fails_and_names_the_suspect():
    s = plan.place(spec(n_inputs=1, npartitions=2), ["a", "b"], run="r")
    inbox = Inbox()
    with pytest.raises(ShuffleFailed, match="belongs to b") as e:
        inbox.take(s, 1, "a")
    assert e.value.worker == "b"
    s4 = plan.place(spec(n_inputs=1, npartitions=4), ["a", "b"], run="r")
    inbox.receive("abc", "r", 0)
    inbox.take(s4, 0, "a")
    with pytest.raises(ShuffleFailed, match="unpacked on a before"):
        inbox.take(s4, 0, "a")


def test_a_new_run_drops_the_failed_one():
    inbox = Inbox()
    inbox.receive("abc", "r1", 0)
    assert inbox.receive("abc", "r2", 0) == "r1"
    assert inbox.receive("abc", "r2", 1) is None
    assert set(inbox.heard) == {("abc", "r2")}


# -- a worker's store of pieces ---------------------------------------------------------


def test_shards_go_to_one_file_per_partition_and_come_back_in_input_order(tmp_path):
    shards = Shards(str(tmp_path), budget=10)
    for input_ in (2, 0, 1):
        for partition in (0, 1):
            shards.add(("abc", "r", partition), input_, b"piece %d-%d" % (partition, input_))
        assert shards.full
        shards.flush()  # one record per partition each time
        assert shards.in_memory == 0
    (run_dir,) = os.listdir(tmp_path)
    assert sorted(os.listdir(tmp_path / run_dir)) == ["0", "1"]
    shards.add(("abc", "r", 0), 1, b"again")  # input 1 ran again: its newer piece wins
    assert shards.take(("abc", "r", 0)) == [b"piece 0-0", b"again", b"piece 0-2"]
    assert os.listdir(tmp_path / run_dir) == ["1"]
    shards.drop("abc", "r")
    assert os.listdir(tmp_path) == []
    assert shards.in_memory == 0
    assert shards.on_disk == 0
    assert shards.written_total == 6 * len(b"piece 0-0")


def test_a_worker_starting_afresh_forgets_every_shuffles_pieces(tmp_path):
    shards = Shards(str(tmp_path), budget=0)
    for run in ("r1", "r2"):
        shards.add(("abc", run, 0), 0, b"on disk")
    shards.flush()
    shards.add(("abc", "r2", 1), 0, b"in memory")
    assert len(os.listdir(tmp_path)) == 2
    shards.clear()
    assert os.listdir(tmp_path) == []
    assert (shards.in_memory, shards.on_disk) == (0, 0)
    assert shards.take(("abc", "r2", 0)) == []


@pytest.mark.skipif(sys.platform != "linux", reason="tmpfs")
def test_shards_stay_in_memory_when_the_disk_is_full(tiny_disk, caplog):
    shards = Shards(tiny_disk, budget=0)
    big = os.urandom(3 * 2**20)  # more than the 2 MiB disk holds
    shards.add(("abc", "r", 0), 0, big)
    shards.add(("abc", "r", 1), 0, b"small")
    shards.flush()
    assert shards.write_error is not None
    assert shards.in_memory == len(big)
    shards.flush()  # fails again: logged once
    assert len([r for r in caplog.records if "cannot write" in r.getMessage()]) == 1
    assert shards.take(("abc", "r", 0)) == [big]
    assert shards.take(("abc", "r", 1)) == [b"small"]
    assert shards.in_memory == 0


def odd_frame(n: int = 40) -> pd.DataFrame:
    """Dtypes a round trip through Arrow could lose."""
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "_partitions": rng.integers(0, 4, n),
        "cat": pd.Categorical(rng.choice(list("abc"), n)),
        "when": pd.date_range("2000", periods=n, freq="h", tz="Europe/Paris"),
        "s": pd.array([f"s{i}" for i in range(n)], dtype="string"),
        "missing": [None] * n,
        "x": rng.random(n),
    }, index=pd.Index(np.arange(100, 100 + n), name="ix"))


@pytest.mark.parametrize("ignore_index", [False, True])
@pytest.mark.parametrize("mixed", [False, True], ids=["arrow", "pickle"])
def test_pieces_join_to_what_dasks_own_split_and_concat_give(ignore_index, mixed):
    from dask.dataframe.dispatch import concat
    from dask.dataframe.shuffle import shuffle_group

    frames = [odd_frame(), odd_frame().iloc[5:]]
    if mixed:  # an object column Arrow cannot hold: that input goes pickled
        frames[1] = frames[1].assign(missing=[1, "a"] * 17 + [1])
    s = ShuffleSpec(name="abc", n_inputs=2, npartitions=4, column="_partitions",
                    ignore_index=ignore_index, meta=frames[0].iloc[:0], parts_out=(0, 1, 3))
    split = [pieces.split(f, s) for f in frames]
    assert all(p[:1] == pieces.ARROW for p in split[0].values())
    assert set(split[0]) == {0, 1, 3}
    for partition in (0, 1, 3):
        got = pieces.join([cut[partition] for cut in split], s)
        want = concat([shuffle_group(f, "_partitions", 0, 4, 4, ignore_index, 4)[partition]
                       for f in frames], ignore_index=ignore_index)
        if ignore_index:  # (dask's concat repeats each piece's; any index will do)
            want = want.reset_index(drop=True)
        pd.testing.assert_frame_equal(got, want)
    assert pieces.join([], s) is s.meta


class FakeWorker:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.address = "a"
        self.loop = loop


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_a_workers_pieces_go_to_its_directory_beyond_a_tenth_of_its_limit(tmp_path, loop):
    ext = ShuffleExtension(FakeWorker(loop))  # type: ignore[arg-type]
    ext.start(str(tmp_path), memory_limit=10_000)
    s = plan.place(spec(n_inputs=2, npartitions=1), ["a"], run="r")
    ext.send(s, 1, {"a": [(0, b"1" * 600)]})  # its own batch: stored, never sent
    ext.send(s, 0, {"a": [(0, b"0" * 600)]})
    assert ext.shards.written_total == 1200  # acknowledged only once written
    assert os.listdir(tmp_path / "shuffle")
    assert ext.take(s, 0) == [b"0" * 600, b"1" * 600]
    assert os.listdir(tmp_path / "shuffle") == []  # the run is over here


# -- on a cluster of worker processes ---------------------------------------------------


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """Two worker processes, one thread each, each with a local directory of its own
    (no nannies: the last test kills one for good)."""
    with LocalCluster(n_workers=0, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        env = {**os.environ, **cluster.security.environment()}
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "corral.cli", "worker", cluster.scheduler_address,
                 "--nthreads", "1", "--memory-limit", "0", "--no-nanny",
                 "--local-directory", str(tmp_path_factory.mktemp(f"worker{i}"))],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for i in range(2)
        ]
        try:
            wait_until_blocking(lambda: len(client.nthreads()) == 2, 60, "two workers")
            yield client
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(30)


def frame(n=2000, nparts=6, seed=0):
    rng = np.random.default_rng(seed)
    pdf = pd.DataFrame({"k": rng.integers(0, 50, n), "v": rng.random(n),
                        "s": rng.integers(0, 1000, n)})
    return pdf, dd.from_pandas(pdf, npartitions=nparts)


def same(got, want, by):
    got = got.sort_values(by).reset_index(drop=True)
    want = want.sort_values(by).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False, check_index_type=False)


def received(client):
    def count():
        from corral.worker import get_worker

        return get_worker().shuffles.received_bytes

    return sum(client.run(count).values())


def test_corral_shuffle_is_dasks_default_under_a_corral_client(client):
    assert dask.config.get("dataframe.shuffle.method") == METHOD
    with dask.config.set({"dataframe.shuffle.method": "tasks"}):
        assert dask.config.get("dataframe.shuffle.method") == "tasks"


def test_a_bags_groupby_runs_by_tasks_under_corrals_default(client):
    """dask.bag reads the dataframe setting but knows only disk and tasks: it raised
    "Shuffle must be 'disk' or 'tasks'" for "corral". Tasks are right across hosts."""
    import dask.bag as db

    grouped = db.from_sequence(range(20), npartitions=4).groupby(lambda x: x % 3)
    assert any("shuffle-group" in str(k) for k in dict(grouped.__dask_graph__()))
    assert sorted((k, sorted(v)) for k, v in grouped.compute()) == [
        (r, list(range(r, 20, 3))) for r in range(3)]


def tag(df, partition_info=None):
    return df.assign(part=partition_info["number"])


def test_shuffle_on_a_column_moves_pieces_between_workers_and_is_exact(client):
    pdf, ddf = frame()
    before = received(client)
    shuffled = ddf.shuffle("k", npartitions=4)
    assert any("corral-shuffle-transfer" in str(k) for k in dict(shuffled.__dask_graph__()))
    out = shuffled.map_partitions(tag, meta={**ddf.dtypes, "part": int}).compute()
    same(out.drop(columns="part"), pdf, ["k", "v"])
    assert out.groupby("k")["part"].nunique().max() == 1  # each k in one partition
    assert received(client) > before  # pieces crossed from one worker to the other


def test_merge_on_non_index_columns_matches_pandas(client):
    left, dleft = frame(seed=1)
    right = pd.DataFrame({"k": np.arange(50), "w": np.arange(50) * 10.0})
    dright = dd.from_pandas(right, npartitions=5)
    out = dleft.merge(dright, on="k", how="inner", broadcast=False).compute()
    same(out, left.merge(right, on="k"), ["k", "v"])


def test_set_index_matches_pandas(client):
    pdf, ddf = frame(seed=2)
    out = ddf.set_index("s").compute()
    assert out.index.is_monotonic_increasing
    same(out.reset_index(), pdf.set_index("s").reset_index(), ["s", "v"])


def test_groupby_split_out_matches_pandas(client):
    pdf, ddf = frame(seed=3)
    out = ddf.groupby("k").agg({"v": "sum", "s": "max"}, split_out=2).compute()
    want = pdf.groupby("k").agg({"v": "sum", "s": "max"})
    pd.testing.assert_frame_equal(out.sort_index(), want, check_dtype=False, atol=1e-9)


def test_another_scheduler_in_this_process_runs_the_shuffle_here(client):
    pdf, ddf = frame(seed=6)
    shuffled = ddf.shuffle("k", npartitions=3)
    assert any("corral-shuffle-transfer" in str(k) for k in dict(shuffled.__dask_graph__()))
    same(shuffled.compute(scheduler="sync"), pdf, ["k", "v"])
    same(shuffled.compute(scheduler="threads"), pdf, ["k", "v"])


def test_tasks_shuffle_stays_available(client):
    pdf, ddf = frame(seed=4)
    shuffled = ddf.shuffle("k", npartitions=3, shuffle_method="tasks")
    assert not any("corral-shuffle" in str(k) for k in dict(shuffled.__dask_graph__()))
    same(shuffled.compute(), pdf, ["k", "v"])


def kill_once(df, marker):
    """Kill this worker process the first time, once a peer's pieces reached it."""
    from corral.worker import get_worker

    try:  # created here or not at all: two workers starting at once must not both die
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return df
    worker = get_worker()
    deadline = time.monotonic() + 10
    while not worker.shuffles.inbox.heard and time.monotonic() < deadline:
        time.sleep(0.01)
    os._exit(1)


# Up to 10 s of kill_once's own wait, a nanny's restart and a whole rerun: 8-37 s with
# two busy processes beside it on 2 cores, and over the suite's 60 s once in CI.
@pytest.mark.timeout(180)
def test_a_worker_killed_mid_shuffle_the_shuffle_reruns_and_is_exact(client, tmp_path,
                                                                      caplog):
    pdf, ddf = frame(n=3000, nparts=8, seed=5)
    marker = str(tmp_path / "killed")
    doomed = ddf.map_partitions(kill_once, marker, meta=ddf._meta)
    with caplog.at_level("WARNING", logger="corral.shuffle"):
        out = doomed.shuffle("k", npartitions=4).compute()
    assert os.path.exists(marker)
    same(out, pdf, ["k", "v", "s"])
    assert "running the graph again" in caplog.text  # the shuffle did fail, and reran
