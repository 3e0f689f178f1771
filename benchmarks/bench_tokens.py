"""Benchmark 2: token economy over 30 minutes of (accelerated) emulator time, vs a token request per call."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.common import BenchResult, emulator, fmt, grants, progress, slim_stats, total_grants, truconnect_hook

TOKEN_LIFETIME = 300
SIMULATED_SECONDS = 30 * 60


class SharedClock:
    """Real time plus an offset that moves together with the emulator's clock."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Accelerator:
    """Moves the hook's clock and the emulator's clock together, ``steps`` times of ``step`` s over ``calls`` calls."""

    def __init__(self, emu: Any, clock: SharedClock, calls: int, steps: int, step: float) -> None:
        self.emu, self.clock, self.calls, self.steps, self.step = emu, clock, calls, steps, step
        self.done = 0
        self.taken = 0
        self.advanced = 0.0
        self._lock = threading.Lock()

    def tick(self) -> None:
        with self._lock:
            self.done += 1
            due = self.done * self.steps // self.calls
            while self.taken < due:
                # Client first: it then renews a little early rather than present a token the emulator has expired.
                self.clock.offset += self.step
                self.emu.control.advance(self.step)
                self.advanced += self.step
                self.taken += 1


def _run_threads(calls: int, threads: int, work: Callable[[int], None]) -> float:
    counter = iter(range(calls))
    lock = threading.Lock()

    def worker(index: int) -> None:
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                return
            work(index)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(worker, i) for i in range(threads)]:
            future.result()
    return time.perf_counter() - started


def _hook_scenario(emu: Any, calls: int, threads: int, shared: bool, iccid: str) -> dict[str, Any]:
    from airflow_provider_truconnect.client.token_cache import TokenCache

    emu.control.reset()
    emu.control.set_config(rate_limit_per_minute=None, access_token_lifetime=TOKEN_LIFETIME)
    clock = SharedClock()
    cache = TokenCache()  # a clean process cache: the first call must fetch
    steps = 180
    acc = Accelerator(emu, clock, calls, steps, SIMULATED_SECONDS / steps)
    conn_id = "truconnect_bench_tokens"
    hooks = [truconnect_hook(emu, conn_id, clock=clock, token_cache=cache) for _ in range(1 if shared else threads)]
    for hook in hooks:
        _ = hook.client  # connection lookup outside the timed part

    def work(index: int) -> None:
        hooks[0 if shared else index].get_sim(iccid)
        acc.tick()

    wall = _run_threads(calls, threads, work)
    for hook in hooks:
        hook.close()
    stats = emu.control.stats()
    return {
        "scenario": "one hook shared by the threads" if shared else "one hook per thread",
        "calls": calls,
        "threads": threads,
        "simulated_s": acc.advanced,
        "wall_s": wall,
        "grants": grants(stats),
        "grants_total": total_grants(stats),
        "unauthorized": stats.get("unauthorized", 0),
        "stats": slim_stats(stats),
    }


def _naive_scenario(emu: Any, calls: int, threads: int, iccid: str) -> dict[str, Any]:
    """What naive integrations do: a client_credentials POST before every call (one keep-alive session per thread)."""
    import requests

    emu.control.reset()
    emu.control.set_config(rate_limit_per_minute=None, access_token_lifetime=TOKEN_LIFETIME)
    sessions = [requests.Session() for _ in range(threads)]
    form = {"grant_type": "client_credentials", "client_id": emu.client_id, "client_secret": emu.client_secret}
    url = f"{emu.api_base}/v2/sims/{iccid}"

    def work(index: int) -> None:
        session = sessions[index]
        token = session.post(emu.oauth_url, data=form, timeout=30).json()["access_token"]
        resp = session.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        resp.raise_for_status()
        resp.json()

    wall = _run_threads(calls, threads, work)
    for session in sessions:
        session.close()
    stats = emu.control.stats()
    return {
        "scenario": "naive: token request before each call",
        "calls": calls,
        "threads": threads,
        "wall_s": wall,
        "grants": grants(stats),
        "grants_total": total_grants(stats),
        "unauthorized": stats.get("unauthorized", 0),
        "stats": slim_stats(stats),
    }


def run(quick: bool) -> BenchResult:
    calls, threads = (200, 4) if quick else (10_000, 16)
    naive_calls = calls if quick else 2_500
    with emulator(access_token_lifetime=TOKEN_LIFETIME) as emu:
        probe = truconnect_hook(emu, "truconnect_bench_probe")
        iccid = next(iter(probe.paginate("/v2/subscriptions", page_size=1, max_pages=1)))["sim_id"]
        probe.close()
        results = []
        for shared in (True, False):
            results.append(_hook_scenario(emu, calls, threads, shared, iccid))
            progress(f"tokens: {results[-1]['scenario']}: {results[-1]['grants']} in {results[-1]['wall_s']:.1f} s")
        naive = _naive_scenario(emu, naive_calls, threads, iccid)
        progress(f"tokens: naive: {naive['grants_total']} grants in {naive['wall_s']:.1f} s for {naive_calls} calls")

    ideal = math.ceil(SIMULATED_SECONDS / TOKEN_LIFETIME)
    with_skew = math.ceil(SIMULATED_SECONDS / (TOKEN_LIFETIME - 30))
    scale = calls / naive_calls
    rows: list[list[Any]] = []
    for res in results:
        g = res["grants"]
        rows.append(
            [
                res["scenario"],
                f"{res['calls']:,}",
                f"{res['grants_total']} ({g.get('client_credentials', 0)} client_credentials + "
                f"{g.get('refresh_token', 0)} refresh_token)",
                res["unauthorized"],
                fmt(res["wall_s"], 1),
                fmt(res["calls"] / res["wall_s"], 0),
            ]
        )
    rows.append(
        [
            naive["scenario"]
            + (f" (measured on {naive_calls:,} calls, ×{scale:g} extrapolated)" if scale != 1 else ""),
            f"{calls:,}",
            f"{round(naive['grants_total'] * scale):,} client_credentials",
            naive["unauthorized"],
            fmt(naive["wall_s"] * scale, 1),
            fmt(naive_calls / naive["wall_s"], 0),
        ]
    )
    shared = results[0]
    headline = [
        f"{calls:,} calls over {shared['simulated_s'] / 60:.0f} emulator minutes: {shared['grants_total']} token "
        f"grants (ideal {ideal}, {with_skew} with the 30 s renewal skew) vs {calls:,} for a token per call; "
        f"the naive pattern takes {(naive['wall_s'] * scale) / shared['wall_s']:.1f}× the wall time."
    ]
    return BenchResult(
        key="tokens",
        title=(
            f"2. Token economy ({calls:,} calls, {threads} threads, 30 min of emulator time, {TOKEN_LIFETIME} s tokens)"
        ),
        method=[
            f"{threads} threads share {calls:,} `get_sim` calls. Emulator time is accelerated: every "
            f"{calls / 180:.1f} completed calls (on average) the emulator clock (`/__emulator/clock`) and the "
            "hook's injected clock (real time + a shared offset) move together by 10 s, so "
            f"{SIMULATED_SECONDS // 60} minutes pass during the run. "
            "Token grants counted by the emulator, by grant type; 401s counted too (a 401 would mean the client "
            "presented a token the server had expired).",
            f"Ideal: ceil(30 min / {TOKEN_LIFETIME} s) = {ideal} grants; with the hook's renewal skew of 30 s "
            f"(renew at 270 s) it is {with_skew}. After the first `client_credentials` grant the hook renews with "
            "the cheaper `refresh_token` grant.",
            "Two hook layouts: one hook shared by all threads (one connection pool), and one hook per thread (16 "
            "pools) — both share the process-wide `TokenCache`, so they should need the same grants.",
            "Naive pattern: a `client_credentials` POST before each GET, one keep-alive `requests.Session` per thread"
            + (
                f"; measured on {naive_calls:,} calls and extrapolated linearly (×{scale:g}) to {calls:,} — grants are "
                "exactly one per call, wall time scales linearly."
                if scale != 1
                else "."
            ),
        ],
        columns=["scenario", "calls", "token grants", "401s", "wall time (s)", "calls/s"],
        notes=[
            "The emulator's token endpoint answers over loopback in about a millisecond, so the naive pattern's wall "
            "time penalty here is a floor: against the real Keycloak (a TLS round trip over the internet per grant, "
            "typically tens to hundreds of ms) it grows with that latency on every call, and the identity provider "
            "sees one grant per API call instead of about one per token lifetime.",
        ],
        rows=rows,
        headline=headline,
        raw={"ideal": ideal, "ideal_with_skew": with_skew, "hook": results, "naive": naive, "naive_scale": scale},
    )
