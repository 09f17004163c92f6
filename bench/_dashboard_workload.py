"""Task throughput with the dashboard closed and open, in one cluster.

Run inside either environment: ``python _dashboard_workload.py corral|dask CHROMIUM``.
"Open" means a real headless chromium showing the status page (its live updates
running) for the whole measurement. Rounds alternate closed/open so drift cancels.
Prints one JSON object.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

TASKS = 10_000
ROUNDS = 5
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def noop(x):
    return x


def throughput(client) -> float:
    start = time.perf_counter()
    futures = client.map(noop, range(TASKS), pure=False)
    client.gather(futures)
    rate = TASKS / (time.perf_counter() - start)
    del futures
    gc.collect()
    time.sleep(0.5)
    return rate


def open_browser(chromium: str, url: str) -> tuple[subprocess.Popen, str]:
    profile = tempfile.mkdtemp(prefix="corral-bench-chromium-")
    browser = subprocess.Popen(
        [chromium, *CHROMIUM_ARGS, f"--user-data-dir={profile}", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(4)  # loads the page, logs in, starts its live updates
    return browser, profile


def close_browser(browser: subprocess.Popen, profile: str) -> None:
    browser.terminate()
    browser.wait(timeout=20)
    shutil.rmtree(profile, ignore_errors=True)


def main() -> None:
    system, chromium = sys.argv[1], sys.argv[2]
    if system == "corral":
        from corral import Client, LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0")
        client = Client(cluster)
        url = client.dashboard_link
    else:
        from dask.distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0")
        client = Client(cluster.scheduler_address)
        url = client.dashboard_link
    closed, opened = [], []
    try:
        throughput(client)  # warm up
        for i in range(ROUNDS):
            first_open = i % 2 == 1
            for is_open in (first_open, not first_open):
                if is_open:
                    browser, profile = open_browser(chromium, url)
                    try:
                        opened.append(throughput(client))
                    finally:
                        close_browser(browser, profile)
                else:
                    closed.append(throughput(client))
    finally:
        client.close()
        cluster.close()
    print(json.dumps({"closed": closed, "open": opened,
                      "closed_median": statistics.median(closed),
                      "open_median": statistics.median(opened)}))
    os._exit(0)


if __name__ == "__main__":
    main()
