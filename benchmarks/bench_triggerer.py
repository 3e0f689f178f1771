"""Benchmark 4: 1,000 concurrent deferred order waits in one event loop (the triggerer): token grants, TCP connections
to the API and CPU of the loop, with the shared connection pool and with a pool per trigger; vs poke mode slot time."""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from benchmarks.common import (
    BenchResult,
    emulator,
    env_vars,
    fmt,
    grants,
    median,
    progress,
    route_count,
    slim_stats,
    total_grants,
    truconnect_hook,
)

GET_ORDER = "GET /v2/orders/{order_id}"
TOKEN_LIFETIME_S = 300
#: ``max_connections`` of the pool ``new_http_client`` builds.
POOL_MAX_CONNECTIONS = 32
#: Illustrative cost of one extra task start on a worker (not measured here); stated wherever it is used.
ASSUMED_TASK_START_S = 2.0


def _order_body(product_id: str, n: int) -> dict[str, Any]:
    return {
        "operation_type": "ACTIVATION",
        "sim_type": "ESIM",
        "country": "GB",
        "product": {"id": product_id},
        "subscriber": {
            "email": f"bench{n}@example.com",
            "first_name": "Bench",
            "last_name": f"User{n}",
            "country_of_residence": "GB",
            "device": {"model": "bench"},
        },
    }


class ConnectionSampler:
    """Counts this process's established TCP connections to one port, every ``interval`` s, in its own thread (so
    that the event loop's CPU is not charged for it)."""

    def __init__(self, port: int, interval: float = 0.05) -> None:
        import psutil

        self._process = psutil.Process()
        self._established = psutil.CONN_ESTABLISHED
        self.port, self.interval = port, interval
        self.samples: list[int] = []
        #: Local ports of every connection seen: a lower bound of the connections opened (one may open and close
        #: between two samples).
        self.ports: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="connection-sampler", daemon=True)

    def count(self) -> int:
        ports = [
            c.laddr.port
            for c in self._process.net_connections(kind="tcp")
            if c.raddr and c.raddr.port == self.port and c.status == self._established
        ]
        self.ports.update(ports)
        return len(ports)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(self.count())

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def pool_per_client() -> Iterator[None]:
    """The hook as it was before the shared pool: every async client (so every trigger) opens and closes its own."""
    from airflow_provider_truconnect.client.async_client import AsyncTruConnectClient
    from airflow_provider_truconnect.hooks import truconnect as hook_module

    hook_cls = hook_module.TruConnectHook
    shared = hook_cls.get_async_client

    async def own_pool(self: Any) -> Any:
        return AsyncTruConnectClient(
            await self.aget_client_config(),
            token_cache=self._token_cache,
            clock=self._clock,
            retry_policy=self._retry_policy,
            on_new_token_async=hook_module._amask_secret,
            correlation_prefix=self._correlation_prefix,
        )

    hook_cls.get_async_client = own_pool  # type: ignore[method-assign]
    try:
        yield
    finally:
        hook_cls.get_async_client = shared  # type: ignore[method-assign]


def _trigger_class() -> tuple[Any, str]:
    try:
        from airflow_provider_truconnect.triggers.truconnect import TruConnectOrderTrigger
    except ImportError as exc:  # the trigger module is optional while it is being built
        return None, f"{type(exc).__name__}: {exc}"
    return TruConnectOrderTrigger, ""


async def _wait_all_with_triggers(
    trigger_cls: Any, order_ids: list[str], poll: float, deadline: float
) -> tuple[list[Any], float]:
    """Run the triggers in this loop; returns their (end time, event) and the CPU time of the loop's thread."""

    async def one(order_id: str) -> tuple[float, dict[str, Any]]:
        trigger = trigger_cls(order_id, "truconnect_default", poll, end_time=deadline)
        payload: dict[str, Any] = {}
        async for event in trigger.run():
            payload = event.payload
            break
        return time.perf_counter(), payload

    cpu0 = time.thread_time()
    done = list(await asyncio.gather(*(one(o) for o in order_ids)))
    return done, time.thread_time() - cpu0


async def _wait_all_with_client(
    emu: Any, order_ids: list[str], poll: float, deadline: float
) -> tuple[list[Any], float]:
    """Fallback when the trigger is missing: the same polling loop on one shared AsyncTruConnectClient."""
    from airflow_provider_truconnect.client.async_client import AsyncTruConnectClient
    from airflow_provider_truconnect.client.config import ClientConfig

    config = ClientConfig.from_connection_fields(
        host=emu.api_base, login=emu.client_id, password=emu.client_secret, extra={"oauth_url": emu.oauth_url}
    )
    async with AsyncTruConnectClient(config) as client:

        async def one(order_id: str) -> tuple[float, dict[str, Any]]:
            while True:
                order = await client.get_order(order_id)
                if order.get("status") in ("COMPLETED", "FAILED") or time.time() >= deadline:
                    return time.perf_counter(), {"status": str(order.get("status")).lower()}
                await asyncio.sleep(poll)

        cpu0 = time.thread_time()
        done = list(await asyncio.gather(*(one(o) for o in order_ids)))
        return done, time.thread_time() - cpu0


def _create_orders(emu: Any, waits: int) -> tuple[list[str], list[float], list[float]]:
    """Place ``waits`` orders with the sync hook; returns their ids, submit times and resume (one read) times."""
    from airflow_provider_truconnect.client.token_cache import TokenCache

    # The creator uses its own token cache so that the triggers start with an empty process-wide cache.
    creator = truconnect_hook(emu, "truconnect_bench_orders", token_cache=TokenCache())
    product_id = next(p["id"] for p in creator.list_products(page_size=100) if "ESIM" in p.get("sim_type", []))
    submit: list[float] = []
    order_ids: list[str] = []
    for n in range(waits):
        t0 = time.perf_counter()
        order_ids.append(creator.create_order(_order_body(product_id, n))["id"])
        submit.append(time.perf_counter() - t0)
    resume: list[float] = []
    for order_id in order_ids[: min(50, waits)]:  # what a resumed task does at most: read the order once
        t0 = time.perf_counter()
        creator.get_order(order_id)
        resume.append(time.perf_counter() - t0)
    creator.close()
    return order_ids, submit, resume


def _wait_round(emu: Any, trigger_cls: Any, order_ids: list[str], poll: float, shared_pool: bool) -> dict[str, Any]:
    """One triggerer loop running a wait per order; what the emulator and the operating system saw."""
    from airflow_provider_truconnect.client.token_cache import DEFAULT_TOKEN_CACHE

    DEFAULT_TOKEN_CACHE.clear()  # every round starts as a fresh triggerer
    port = urlsplit(emu.url).port
    assert port is not None
    before = emu.control.stats()
    deadline = time.time() + 600
    with env_vars(AIRFLOW_CONN_TRUCONNECT_DEFAULT=emu.connection_json()), ConnectionSampler(port) as sampler:
        idle = sampler.count()  # the emulator control session's own connection, if any
        idle_ports = set(sampler.ports)
        with contextlib.nullcontext() if shared_pool else pool_per_client():
            cpu0, wall0 = time.process_time(), time.perf_counter()
            if trigger_cls is not None:
                done, loop_cpu = asyncio.run(_wait_all_with_triggers(trigger_cls, order_ids, poll, deadline))
            else:
                done, loop_cpu = asyncio.run(_wait_all_with_client(emu, order_ids, poll, deadline))
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        after_loop = sampler.count()
    after = emu.control.stats()
    samples = [max(0, n - idle) for n in sampler.samples] or [0]
    statuses: dict[str, int] = {}
    for _, payload in done:
        statuses[str(payload.get("status"))] = statuses.get(str(payload.get("status")), 0) + 1
    grants_during = {k: v - grants(before).get(k, 0) for k, v in grants(after).items()}
    return {
        "shared_pool": shared_pool,
        "done": done,
        "wall0": wall0,
        "wall": wall,
        "cpu": cpu,
        "loop_cpu": loop_cpu,
        "statuses": statuses,
        "polls": route_count(after, GET_ORDER) - route_count(before, GET_ORDER),
        "grants_during": {k: v for k, v in grants_during.items() if v},
        "grants_total": total_grants(after) - total_grants(before),
        "connections_peak": max(samples),
        "connections_median": statistics.median(samples),
        "connections_after_loop": max(0, after_loop - idle),
        "connections_opened": len(sampler.ports - idle_ports),
        "connection_samples": len(samples),
        "before": before,
        "after": after,
    }


def run(quick: bool) -> BenchResult:
    if quick:
        waits, poll, fulfilling, complete = 20, 0.5, 0.5, 1.5
    else:
        waits, poll, fulfilling, complete = 1000, 3.0, 8.0, 20.0
    trigger_cls, missing = _trigger_class()
    rounds: dict[bool, dict[str, Any]] = {}
    with emulator(order_fulfilling_after=fulfilling, order_complete_after=complete) as emu:
        for shared_pool in (True, False):
            order_ids, submit_round, resume_round = _create_orders(emu, waits)
            if shared_pool:  # the slot-time figures come from the first round
                submit, resume = submit_round, resume_round
            progress(f"triggerer: created {waits} orders (median submit {median(submit_round) * 1000:.1f} ms)")
            rounds[shared_pool] = _wait_round(emu, trigger_cls, order_ids, poll, shared_pool)
            r = rounds[shared_pool]
            progress(
                f"triggerer: {'shared pool' if shared_pool else 'pool per trigger'}: {r['grants_total']} grant(s), "
                f"peak {r['connections_peak']} connections, loop CPU {r['loop_cpu']:.1f} s over {r['wall']:.1f} s"
            )
    shared, own = rounds[True], rounds[False]
    done, wall0, wall, cpu, loop_cpu = (
        shared["done"],
        shared["wall0"],
        shared["wall"],
        shared["cpu"],
        shared["loop_cpu"],
    )
    before, after, statuses = shared["before"], shared["after"], shared["statuses"]

    waits_s = [t - wall0 for t, _ in done]
    polls, grants_during, grants_total = shared["polls"], shared["grants_during"], shared["grants_total"]
    rpm = polls / (wall / 60)
    submit_total = sum(submit)
    resume_each = median(resume)
    poke_slot_s = submit_total + sum(waits_s)
    deferrable_slot_s = submit_total + resume_each * waits
    # Illustrative only: a resumed task is a second task start (queue, process, DAG parse) that poke mode avoids.
    deferrable_with_start_s = deferrable_slot_s + ASSUMED_TASK_START_S * waits
    lifetimes = max(1, math.ceil(wall / TOKEN_LIFETIME_S))
    headline = [
        f"{waits} concurrent order waits in one event loop: {grants_total} token grant(s) over {wall:.0f} s "
        f"(goal ≤ 1 per {TOKEN_LIFETIME_S} s token lifetime), at most {shared['connections_peak']} open TCP "
        f"connections to the API with the shared pool (≥ {shared['connections_opened']} opened) vs "
        f"{own['connections_peak']:,} open at once (≥ {own['connections_opened']:,} opened) with a pool per trigger, "
        "loop CPU "
        f"{loop_cpu:.1f} s ({loop_cpu / wall * 100:.0f}% of one core; {own['loop_cpu']:.1f} s with a pool per "
        f"trigger), {polls:,} polls ({rpm:,.0f}/min); worker-slot time {deferrable_slot_s:,.0f} s "
        f"deferrable vs {poke_slot_s:,.0f} s in poke mode ({poke_slot_s / deferrable_with_start_s:,.1f}× less even "
        f"counting an assumed {ASSUMED_TASK_START_S:g} s extra task start per resume)."
    ]
    rows = [
        ["concurrent waits (one event loop)", f"{waits:,}"],
        ["waiter", "TruConnectOrderTrigger.run()" if trigger_cls else "AsyncTruConnectClient.get_order loop"],
        ["poll interval / order completes after", f"{poll:g} s / {complete:g} s (FULFILLING after {fulfilling:g} s)"],
        ["events", ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))],
        [
            "token grants during the waits",
            f"{grants_total} {grants_during or ''} over {fmt(wall, 0)} s = {lifetimes} token lifetime(s) "
            f"of {TOKEN_LIFETIME_S} s; with a pool per trigger: {own['grants_total']}",
        ],
        [
            "open TCP connections to the API, peak / median while waiting: shared pool",
            f"{shared['connections_peak']} / {shared['connections_median']:g} "
            f"(bound: the pool's max_connections = {POOL_MAX_CONNECTIONS}); at least {shared['connections_opened']:,} "
            f"opened in all; after the loop ended: {shared['connections_after_loop']}",
        ],
        [
            "same, a pool per trigger (before)",
            f"{own['connections_peak']:,} / {own['connections_median']:g}; at least {own['connections_opened']:,} "
            f"opened in all; after the loop ended: {own['connections_after_loop']}",
        ],
        [
            "CPU of the event loop's thread (s): shared pool / pool per trigger",
            f"{fmt(loop_cpu, 2)} ({loop_cpu / wall * 100:.0f}% of one core) / {fmt(own['loop_cpu'], 2)} "
            f"({own['loop_cpu'] / own['wall'] * 100:.0f}% over {fmt(own['wall'], 1)} s)",
        ],
        ["GET /v2/orders/{id} polls", f"{polls:,} ({polls / waits:.1f} per wait)"],
        ["requests per minute", fmt(rpm, 0)],
        ["wall time (s)", fmt(wall, 1)],
        ["CPU time of the loop process, all threads (s)", f"{fmt(cpu, 2)} ({cpu / wall * 100:.0f}% of one core)"],
        [
            "loop CPU per poll (ms): shared pool / pool per trigger",
            f"{fmt(loop_cpu / max(polls, 1) * 1000, 2)} / {fmt(own['loop_cpu'] / max(own['polls'], 1) * 1000, 2)}",
        ],
        ["median / max wait per order (s)", f"{fmt(median(waits_s), 1)} / {fmt(max(waits_s), 1)}"],
        ["worker-slot seconds, poke mode", fmt(poke_slot_s, 0)],
        ["worker-slot seconds, deferrable", fmt(deferrable_slot_s, 1)],
        ["slot-time ratio poke / deferrable", f"{poke_slot_s / deferrable_slot_s:,.0f}×"],
        [
            f"deferrable + one extra task start per wait (assumed {ASSUMED_TASK_START_S:g} s each, illustrative)",
            f"{fmt(deferrable_with_start_s, 0)} slot-s ({poke_slot_s / deferrable_with_start_s:,.1f}× less than poke)",
        ],
    ]
    return BenchResult(
        key="triggerer",
        title=f"4. Triggerer scale ({waits} concurrent deferred order waits)",
        method=[
            f"{waits} ACTIVATION orders created first with the sync hook (sequentially; each `create_order` timed as "
            f"the 'submit' cost). Emulator: orders FULFILLING after {fulfilling:g} s, COMPLETED after {complete:g} s "
            "of emulator (= real) time, no rate limit.",
            (
                f"Then {waits} `TruConnectOrderTrigger(order_id, 'truconnect_default', poll_interval={poll:g}, "
                "end_time=...)` `.run()` generators run concurrently in one `asyncio` event loop, as in a triggerer; "
                "the connection comes from `AIRFLOW_CONN_TRUCONNECT_DEFAULT` and the process-wide token cache starts "
                "empty. Each trigger builds its own hook and `AsyncTruConnectClient`; their connection pool is the "
                "event loop's shared one (`TruConnectHook.get_async_client`). A second round on fresh orders "
                "restores the behaviour before the shared pool (every client opens and closes its own httpx pool) "
                "for comparison."
                if trigger_cls
                else f"The trigger module could not be imported ({missing}); the waits are `AsyncTruConnectClient."
                "get_order` polling loops on one shared client instead."
            ),
            "Open TCP connections to the API are counted by `psutil` on this process's side (established, remote "
            "port = the emulator's) every 50 ms from a separate thread, minus the emulator control session's own; "
            "peak and median over the waits, and the distinct local ports seen (a lower bound of the connections "
            "opened, each a TCP handshake, and a TLS one against the real API). The emulator (uvicorn) closes a "
            "connection idle for 5 s; a server that keeps idle connections longer would see up to one open "
            "connection per waiting trigger with a pool per trigger.",
            "Loop CPU is `time.thread_time()` of the event loop's thread across the waits; the process figure "
            "(`time.process_time()`) also counts the sampler and worker threads. The emulator runs in another "
            "process.",
            "Worker-slot seconds are computed, not measured on a scheduler: poke mode holds one slot per wait from "
            "submit until the order is seen terminal (submit + observed wait); deferrable mode holds a slot only "
            "for the submit and the resume (the resume counted as one `get_order` call, median "
            f"{resume_each * 1000:.1f} ms). Airflow's own per-task start-up (DAG parse, process start) is not "
            "included: deferrable pays it twice per wait (start + resume) and poke once, so add 1 × "
            "(task start-up) per wait to the deferrable figure for a fuller picture.",
        ],
        columns=["measure", "value"],
        rows=rows,
        headline=headline,
        raw={
            "waits": waits,
            "poll_interval": poll,
            "order_complete_after": complete,
            "trigger": bool(trigger_cls),
            "trigger_import_error": missing,
            "statuses": statuses,
            "wait_seconds": waits_s,
            "submit_seconds": submit,
            "resume_seconds": resume,
            "polls": polls,
            "requests_per_minute": rpm,
            "cpu_s": cpu,
            "wall_s": wall,
            "grants_during": grants_during,
            "poke_slot_s": poke_slot_s,
            "deferrable_slot_s": deferrable_slot_s,
            "deferrable_with_assumed_task_start_s": deferrable_with_start_s,
            "assumed_task_start_s": ASSUMED_TASK_START_S,
            "polls_per_wait": polls / waits,
            "loop_cpu_s": loop_cpu,
            "connections": {
                "shared_pool": {
                    k: shared[k]
                    for k in ("connections_peak", "connections_median", "connections_opened", "connections_after_loop")
                },
                "pool_per_trigger": {
                    k: own[k]
                    for k in (
                        "connections_peak",
                        "connections_median",
                        "connections_opened",
                        "connections_after_loop",
                        "loop_cpu",
                        "wall",
                    )
                },
            },
            "pool_per_trigger": {k: own[k] for k in ("grants_total", "grants_during", "polls", "statuses")},
            "emulator_stats_before": slim_stats(before),
            "emulator_stats_after": slim_stats(after),
        },
    )
