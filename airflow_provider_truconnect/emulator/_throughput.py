"""Measure the emulator's throughput for ``GET /connect-api/v2/sims/{iccid}``.

``python -m airflow_provider_truconnect.emulator._throughput [--threads N] [--seconds S]`` starts a subprocess-mode
emulator (so it does not share the GIL with the load generator), gets a token, and hammers one route with N
keep-alive ``requests.Session`` threads. The rate limit is disabled for the run.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from typing import Any

import requests

from airflow_provider_truconnect.emulator.server import run_emulator


def measure(threads: int = 4, seconds: float = 5.0, mode: str = "subprocess") -> dict[str, Any]:
    """Run the benchmark.

    :param threads: concurrent keep-alive sessions.
    :param seconds: measuring time (after a short warm-up).
    :param mode: ``"subprocess"`` or ``"thread"``.
    :return: ``{"requests", "errors", "seconds", "rps", "threads", "cpus"}``.
    """
    with run_emulator(mode="subprocess" if mode == "subprocess" else "thread", rate_limit_per_minute=None) as emu:
        token = requests.post(
            emu.oauth_url,
            data={"grant_type": "client_credentials"},
            auth=(emu.client_id, emu.client_secret),
            timeout=10,
        ).json()["access_token"]
        first = requests.get(
            emu.api_base + "/v2/subscriptions?page_size=1", headers={"Authorization": f"Bearer {token}"}, timeout=10
        ).json()["data"][0]
        url = f"{emu.api_base}/v2/sims/{first['sim_id']}"
        counts = [0] * threads
        errors = [0] * threads
        start = threading.Barrier(threads + 1)
        stop = threading.Event()

        def worker(index: int) -> None:
            session = requests.Session()
            session.headers.update({"Authorization": f"Bearer {token}", "X-Correlation-ID": f"bench-{index}"})
            session.get(url, timeout=10)
            start.wait()
            while not stop.is_set():
                try:
                    if session.get(url, timeout=10).status_code == 200:
                        counts[index] += 1
                    else:
                        errors[index] += 1
                except requests.RequestException:
                    errors[index] += 1
            session.close()

        workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
        for thread in workers:
            thread.start()
        start.wait()
        began = time.perf_counter()
        time.sleep(seconds)
        stop.set()
        for thread in workers:
            thread.join()
        elapsed = time.perf_counter() - began
    total = sum(counts)
    return {
        "requests": total,
        "errors": sum(errors),
        "seconds": round(elapsed, 2),
        "rps": round(total / elapsed, 1),
        "threads": threads,
        "cpus": os.cpu_count(),
    }


def main() -> None:
    """Command-line entry: print the measurement."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--mode", choices=["subprocess", "thread"], default="subprocess")
    args = parser.parse_args()
    print(measure(args.threads, args.seconds, args.mode))


if __name__ == "__main__":
    main()
