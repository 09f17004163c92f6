"""The asynchronous client: submit and map from ``async`` code, await the futures.

Shows ``async with Client(asynchronous=True)``, ``async for ... in as_completed(...)``,
``await wait(...)``, ``await progress(...)``, ``await client.gather(...)`` and awaiting
a future directly. The scheduler of the local cluster runs on this script's own loop.

    python examples/async_client.py [SCHEDULER_ADDRESS]
"""

import asyncio
import sys
import time

from corral import Client, LocalCluster, as_completed, progress, wait


def slow_square(x: int) -> int:
    time.sleep(0.05 * (x % 3))  # finish out of order
    return x * x


async def main(address: str) -> None:
    async with Client(address, asynchronous=True) as client:
        squares = client.map(slow_square, range(10))  # submitting never waits
        total = client.submit(sum, squares)  # futures as arguments become dependencies

        order = [value async for _, value in as_completed(squares, with_results=True)]
        print("as_completed, in the order they finished:", order)

        done, not_done = await wait([total], timeout=10)
        print(f"wait: {len(done)} done, {len(not_done)} pending")

        cubes = client.map(lambda x: x**3, range(10))
        await progress(cubes, desc="cubes")  # a progress bar on stderr

        print("gather squares:", await client.gather(squares))
        print("gather cubes:", await client.gather(cubes))
        print("sum of squares:", await total)


async def on_local_cluster() -> None:
    async with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None,
                            asynchronous=True) as cluster:
        await main(cluster.scheduler_address)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]) if len(sys.argv) > 1 else on_local_cluster())
