"""What the client's modules need of each other and of a cluster, named as interfaces.

``future``, ``waiting``, ``progress``, ``executor`` and ``dask_graph`` use the client
that owns their futures through ``ClientCore``, never through ``AsyncClient``'s own
attributes, so imports point one way: ``client`` imports them, they import this.
``AsyncClient`` implements ``ClientCore``; its methods are public to this package and
left out of the documented API.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Hashable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from corral.client.future import Future, FutureState
    from corral.messages import FromClient, TaskSpec
    from corral.security import Security
    from corral.utils import LoopRunner

T = TypeVar("T")


class ClusterLike(Protocol):
    """A running cluster a client can connect to (``LocalCluster``, ``Cluster``)."""

    @property
    def scheduler_address(self) -> str: ...

    @property
    def security(self) -> Security | None: ...


class ClientCore(Protocol):
    """The client that owns futures, as futures, ``wait``, ``progress``, ``Executor`` and
    dask's ``get`` use it. Every method may be called from any thread unless it says so."""

    id: str  # names the client in errors and to the scheduler

    @property
    def closed(self) -> bool:
        """Whether ``close()`` has begun; its futures are cancelled then."""

    @property
    def runner(self) -> LoopRunner | None:
        """The loop a synchronous client's blocking calls wait on; None if asynchronous."""

    def check_open(self) -> None:
        """Raise ``ClientClosedError`` if the client is closed."""

    def blocking(
        self, coro: Coroutine[Any, Any, T], timeout: float | None, what: str = "the call"
    ) -> T:
        """Run ``coro`` on the loop of a synchronous client and wait for its result."""

    def in_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn(*args)`` on the client's loop."""

    def acquire_key(self, key: Hashable) -> FutureState:
        """One more future for ``key``: the state all of them share."""

    def release_key(self, key: Hashable) -> None:
        """One future fewer for ``key``; with none left, the scheduler may free it."""

    def holds(self, key: Hashable) -> bool:
        """Whether a future of this client stands for ``key`` (the cluster keeps it)."""

    def submit_many(
        self,
        fn: Callable[..., Any],
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
        keys: list[Hashable | None],
        pure: bool,
        options: dict[str, Any],
        on_start: Callable[[Future], None] | None = None,
    ) -> list[Future]:
        """A future per call of ``fn``, sent in one message."""

    def send_graph(
        self, tasks: list[TaskSpec], wanted: list[Hashable], report_start: bool = False,
        functions: tuple[bytes, ...] = (),
    ) -> None:
        """Send tasks (``corral.client.tasks.task_message``) in one message, with the
        pickled functions they name by position."""

    def cancel_soon(self, futures: Iterable[Future], unstarted_only: bool = False) -> None:
        """Ask the scheduler to cancel these futures' tasks, without waiting."""

    def add_done_callback(self, future: Future, fn: Callable[[Future], Any]) -> None:
        """Call ``fn(future)`` (user code) once ``future`` is done."""

    def call_user_code(self, fn: Callable[..., Any], *args: Any) -> None:
        """From the loop: call ``fn(*args)`` where user code may block."""

    async def gather_keys(
        self, keys: list[Hashable], errors: str = "raise"
    ) -> dict[Hashable, Any]:
        """On the loop: the values of finished keys, from the workers holding them."""

    async def gather(self, futures: Any, errors: str = "raise") -> Any:
        """On the loop: the results of (nested structures of) futures."""

    def adopt(self, key: Hashable) -> Future:
        """A future for ``key`` made elsewhere (unpickled); the scheduler is told."""

    def retry_soon(self, futures: Iterable[Future]) -> None:
        """Run these futures' failed tasks again, without waiting."""

    async def nthreads(self) -> dict[str, int]:
        """On the loop: each worker's address and number of threads, from the scheduler."""

    def send(self, msg: FromClient) -> None:
        """On the loop: put ``msg`` on the stream to the scheduler."""

    def new_id(self) -> str:
        """A stimulus id for a message from this client."""
